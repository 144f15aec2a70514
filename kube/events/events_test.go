package events

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	clienttesting "k8s.io/client-go/testing"

	"github.com/rds-csi/rds-csi/kube/events/eventstest"
)

// waitLimit only bounds how long a broken test hangs; nothing is asserted
// about timing.
const waitLimit = 10 * time.Second

func newTestRecorder(t *testing.T, api API, timeout time.Duration) *Recorder {
	t.Helper()
	r := newRecorder(api, "rds-csi-agent", "node-1", prometheus.NewRegistry(), timeout)
	t.Cleanup(r.Shutdown)
	return r
}

// clientsetAPI puts client-go's fake clientset behind API, so that the
// recorder's tests see the fake's object tracker and its event
// aggregation; restAPI, which production uses, is tested against HTTP.
type clientsetAPI struct{ c kubernetes.Interface }

func (a clientsetAPI) GetPVC(ctx context.Context, namespace, name string) (*corev1.PersistentVolumeClaim, error) {
	return a.c.CoreV1().PersistentVolumeClaims(namespace).Get(ctx, name, metav1.GetOptions{ResourceVersion: "0"})
}

func (a clientsetAPI) CreateEvent(ctx context.Context, e *corev1.Event) (*corev1.Event, error) {
	return a.c.CoreV1().Events("").CreateWithEventNamespaceWithContext(ctx, e)
}

func (a clientsetAPI) UpdateEvent(ctx context.Context, e *corev1.Event) (*corev1.Event, error) {
	return a.c.CoreV1().Events("").UpdateWithEventNamespaceWithContext(ctx, e)
}

func (a clientsetAPI) PatchEvent(ctx context.Context, e *corev1.Event, patch []byte) (*corev1.Event, error) {
	return a.c.CoreV1().Events("").PatchWithEventNamespaceWithContext(ctx, e, patch)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitEvents waits until namespace holds n events, and returns them.
func waitEvents(t *testing.T, client *fake.Clientset, namespace string, n int) []corev1.Event {
	t.Helper()
	var got []corev1.Event
	waitFor(t, "events in "+namespace, func() bool {
		got = eventstest.EventsIn(t, client, namespace)
		return len(got) >= n
	})
	return got
}

func dropped(r *Recorder, reason string) float64 {
	return testutil.ToFloat64(r.dropped.WithLabelValues(reason))
}

func TestAnEventReachesThePVCWithItsUIDTypeAndReason(t *testing.T) {
	client := fake.NewClientset(eventstest.Claim("team-a", "data", "uid-1"))
	r := newTestRecorder(t, clientsetAPI{client}, time.Minute)
	r.PVC("team-a", "data", corev1.EventTypeWarning, "VolumeLost", "volume pvc-1 lost its controller")

	ev := waitEvents(t, client, "team-a", 1)[0]
	want := corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: "team-a", Name: "data", UID: "uid-1"}
	if ev.InvolvedObject != want {
		t.Errorf("involvedObject %+v, want %+v", ev.InvolvedObject, want)
	}
	if ev.Type != corev1.EventTypeWarning || ev.Reason != "VolumeLost" || ev.Message != "volume pvc-1 lost its controller" {
		t.Errorf("event %s %s %q", ev.Type, ev.Reason, ev.Message)
	}
	if ev.Source.Component != "rds-csi-agent" || ev.Source.Host != "node-1" {
		t.Errorf("source %+v, want rds-csi-agent on node-1", ev.Source)
	}
	for _, reason := range []string{DropNoPVC, DropPVCUnreadable, DropQueueFull} {
		if n := dropped(r, reason); n != 0 {
			t.Errorf("dropped{%s} = %v after a recorded event", reason, n)
		}
	}
}

func TestAnEventOnAPVCThatCannotBeReadIsDroppedAndCounted(t *testing.T) {
	client := fake.NewClientset(eventstest.Claim("team-a", "data", "uid-1"))
	r := newTestRecorder(t, clientsetAPI{client}, time.Minute)
	r.PVC("team-a", "deleted", corev1.EventTypeWarning, "VolumeLost", "first")
	r.PVC("team-a", "data", corev1.EventTypeNormal, "VolumeHealed", "second")

	// Events go through the worker, the broadcaster and the sink in order:
	// once the second is in the API, the first would be too.
	got := waitEvents(t, client, "team-a", 1)
	if len(got) != 1 || got[0].InvolvedObject.Name != "data" {
		t.Fatalf("events %+v, want only the one on the readable PVC", got)
	}
	if n := dropped(r, DropPVCUnreadable); n != 1 {
		t.Errorf("dropped{pvc_unreadable} = %v, want 1", n)
	}
}

