//go:build e2eguest

package guest

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rds-csi/rds-csi/agent/heal"
	"github.com/rds-csi/rds-csi/volume"
)

// lossOptions is the fixture of the controller-loss scenarios; proving that
// they fail without healing means setting noRepair here for one run.
var lossOptions = healOptions{}

// TestHealControllerLoss: the kernel gives a controller up (ctrl_loss_tmo
// expired, or on 6.12 a reconnect the target rejected) and deletes it with
// its devices. Nothing comes back by itself: the agent must reconnect from
// its record once the target answers, find the volume under whatever
// number it gets now, and move the raw block publish onto it. A mounted
// filesystem cannot be moved; the agent must say that its pods have to
// restart, and a restage must find the data.
func TestHealControllerLoss(t *testing.T) {
	t.Run("block, ctrl_loss_tmo expires", func(t *testing.T) {
		blockLoss(t, false, 4502)
	})
	t.Run("block, reconnect rejected", func(t *testing.T) {
		// 6.1 retries a rejected reconnect until ctrl_loss_tmo like any
		// other failure, which the case above covers.
		if !kernelAtLeast(t, 6, 12) {
			t.Skip("kernel 6.1 retries a rejected reconnect; only 6.12 deletes the controller at once")
		}
		blockLoss(t, true, 4503)
	})
	t.Run("ext4, ctrl_loss_tmo expires", func(t *testing.T) {
		fsLoss(t)
	})
}

// lossCounters are the per-volume counters a loss moves.
var lossCounters = []string{"rds_node_controller_losses_total", "rds_node_renumberings_total"}

func counters(t *testing.T, a *healAgent, v *vol) map[string]float64 {
	t.Helper()
	m := map[string]float64{}
	for _, name := range lossCounters {
		m[name] = a.volumeCounter(t, name, v)
	}
	return m
}

func assertCounted(t *testing.T, a *healAgent, v *vol, baseline map[string]float64) {
	t.Helper()
	for _, name := range lossCounters {
		got := a.volumeCounter(t, name, v)
		if got <= baseline[name] {
			t.Errorf("%s{volume=%q} = %v, was %v before the loss", name, v.id, got, baseline[name])
		} else {
			t.Logf("%s{volume=%q}: %v -> %v", name, v.id, baseline[name], got)
		}
	}
}

// blockLoss loses a published raw block volume's controller, lets a foreign
// subsystem take the numbers it had, and brings the target back. rejected
// withdraws the subsystem from a port that keeps listening, with
// ctrl_loss_tmo=-1, to show that 6.12 deletes the controller regardless.
func blockLoss(t *testing.T, rejected bool, foreignPort int) {
	h := newHealFixture(t, lossOptions)
	name, tmo := "heal-loss-block", "5"
	if rejected {
		name, tmo = "heal-reject-block", "-1"
	}
	v := h.create(name, "block", map[string]string{volume.KeyCtrlLossTmo: tmo})
	var neighbour *vol
	if rejected {
		// Withdrawing the last subsystem of a port would close the
		// listener; another one keeps it answering, with a rejection.
		neighbour = h.create("heal-neighbour", "block", nil)
	}
	h.stageAndPublish(t, v)
	a := h.agent
	baseline := counters(t, a, v)
	before, during, after := newPayload(t, 1<<20), newPayload(t, 1<<20), newPayload(t, 1<<20)
	before.writeAt(t, v.target, 1<<20)
	oldDev := rdevOf(t, v.target)
	oldCtrls := controllersOf(t, v.nqn)

	cutAt := time.Now()
	if rejected {
		must(t, "Withdraw", h.exp.Withdraw(v.nqn))
	} else {
		must(t, "PortDown", h.exp.PortDown(portOf(t, v)))
	}
	w := startWrite(v.target, 4<<20, during.data)
	waitControllersGone(t, v, healDeadline)
	t.Logf("the kernel deleted %v %v after the cut", oldCtrls, time.Since(cutAt).Round(time.Millisecond))
	a.waitState(t, v, 30*time.Second, heal.StateLost, heal.StateHealing)
	// I/O the kernel queued fails with the controller; a write that
	// reported success must be on the disk afterwards.
	duringErr := w.result(t, healDeadline)
	t.Logf("the write during the outage returned %v", duringErr)

	fr := connectForeign(t, "loss-shift", foreignPort)
	t.Logf("the foreign subsystem now holds %s (%s); the volume had %s", device(t, fr.nqn), volumeDev(t, &vol{nqn: fr.nqn}), oldDev)
	if rejected {
		must(t, "Restore", h.exp.Restore(v.nqn))
	} else {
		must(t, "PortUp", h.exp.PortUp(portOf(t, v)))
	}
	back := time.Now()
	a.waitState(t, v, healDeadline, heal.StateLive)
	t.Logf("live again %v after the target came back, %v after the cut", time.Since(back).Round(time.Millisecond), time.Since(cutAt).Round(time.Millisecond))
	a.assertSequence(t, v.id, heal.StateLive, heal.StateLost, heal.StateHealing, heal.StateLive)

	newDev := volumeDev(t, v)
	if newDev == oldDev {
		t.Fatalf("the volume came back as %s again: nothing took its number, so this proves nothing", newDev)
	}
	if got := rdevOf(t, v.target); got != newDev {
		t.Fatalf("the publish target %s shows device %s; the volume is now %s (%s)", v.target, got, newDev, device(t, v.nqn))
	}
	t.Logf("the publish target moved from %s to %s (%s)", oldDev, newDev, device(t, v.nqn))
	before.checkAt(t, "written before the loss, read through the target", v.target, 1<<20)
	if duringErr == nil {
		during.checkAt(t, "written during the loss (fsync succeeded)", v.target, 4<<20)
	}
	after.writeAt(t, v.target, 8<<20)
	after.checkAt(t, "written after the repair", v.target, 8<<20)

	assertCounted(t, a, v, baseline)
	if row := a.statusRow(t, v); row[4] != string(heal.StateLive) || row[3] != newDev.String() {
		t.Errorf("status row %v, want state live on device %s", row, newDev)
	}
	fr.assertLive(t)
	h.teardown(t, v)
	if neighbour != nil {
		must(t, "DeleteVolume "+neighbour.id, h.delete(neighbour))
		h.assertGone(t, neighbour)
	}
}

