package events

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"

	"github.com/rds-csi/rds-csi/kube/events/eventstest"
)

func TestWithoutAClusterOrAKubeconfigThereIsNoAPI(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	if _, err := LoadConfig("", "rds-csi-agent"); !errors.Is(err, ErrNotConfigured) {
		t.Fatalf("error %v, want ErrNotConfigured", err)
	}
}

func TestAnUnreadableKubeconfigIsAnError(t *testing.T) {
	_, err := LoadConfig(filepath.Join(t.TempDir(), "missing"), "rds-csi-agent")
	if err == nil || errors.Is(err, ErrNotConfigured) {
		t.Fatalf("error %v, want a configuration error", err)
	}
}

// restRecorder is a recorder on the REST API that production uses, talking
// HTTP to a fake API server through a kubeconfig file.
func restRecorder(t *testing.T, srv *eventstest.Server) *Recorder {
	t.Helper()
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	cfg := `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "` + srv.Config().Host + `"}}]
users: [{name: u, user: {token: not-a-secret}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`
	if err := os.WriteFile(kubeconfig, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	rc, err := LoadConfig(kubeconfig, "rds-csi-agent/test")
	if err != nil {
		t.Fatal(err)
	}
	api, err := NewAPI(rc)
	if err != nil {
		t.Fatal(err)
	}
	r := newRecorder(api, "rds-csi-agent", "node-1", prometheus.NewRegistry(), time.Minute)
	t.Cleanup(r.Shutdown)
	return r
}

func TestTheRESTAPIRecordsAnEventAndItsRepeatOnThePVC(t *testing.T) {
	srv := eventstest.NewServer(t, *eventstest.Claim("team-a", "data", "uid-1"))
	r := restRecorder(t, srv)
	r.PVC("team-a", "data", corev1.EventTypeWarning, "VolumeLost", "lost")
	r.PVC("team-a", "data", corev1.EventTypeWarning, "VolumeLost", "lost")
	waitFor(t, "the repeat to be counted", func() bool {
		evs := srv.Events("team-a")
		return len(evs) == 1 && evs[0].Count == 2
	})
	ev := srv.Events("team-a")[0]
	want := corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: "team-a", Name: "data", UID: "uid-1"}
	if ev.InvolvedObject != want || ev.Reason != "VolumeLost" || ev.Type != corev1.EventTypeWarning {
		t.Errorf("event on %+v: %s %s", ev.InvolvedObject, ev.Type, ev.Reason)
	}
	calls := srv.Calls()
	if len(calls) == 0 || calls[0].Verb != "get" || calls[0].Query != "resourceVersion=0" || calls[0].UserAgent != "rds-csi-agent/test" {
		t.Errorf("first call %+v, want a get of the PVC from the cache, as rds-csi-agent/test", calls[0])
	}
}

func TestTheRESTAPIReportsAMissingPVCAsAnError(t *testing.T) {
	srv := eventstest.NewServer(t)
	api, err := NewAPI(srv.Config())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if _, err := api.GetPVC(ctx, "team-a", "gone"); err == nil {
		t.Fatal("reading a missing PVC succeeded")
	}
}
