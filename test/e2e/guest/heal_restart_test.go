//go:build e2eguest

package guest

import (
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/rds-csi/rds-csi/agent/heal"
	"github.com/rds-csi/rds-csi/volume"
)

// TestHealAgentRestart: the agent restarts while the target is away.
// The new agent knows its volumes only from the records beside
// their kubelet staging paths; it must take the reconnecting controllers
// for its own rather than for orphans, never disconnect them, and see the
// volumes live again when the kernel reconnects. The workload's held
// writes complete.
func TestHealAgentRestart(t *testing.T) {
	h := newHealFixture(t, healOptions{})
	params := map[string]string{volume.KeyCtrlLossTmo: "-1"}
	blk := h.create("heal-restart-block", "block", params)
	fsv := h.create("heal-restart-ext4", "ext4", params)
	vols := []*vol{blk, fsv}
	for _, v := range vols {
		h.stageAndPublish(t, v)
		if portOf(t, v) != defaultPort {
			t.Fatalf("volume %s is on port %d; the outage cuts %d", v.id, portOf(t, v), defaultPort)
		}
	}
	first := h.agent
	ctrls := map[string][]string{}
	for _, v := range vols {
		ctrls[v.id] = names(controllersOf(t, v.nqn))
	}
	before, during, after := newPayload(t, 1<<20), newPayload(t, 1<<20), newPayload(t, 1<<20)
	before.writeAt(t, blk.target, 1<<20)
	before.writeFile(t, filepath.Join(fsv.target, "before"))

	must(t, "PortDown", h.exp.PortDown(defaultPort))
	for _, v := range vols {
		first.waitState(t, v, 30*time.Second, heal.StateReconnecting)
	}
	wb := startWrite(blk.target, 4<<20, during.data)
	wf := startWrite(filepath.Join(fsv.target, "during"), -1, during.data)
	wb.blocked(t, 2*time.Second)
	wf.blocked(t, time.Second)

	first.stop()
	second := h.startAgent()
	var resumed []string
	for _, sv := range second.resumed {
		resumed = append(resumed, sv.VolumeID)
	}
	slices.Sort(resumed)
	if want := []string{blk.id, fsv.id}; !slices.Equal(resumed, want) {
		t.Fatalf("the restarted agent resumed %v from the records under %s, want %v", resumed, h.kubelet, want)
	}
	for _, v := range vols {
		second.waitState(t, v, 30*time.Second, heal.StateReconnecting)
	}
	// Longer than the orphan grace: a restarted agent that did not count
	// its resumed volumes would disconnect their controllers now.
	time.Sleep(2 * healOrphanGrace)
	for _, v := range vols {
		if got := names(controllersOf(t, v.nqn)); !slices.Equal(got, ctrls[v.id]) {
			t.Fatalf("controllers of %s during the outage after the restart: %v, before: %v", v.id, got, ctrls[v.id])
		}
	}

	must(t, "PortUp", h.exp.PortUp(defaultPort))
	for _, v := range vols {
		second.waitState(t, v, healDeadline, heal.StateLive)
	}
	for what, w := range map[string]*write{"block": wb, "ext4": wf} {
		if err := w.result(t, healDeadline); err != nil {
			t.Fatalf("the %s write held across the restart failed: %v", what, err)
		}
	}
	after.writeAt(t, blk.target, 8<<20)
	after.writeFile(t, filepath.Join(fsv.target, "after"))
	before.checkAt(t, "block, written before the outage", blk.target, 1<<20)
	during.checkAt(t, "block, written during the outage and the restart", blk.target, 4<<20)
	after.checkAt(t, "block, written after", blk.target, 8<<20)
	before.checkFile(t, "ext4, written before the outage", filepath.Join(fsv.target, "before"))
	during.checkFile(t, "ext4, written during the outage and the restart", filepath.Join(fsv.target, "during"))
	after.checkFile(t, "ext4, written after", filepath.Join(fsv.target, "after"))

	for _, v := range vols {
		if got := names(controllersOf(t, v.nqn)); !slices.Equal(got, ctrls[v.id]) {
			t.Errorf("controllers of %s after healing: %v, before the restart: %v", v.id, got, ctrls[v.id])
		}
		// The kernel did the healing; a repair would mean the new agent
		// took a reconnecting controller for a lost one.
		for _, s := range second.statesOf(v.id) {
			if s == heal.StateLost || s == heal.StateHealing {
				t.Errorf("the restarted agent saw %s go through %v", v.id, second.statesOf(v.id))
				break
			}
		}
		if row := second.statusRow(t, v); row[4] != string(heal.StateLive) {
			t.Errorf("status row %v, want state live", row)
		}
	}
	// Only the new agent knows the volumes now: it unpublishes and
	// unstages them from what it resumed.
	for _, v := range vols {
		h.teardown(t, v)
	}
}

// names strips the states controllersOf adds.
func names(ctrls []string) []string {
	out := make([]string, len(ctrls))
	for i, c := range ctrls {
		out[i] = ctrlName(c)
	}
	slices.Sort(out)
	return out
}
