package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// The agent must start on a node without Kubernetes credentials (bare
// metal under systemd): Events are then off, nothing fails.
func TestEventsNeedAnAPIAndTheirAbsenceStopsNothing(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	cfg := "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: \"https://127.0.0.1:1\"}}]\n" +
		"users: [{name: u, user: {}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n"
	if err := os.WriteFile(kubeconfig, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		args       []string
		wantEvents bool
	}{
		{"no kubeconfig and not in a cluster", nil, false},
		{"a kubeconfig that cannot be read", []string{"--kubeconfig=" + filepath.Join(t.TempDir(), "missing")}, false},
		{"events turned off", []string{"--kubeconfig=" + kubeconfig, "--events=false"}, false},
		{"a kubeconfig", []string{"--kubeconfig=" + kubeconfig}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := parseFlags(append([]string{"--node-id=node-1"}, tc.args...))
			if err != nil {
				t.Fatal(err)
			}
			notifier, stop := startEvents(f, prometheus.NewRegistry())
			defer stop()
			if (notifier != nil) != tc.wantEvents {
				t.Fatalf("notifier %v, want events %v", notifier, tc.wantEvents)
			}
		})
	}
}

// TestTheAgentDoesNotLinkTheGeneratedClientset guards the footprint: client-go's
// generated clientset registers every API group at start and costs the
// agent about 9 MiB of resident memory. The agent needs PVC reads and Event
// writes only, which kube/events does over the REST layer.
func TestTheAgentDoesNotLinkTheGeneratedClientset(t *testing.T) {
	out, err := exec.CommandContext(t.Context(), "go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if !slices.Contains(deps, "k8s.io/client-go/rest") {
		t.Fatalf("the dependency list lacks k8s.io/client-go/rest, which kube/events uses: is it complete?\n%s", out)
	}
	for _, d := range deps {
		if d == "k8s.io/client-go/kubernetes" || strings.HasPrefix(d, "k8s.io/client-go/kubernetes/") || strings.HasPrefix(d, "k8s.io/client-go/informers") {
			t.Errorf("the agent links %s", d)
		}
	}
}
