package kube

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/rds-csi/rds-csi/kube/events"
	"github.com/rds-csi/rds-csi/kube/events/eventstest"
	"github.com/rds-csi/rds-csi/volume"
)

const testDriver = "rds.csi.dev"

// waitLimit only bounds how long a broken test hangs; nothing is asserted
// about timing.
const waitLimit = 10 * time.Second

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

// pvcCalls keeps the PVC events asked for.
type pvcCalls struct {
	mu    sync.Mutex
	calls []string
}

func (c *pvcCalls) PVC(namespace, name, eventType, reason, message string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, fmt.Sprintf("%s/%s %s %s", namespace, name, eventType, reason))
}

func pvOf(name, handle, driver, claimNS, claimName string) *corev1.PersistentVolume {
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeSpec{PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
			Driver: driver, VolumeHandle: handle, VolumeAttributes: map[string]string{"migrationTimeoutSeconds": "90"},
		}}},
	}
	if claimName != "" {
		pv.Spec.ClaimRef = &corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: claimNS, Name: claimName}
	}
	return pv
}

func vaOf(pv, node, attacher string, attached bool, created time.Time) *storagev1.VolumeAttachment {
	return &storagev1.VolumeAttachment{
		ObjectMeta: metav1.ObjectMeta{Name: "va-" + pv + "-" + node, CreationTimestamp: metav1.NewTime(created)},
		Spec:       storagev1.VolumeAttachmentSpec{Attacher: attacher, NodeName: node, Source: storagev1.VolumeAttachmentSource{PersistentVolumeName: &pv}},
		Status:     storagev1.VolumeAttachmentStatus{Attached: attached},
	}
}

func node(name string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

func startWatcher(t *testing.T, client *fake.Clientset) *Watcher {
	t.Helper()
	r := events.NewRecorder(EventsAPI(client), "rds-csi-controller", "test", prometheus.NewRegistry())
	t.Cleanup(r.Shutdown)
	w, err := NewWatcher(client, testDriver, r)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(t.Context(), waitLimit); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	return w
}

type seenAttachment struct {
	volume, node string
	since        time.Time
	timeout      string
}

func TestTheWatcherSeesOnlyThisDriversAttachedVolumeAttachments(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 1, 0, 0, 0, time.UTC)
	client := fake.NewClientset(
		pvOf("pv-1", "vol-1", testDriver, "team-a", "data"),
		pvOf("pv-other", "vol-x", "other.csi.example", "", ""),
		vaOf("pv-1", "node-1", testDriver, true, t0),
		vaOf("pv-1", "node-2", testDriver, false, t0.Add(time.Minute)), // not attached yet
		vaOf("pv-other", "node-1", "other.csi.example", true, t0),
		node("node-1"),
	)
	w := startWatcher(t, client)
	var got []seenAttachment
	w.EachAttached(func(id string, a volume.Attachment) {
		got = append(got, seenAttachment{id, a.Node, a.Created, a.VolumeContext["migrationTimeoutSeconds"]})
	})
	want := []seenAttachment{{"vol-1", "node-1", t0, "90"}}
	if !slices.Equal(got, want) {
		t.Errorf("attached %+v, want %+v", got, want)
	}
	if ok, _ := w.Attachment("vol-1", "node-2"); !ok {
		t.Error("the VolumeAttachment of vol-1 on node-2 is not seen")
	}
	if ok, _ := w.Attachment("vol-1", "node-3"); ok {
		t.Error("an attachment to node-3 is seen where none exists")
	}
	if live, err := w.LiveAttachments("vol-x"); err != nil || len(live) != 0 {
		t.Errorf("another driver's attachment is seen: %+v, %v", live, err)
	}
	// No PV of this driver has the handle: nobody can tell whether it is
	// attached, and that is never taken as "not attached".
	if ok, _ := w.Attachment("vol-x", "node-1"); !ok {
		t.Error("an attachment that cannot be told was reported absent")
	}
	if !w.NodeExists("node-1") || w.NodeExists("node-2") {
		t.Error("NodeExists disagrees with the cluster's Nodes")
	}
}