func TestAnEventWithoutAPVCIsDroppedWithoutCallingTheAPI(t *testing.T) {
	client := fake.NewClientset()
	r := newTestRecorder(t, clientsetAPI{client}, time.Minute)
	r.PVC("", "", corev1.EventTypeWarning, "VolumeLost", "no claim known")
	r.PVC("team-a", "", corev1.EventTypeWarning, "VolumeLost", "half a claim")
	if n := dropped(r, DropNoPVC); n != 2 {
		t.Errorf("dropped{no_pvc} = %v, want 2", n)
	}
	if a := client.Actions(); len(a) != 0 {
		t.Errorf("API called for an event without a PVC: %v", a)
	}
}

func TestRecordingNeverWaitsForAHungAPI(t *testing.T) {
	client := fake.NewClientset(eventstest.Claim("team-a", "data", "uid-1"))
	entered, release := make(chan struct{}, 1), make(chan struct{})
	client.PrependReactor("get", "persistentvolumeclaims", func(clienttesting.Action) (bool, runtime.Object, error) {
		select {
		case entered <- struct{}{}:
		default: // only the first call is waited for
		}
		<-release
		return true, nil, errors.New("released")
	})
	r := newTestRecorder(t, clientsetAPI{client}, time.Minute)
	t.Cleanup(func() { close(release) }) // before the recorder's Shutdown

	r.PVC("team-a", "data", corev1.EventTypeWarning, "VolumeLost", "taken by the worker")
	<-entered
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range queueSize + 10 {
			r.PVC("team-a", "data", corev1.EventTypeWarning, "VolumeLost", "queued or dropped")
		}
	}()
	select {
	case <-done:
	case <-time.After(waitLimit):
		t.Fatal("PVC blocked while the API hung")
	}
	if n := dropped(r, DropQueueFull); n != 10 {
		t.Errorf("dropped{queue_full} = %v, want the 10 that did not fit", n)
	}
}

// hungAPI is an API server that never answers, behind the REST API that
// production uses; it reports each request.
func hungAPI(t *testing.T) (API, <-chan string) {
	t.Helper()
	requests := make(chan string, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		requests <- req.URL.Path
		<-req.Context().Done()
	}))
	t.Cleanup(srv.Close)
	api, err := NewAPI(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	return api, requests
}

func TestAPVCReadIsBoundedByItsDeadline(t *testing.T) {
	api, requests := hungAPI(t)
	r := newTestRecorder(t, api, 100*time.Millisecond)
	r.PVC("team-a", "data", corev1.EventTypeWarning, "VolumeLost", "x")
	if path := <-requests; path != "/api/v1/namespaces/team-a/persistentvolumeclaims/data" {
		t.Errorf("request for %s", path)
	}
	waitFor(t, "the PVC read to give up", func() bool { return dropped(r, DropPVCUnreadable) == 1 })
}

func TestShutdownReturnsWhileACallHangs(t *testing.T) {
	api, requests := hungAPI(t)
	r := newRecorder(api, "rds-csi-agent", "node-1", prometheus.NewRegistry(), time.Hour)
	r.PVC("team-a", "data", corev1.EventTypeWarning, "VolumeLost", "x")
	<-requests
	done := make(chan struct{})
	go func() {
		r.Shutdown()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(waitLimit):
		t.Fatal("Shutdown waited for a hung API call")
	}
	// Recording after Shutdown is harmless.
	r.PVC("team-a", "data", corev1.EventTypeWarning, "VolumeLost", "late")
}

func TestLongMessagesAreCutToTheAPILimitOnACharacterBoundary(t *testing.T) {
	for _, msg := range []string{strings.Repeat("a", 2000), strings.Repeat("é", 700), strings.Repeat("x", maxMessageBytes)} {
		got := truncate(msg, maxMessageBytes)
		if len(got) > maxMessageBytes || !utf8.ValidString(got) {
			t.Errorf("truncate of %d bytes gave %d bytes, valid UTF-8 %v", len(msg), len(got), utf8.ValidString(got))
		}
		if len(msg) <= maxMessageBytes && got != msg {
			t.Errorf("a message within the limit was changed")
		}
		if len(msg) > maxMessageBytes && !strings.HasSuffix(got, "…") {
			t.Errorf("a cut message does not say so: ...%q", got[len(got)-8:])
		}
	}
}
