package kube

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestWithoutAClusterOrAKubeconfigThereIsNoAPI(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	if _, err := NewClientset("", "rds-csi-agent"); !errors.Is(err, ErrNotConfigured) {
		t.Fatalf("error %v, want ErrNotConfigured", err)
	}
}

func TestAKubeconfigNamesTheAPIServer(t *testing.T) {
	type request struct{ path, userAgent string }
	seen := make(chan request, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- request{r.URL.Path, r.UserAgent()}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"apiVersion":"v1","kind":"PersistentVolumeClaim","metadata":{"namespace":"team-a","name":"data","uid":"uid-1"}}`))
	}))
	t.Cleanup(srv.Close)
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	cfg := `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "` + srv.URL + `"}}]
users: [{name: u, user: {token: not-a-secret}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`
	if err := os.WriteFile(kubeconfig, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	client, err := NewClientset(kubeconfig, "rds-csi-agent")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	pvc, err := client.CoreV1().PersistentVolumeClaims("team-a").Get(ctx, "data", metav1.GetOptions{})
	if err != nil || pvc.UID != "uid-1" {
		t.Fatalf("PVC %+v, %v", pvc, err)
	}
	if got := <-seen; got.path != "/api/v1/namespaces/team-a/persistentvolumeclaims/data" || got.userAgent != "rds-csi-agent" {
		t.Errorf("request %+v", got)
	}
}

func TestAnUnreadableKubeconfigIsAnError(t *testing.T) {
	_, err := NewClientset(filepath.Join(t.TempDir(), "missing"), "rds-csi-agent")
	if err == nil || errors.Is(err, ErrNotConfigured) {
		t.Fatalf("error %v, want a configuration error", err)
	}
}
