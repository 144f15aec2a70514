package agent_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/rds-csi/rds-csi/agent"
	"github.com/rds-csi/rds-csi/agent/heal"
	"github.com/rds-csi/rds-csi/volume"
)

type pvcEvent struct{ namespace, name, eventType, reason, message string }

type fakeEvents struct{ got []pvcEvent }

func (f *fakeEvents) PVC(namespace, name, eventType, reason, message string) {
	f.got = append(f.got, pvcEvent{namespace, name, eventType, reason, message})
}

func TestHealthTransitionsBecomeEventsOnThePVC(t *testing.T) {
	vol := heal.Volume{VolumeID: "pvc-1", NQN: prefix + "pvc-1", NSID: 1, PVCNamespace: "team-a", PVCName: "data"}
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	transition := func(from, to heal.State, cause string, lostAt time.Time, stuck bool) heal.Transition {
		return heal.Transition{Volume: vol, From: from, LostAt: lostAt, Stuck: stuck,
			Health: heal.Health{VolumeID: vol.VolumeID, NQN: vol.NQN, State: to, Since: at, LastCause: cause, Controller: "nvme3", Device: "259:4"}}
	}
	tests := []struct {
		name       string
		t          heal.Transition
		wantType   string // "" for no event
		wantReason string
		mentions   []string
	}{
		{"a volume found live at stage", transition(heal.StateUnknown, heal.StateLive, "", time.Time{}, false), "", "", nil},
		{"a kernel reconnect in progress", transition(heal.StateLive, heal.StateReconnecting, "controller nvme3 connecting", time.Time{}, false), "", "", nil},
		{"the kernel reconnecting by itself", transition(heal.StateReconnecting, heal.StateLive, "", time.Time{}, false), "", "", nil},
		{"a repair starting", transition(heal.StateLost, heal.StateHealing, "", at, false), "", "", nil},
		{"the controller deleted", transition(heal.StateLive, heal.StateLost, "controller deleted", at, false),
			corev1.EventTypeWarning, agent.ReasonVolumeLost, []string{"pvc-1", "node-1", "controller deleted", "reconnects"}},
		{"a repair bringing it back", transition(heal.StateHealing, heal.StateLive, "", at.Add(-2500*time.Millisecond), false),
			corev1.EventTypeNormal, agent.ReasonVolumeHealed, []string{"pvc-1", "node-1", "2.5s", "nvme3", "259:4"}},
		{"the kernel bringing back a volume whose repair failed", transition(heal.StateFailed, heal.StateLive, "", at.Add(-time.Minute), false),
			corev1.EventTypeNormal, agent.ReasonVolumeHealed, []string{"1m0s"}},
		{"a failed repair", transition(heal.StateHealing, heal.StateFailed, "repair failed: no route to host", at, false),
			corev1.EventTypeWarning, agent.ReasonVolumeHealFailed, []string{"pvc-1", "node-1", "no route to host", "restart the pods"}},
		{"a filesystem left on the old device", transition(heal.StateHealing, heal.StateFailed, "repair failed: reconnected, but consumers still hold the volume's old device", at, true),
			corev1.EventTypeWarning, agent.ReasonVolumeConsumersStuck, []string{"pvc-1", "node-1", "old device", "staged again", "restart the pods"}},
		{"another disk under the volume's NQN", func() heal.Transition {
			tr := transition(heal.StateHealing, heal.StateFailed, "repair failed: staged as wwid=uuid.a, now wwid=uuid.b", at, false)
			tr.OtherDisk = true
			return tr
		}(), corev1.EventTypeWarning, agent.ReasonVolumeIdentityChanged, []string{"pvc-1", "node-1", "uuid.a", "uuid.b", "another disk", "fails"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &fakeEvents{}
			agent.HealthEvents{Events: rec, NodeID: "node-1"}.Notify(tc.t)
			if tc.wantType == "" {
				if len(rec.got) != 0 {
					t.Fatalf("events %+v, want none", rec.got)
				}
				return
			}
			if len(rec.got) != 1 {
				t.Fatalf("events %+v, want one", rec.got)
			}
			e := rec.got[0]
			if e.namespace != "team-a" || e.name != "data" || e.eventType != tc.wantType || e.reason != tc.wantReason {
				t.Errorf("event on %s/%s %s %s, want on team-a/data %s %s", e.namespace, e.name, e.eventType, e.reason, tc.wantType, tc.wantReason)
			}
			for _, m := range tc.mentions {
				if !strings.Contains(e.message, m) {
					t.Errorf("message %q does not mention %q", e.message, m)
				}
			}
		})
	}
}

// The PVC comes from the volume context at stage, is kept in the record,
// and reaches the health model at stage and again after a restart.
func TestTheVolumesPVCIsTrackedAtStageAndAfterARestart(t *testing.T) {
	f := newFixture(t)
	kubelet := filepath.Join(f.dir, "kubelet-root")
	staging := filepath.Join(kubelet, "plugins/kubernetes.io/csi/volumeDevices/staging/pv-events")
	if err := os.MkdirAll(staging, 0o750); err != nil {
		t.Fatal(err)
	}
	id, attrs := f.volume("pvc-events", 64*mib, nil, true)
	attrs[volume.KeyPVCNamespace], attrs[volume.KeyPVCName] = "team-a", "data"
	staged := &fakeTracker{tracked: map[string]heal.Volume{}, health: map[string]heal.Health{}}
	f.node.SetTracker(staged)
	if err := f.stage(id, staging, blockCap(), attrs); err != nil {
		t.Fatal(err)
	}
	restarted := f.newNode(prefix)
	resumed := &fakeTracker{tracked: map[string]heal.Volume{}, health: map[string]heal.Health{}}
	restarted.SetTracker(resumed)
	if _, err := restarted.Resume(kubelet); err != nil {
		t.Fatal(err)
	}
	for name, tr := range map[string]*fakeTracker{"at stage": staged, "after a restart": resumed} {
		v := tr.tracked[id]
		if v.PVCNamespace != "team-a" || v.PVCName != "data" {
			t.Errorf("%s: tracked %+v, want the PVC team-a/data", name, v)
		}
	}
	if staged.tracked[id] != resumed.tracked[id] {
		t.Errorf("tracked at stage %+v, after a restart %+v", staged.tracked[id], resumed.tracked[id])
	}
}