func TestADeletedVolumeAttachmentIsSeenAsBeingDeleted(t *testing.T) {
	deleting := metav1.NewTime(time.Date(2026, 11, 26, 1, 2, 3, 0, time.UTC))
	va := vaOf("pv-1", "node-1", testDriver, true, time.Time{})
	va.DeletionTimestamp = &deleting
	va.Finalizers = []string{"external-attacher/rds-csi-dev"}
	w := startWatcher(t, fake.NewClientset(pvOf("pv-1", "vol-1", testDriver, "", ""), va))
	ok, since := w.Attachment("vol-1", "node-1")
	if !ok || !since.Equal(deleting.Time) {
		t.Errorf("Attachment = %v, %v; want being deleted since %v", ok, since, deleting.Time)
	}
}

func TestTheAttachedNodesAreRecordedOnThePVAndCleared(t *testing.T) {
	client := fake.NewClientset(pvOf("pv-1", "vol-1", testDriver, "team-a", "data"))
	w := startWatcher(t, client)
	ctx := context.Background()
	annotation := func() (string, bool) {
		pv, err := client.CoreV1().PersistentVolumes().Get(ctx, "pv-1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		v, ok := pv.Annotations[AttachedNodesAnnotation]
		return v, ok
	}
	if err := w.Annotate(ctx, "vol-1", []string{"node-a", "node-b"}); err != nil {
		t.Fatal(err)
	}
	if v, ok := annotation(); !ok || v != "node-a,node-b" {
		t.Fatalf("annotation %q (%v), want node-a,node-b", v, ok)
	}
	waitFor(t, "the informer to see the annotation", func() bool {
		pv, _ := w.pv("vol-1")
		return pv != nil && pv.Annotations[AttachedNodesAnnotation] == "node-a,node-b"
	})
	if err := w.Annotate(ctx, "vol-1", nil); err != nil {
		t.Fatal(err)
	}
	if v, ok := annotation(); ok {
		t.Fatalf("annotation %q left after the last detach", v)
	}
	if err := w.Annotate(ctx, "vol-unknown", []string{"node-a"}); err == nil {
		t.Error("annotating a volume without a PV succeeded")
	}
}

func TestAnEventReachesThePVCThroughThePVsClaimRef(t *testing.T) {
	client := fake.NewClientset(pvOf("pv-1", "vol-1", testDriver, "team-a", "data"), eventstest.Claim("team-a", "data", "uid-1"))
	w := startWatcher(t, client)
	w.Event("vol-1", corev1.EventTypeNormal, "VolumeAttached", "Attached to node node-1")
	var evs []corev1.Event
	waitFor(t, "the event", func() bool { evs = eventstest.EventsIn(t, client, "team-a"); return len(evs) == 1 })
	if e := evs[0]; e.InvolvedObject.Name != "data" || e.InvolvedObject.UID != "uid-1" || e.Reason != "VolumeAttached" {
		t.Errorf("event %+v", e)
	}
}

func TestAnEventOfAVolumeWithoutAClaimGoesToNoPVC(t *testing.T) {
	client := fake.NewClientset(pvOf("pv-1", "vol-1", testDriver, "", ""))
	calls := &pvcCalls{}
	w, err := NewWatcher(client, testDriver, calls)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(t.Context(), waitLimit); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	w.Event("vol-1", corev1.EventTypeNormal, "VolumeAttached", "x")
	w.Event("vol-unknown", corev1.EventTypeNormal, "VolumeAttached", "x")
	want := []string{"/ Normal VolumeAttached", "/ Normal VolumeAttached"}
	if !slices.Equal(calls.calls, want) {
		t.Errorf("recorder asked for %q, want %q (no claim: the recorder counts them as no_pvc)", calls.calls, want)
	}
}

func TestADeletedNodeIsReported(t *testing.T) {
	client := fake.NewClientset(node("node-1"), node("node-2"))
	w := startWatcher(t, client)
	var mu sync.Mutex
	var gone []string
	if err := w.OnNodeDeleted(func(n string) { mu.Lock(); gone = append(gone, n); mu.Unlock() }); err != nil {
		t.Fatal(err)
	}
	if err := client.CoreV1().Nodes().Delete(context.Background(), "node-2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "node-2 reported deleted", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Equal(gone, []string{"node-2"})
	})
	waitFor(t, "node-2 gone from the cache", func() bool { return !w.NodeExists("node-2") })
}

