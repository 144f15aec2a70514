package k8s

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rds-csi/rds-csi/agent"
	"github.com/rds-csi/rds-csi/kube/events"
	"github.com/rds-csi/rds-csi/test/k8s/cluster"
)

const (
	agentUser = "system:serviceaccount:rds-csi:rds-csi-agent"
	agentRBAC = "../../deploy/kubernetes/rbac-agent.yaml"
)

// The agent's Events reach a PVC of a real API server through the REST
// client the agent uses, as the agent's ServiceAccount under
// deploy/kubernetes/rbac-agent.yaml alone: the event and its repeat (a
// patch), addressed to the claim by its UID.
func TestTheAgentRecordsEventsOnAPVCUnderItsOwnRBAC(t *testing.T) {
	if os.Getenv("RDS_CSI_K8S") == "skip" {
		t.Skip("SKIP: the control-plane tests are switched off by RDS_CSI_K8S=skip")
	}
	c := cluster.Start(t, cluster.Config{Binaries: bins, Users: map[string][]string{agentUser: nil}})
	ctx := t.Context()
	if err := applyRBAC(ctx, c.Admin, agentRBAC); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pvc, err := c.Admin.CoreV1().PersistentVolumeClaims(namespace).Create(ctx, cluster.PVC("data", "rds", "1Gi", false), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	cfg, err := events.LoadConfig(c.Kubeconfig(agentUser), "rds-csi-agent/test")
	if err != nil {
		t.Fatal(err)
	}
	api, err := events.NewAPI(cfg)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	rec := events.NewRecorder(api, "rds-csi-agent", "node-1", reg)
	t.Cleanup(rec.Shutdown)
	for range 2 {
		rec.PVC(namespace, "data", corev1.EventTypeWarning, agent.ReasonVolumeLost, "volume pvc-x lost its controller")
	}

	var got corev1.Event
	err = cluster.WaitFor(ctx, flowTimeout, "a VolumeLost event counted twice", func(ctx context.Context) (bool, string, error) {
		list, err := c.Admin.CoreV1().Events(namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		for _, e := range list.Items {
			if e.Reason == agent.ReasonVolumeLost && e.Count == 2 {
				got = e
				return true, "", nil
			}
		}
		return false, fmt.Sprintf("%d events", len(list.Items)), nil
	})
	if err != nil {
		t.Fatalf("no VolumeLost event counted twice on the PVC: %v", err)
	}
	want := corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: namespace, Name: "data", UID: pvc.UID}
	if got.InvolvedObject != want || got.Type != corev1.EventTypeWarning || got.Source.Component != "rds-csi-agent" || got.Source.Host != "node-1" {
		t.Errorf("event %+v from %+v on %+v, want on %+v", got.Reason, got.Source, got.InvolvedObject, want)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			if f.GetName() == "rds_kube_event_writes_total" && m.GetLabel()[0].GetValue() == "error" && m.GetCounter().GetValue() != 0 {
				t.Errorf("%v event writes failed", m.GetCounter().GetValue())
			}
		}
	}
	t.Logf("event %s on %s/%s (uid %s), count %d, after %v", got.Reason, namespace, "data", pvc.UID, got.Count, time.Since(got.FirstTimestamp.Time).Round(time.Millisecond))
}