// fsLoss loses a mounted ext4 volume's controller. The mount pins the old
// device, so the repair reconnects it under a new one and cannot move the
// filesystem: until the device-mapper indirection exists, the honest
// outcome is a failed volume whose cause says it must be staged again.
// Restaging, which is what restarting the pods amounts to, finds the data.
func fsLoss(t *testing.T) {
	h := newHealFixture(t, lossOptions)
	v := h.create("heal-loss-ext4", "ext4", map[string]string{volume.KeyCtrlLossTmo: "5"})
	h.stageAndPublish(t, v)
	a := h.agent
	baseline := counters(t, a, v)
	before, during, after := newPayload(t, 1<<20), newPayload(t, 1<<20), newPayload(t, 1<<20)
	before.writeFile(t, filepath.Join(v.target, "before"))
	oldDev := volumeDev(t, v)

	cutAt := time.Now()
	must(t, "PortDown", h.exp.PortDown(portOf(t, v)))
	w := startWrite(filepath.Join(v.target, "during"), -1, during.data)
	waitControllersGone(t, v, healDeadline)
	t.Logf("the kernel deleted the controller %v after the cut", time.Since(cutAt).Round(time.Millisecond))
	duringErr := w.result(t, healDeadline)
	t.Logf("the write during the outage returned %v", duringErr)
	must(t, "PortUp", h.exp.PortUp(portOf(t, v)))

	tr := a.waitTransition(t, v, healDeadline, heal.StateFailed)
	if !strings.Contains(tr.cause, "until the volume is staged again") {
		t.Fatalf("volume %s failed with cause %q, which does not tell that it must be staged again", v.id, tr.cause)
	}
	t.Logf("volume %s failed: %s", v.id, tr.cause)
	a.assertSequence(t, v.id, heal.StateLive, heal.StateLost, heal.StateHealing, heal.StateFailed)
	if newDev := volumeDev(t, v); newDev == oldDev {
		t.Errorf("the volume reconnected as %s again although its old device is still mounted", newDev)
	}
	assertCounted(t, a, v, baseline)
	// The filesystem stays on the dead device until the pods restart, so
	// the volume must not read live in between, whatever the kernel's
	// controller says.
	time.Sleep(5 * healScanInterval)
	if hl, _ := a.loop.Health(v.id); hl.State != heal.StateFailed {
		t.Errorf("volume %s reads %s (cause %q) while its filesystem is still mounted from the dead device %s: only a restage can heal it; states so far %v",
			v.id, hl.State, hl.LastCause, oldDev, a.statesOf(v.id))
	}
	if row := a.statusRow(t, v); row[4] != string(heal.StateFailed) {
		t.Errorf("status row %v, want state failed", row)
	}

	// The pods restart: the CO unpublishes and unstages, then stages and
	// publishes again, now from the new device.
	must(t, "NodeUnpublish", h.unpublish(v))
	must(t, "NodeUnstage", h.unstage(v))
	h.stageAndPublish(t, v)
	before.checkFile(t, "written before the loss, after the restage", filepath.Join(v.target, "before"))
	if duringErr == nil {
		during.checkFile(t, "written during the loss (fsync succeeded)", filepath.Join(v.target, "during"))
	}
	after.writeFile(t, filepath.Join(v.target, "after"))
	after.checkFile(t, "written after the restage", filepath.Join(v.target, "after"))
	h.teardown(t, v)
}