// Two static PVs with one volume handle: the VolumeAttachments of both are
// the volume's.
func TestTheAttachmentsOfEveryPVOfAVolumeHandleAreSeen(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 1, 0, 0, 0, time.UTC)
	pvB := pvOf("pv-b", "vol-1", testDriver, "", "")
	pvB.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}
	deleting := vaOf("pv-b", "node-3", testDriver, true, t0)
	now := metav1.NewTime(t0.Add(time.Minute))
	deleting.DeletionTimestamp = &now
	deleting.Finalizers = []string{"external-attacher/rds-csi-dev"}
	client := fake.NewClientset(
		pvOf("pv-a", "vol-1", testDriver, "team-a", "data"), pvB,
		vaOf("pv-a", "node-1", testDriver, true, t0),
		vaOf("pv-b", "node-2", testDriver, false, t0.Add(time.Second)),
		deleting,
	)
	w := startWatcher(t, client)
	for _, n := range []string{"node-1", "node-2", "node-3"} {
		if ok, _ := w.Attachment("vol-1", n); !ok {
			t.Errorf("the attachment of vol-1 to %s is not seen", n)
		}
	}
	if ok, since := w.Attachment("vol-1", "node-3"); !ok || !since.Equal(now.Time) {
		t.Errorf("node-3's attachment: %v, being deleted since %v; want since %v", ok, since, now.Time)
	}
	if ok, _ := w.Attachment("vol-1", "node-4"); ok {
		t.Error("an attachment to node-4 is seen where none exists")
	}
	live, err := w.LiveAttachments("vol-1")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range live {
		got = append(got, fmt.Sprintf("%s %s attached=%v multi=%v", a.Node, a.Name, a.Attached, a.MultiWriter))
	}
	slices.Sort(got)
	want := []string{"node-1 va-pv-a-node-1 attached=true multi=false", "node-2 va-pv-b-node-2 attached=false multi=true"}
	if !slices.Equal(got, want) {
		t.Errorf("live attachments %q, want %q", got, want)
	}
}

// The annotation is written even when the informer's cache does not show
// the previous write yet: an attach then a quick detach must not leave the
// PV saying it is attached.
func TestTheAnnotationIsClearedEvenWhenTheCacheIsBehind(t *testing.T) {
	client := fake.NewClientset(pvOf("pv-1", "vol-1", testDriver, "", ""))
	// The PV informer lists once, and then hears of no change.
	client.PrependWatchReactor("persistentvolumes", func(k8stesting.Action) (bool, watch.Interface, error) {
		return true, watch.NewFake(), nil
	})
	w := startWatcher(t, client)
	ctx := context.Background()
	if err := w.Annotate(ctx, "vol-1", []string{"node-1"}); err != nil {
		t.Fatal(err)
	}
	if err := w.Annotate(ctx, "vol-1", nil); err != nil {
		t.Fatal(err)
	}
	pv, err := client.CoreV1().PersistentVolumes().Get(ctx, "pv-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := pv.Annotations[AttachedNodesAnnotation]; ok {
		t.Errorf("the PV still says it is attached to %q", v)
	}
}
