//go:build e2eguest

package guest

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rds-csi/rds-csi/agent/heal"
	"github.com/rds-csi/rds-csi/kernel/sysfs"
	"github.com/rds-csi/rds-csi/volume"
)

// lossOptions is the agent of the controller-loss scenarios: the
// production wiring, unless the run was asked to do without repairs
// (TestHealControllerLossFailsWithoutRepairs runs this binary so, to prove
// that the scenarios can fail).
func lossOptions() healOptions {
	return healOptions{noRepair: os.Getenv(envNoRepair) == "1"}
}

// lossDeadline bounds the wait for the volume to come back; a run without
// repairs is told a shorter one, since nothing will come back.
func lossDeadline(t *testing.T) time.Duration {
	if s := os.Getenv(envLossDeadline); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("%s=%q: %v", envLossDeadline, s, err)
		}
		return d
	}
	return healDeadline
}

const (
	envNoRepair     = "RDS_CSI_E2E_NO_REPAIR"
	envLossDeadline = "RDS_CSI_E2E_LOSS_DEADLINE"
)

// TestHealControllerLoss: the kernel gives a controller up (ctrl_loss_tmo
// expired, or on 6.12 a reconnect the target rejected) and deletes it with
// its devices. Nothing comes back by itself: the agent must reconnect from
// its record once the target answers and find the volume under whatever
// number it gets now. Behind the multipath front (the default) the
// consumers never notice: a process writing the raw block volume through
// its open descriptor and a process writing files into the mounted ext4
// keep going without one error, and every write lands. Without a front the
// agent can only say that the filesystem's pods must restart.
func TestHealControllerLoss(t *testing.T) {
	t.Run("block and ext4 consumers, ctrl_loss_tmo expires", func(t *testing.T) {
		consumersSurvive(t, false, 4502)
	})
	t.Run("block consumer, reconnect rejected", func(t *testing.T) {
		// 6.1 retries a rejected reconnect until ctrl_loss_tmo like any
		// other failure, which the case above covers.
		if !kernelAtLeast(t, 6, 12) {
			t.Skip("kernel 6.1 retries a rejected reconnect; only 6.12 deletes the controller at once")
		}
		consumersSurvive(t, true, 4503)
	})
	t.Run("ext4 without a front, ctrl_loss_tmo expires", func(t *testing.T) {
		fsLossWithoutFront(t)
	})
}

// TestHealControllerLossFailsWithoutRepairs runs the first loss scenario
// again in a child process whose agent has no Repairer, and requires it to
// fail: the scenario must be able to fail, and fail for the reason healing
// exists (the volume never comes back, its writers stay stuck).
func TestHealControllerLossFailsWithoutRepairs(t *testing.T) {
	if os.Getenv(envNoRepair) == "1" {
		t.Skip("this is the child run")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.v", "-test.count=1",
		"-test.run=^TestHealControllerLoss$/^block_and_ext4_consumers")
	cmd.Env = append(os.Environ(), envNoRepair+"=1", envLossDeadline+"=20s")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("the child run without repairs did not fail as a test does: %v", err)
	}
	// Only the child's verdict lines, indented so that nobody takes them
	// for this binary's own results.
	var verdicts []string
	for line := range strings.SplitSeq(string(out), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "--- ") || strings.Contains(trimmed, "not [live]") || strings.Contains(trimmed, "healed_test") {
			verdicts = append(verdicts, "  | "+trimmed)
		}
	}
	t.Logf("the child run without repairs exited %d:\n%s", exit.ExitCode(), strings.Join(verdicts, "\n"))
	if !strings.Contains(string(out), "--- FAIL: TestHealControllerLoss/block_and_ext4_consumers") {
		t.Fatal("the child run did not fail the scenario")
	}
	if !strings.Contains(string(out), "not [live] after 20s") {
		t.Fatal("the scenario failed without repairs, but not because the volume stayed down")
	}
	if fronts := leftoverFronts(t); len(fronts) != 0 {
		t.Errorf("the failed child run left fronts behind: %v", fronts)
	}
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

// consumersSurvive loses the controllers of a raw block volume and (unless
// rejected) an ext4 volume while a workload writes each without pause, lets
// a foreign subsystem take the numbers they had, and brings the target
// back. rejected withdraws the subsystem from a port that keeps listening,
// with ctrl_loss_tmo=-1, to show that 6.12 deletes the controller
// regardless.
func consumersSurvive(t *testing.T, rejected bool, foreignPort int) {
	h := newHealFixture(t, lossOptions())
	a := h.agent
	name, tmo := "heal-loss-block", "5"
	if rejected {
		name, tmo = "heal-reject-block", "-1"
	}
	blk := h.create(name, "block", map[string]string{volume.KeyCtrlLossTmo: tmo})
	vols := []*vol{blk}
	var fsv, neighbour *vol
	if rejected {
		// Withdrawing the last subsystem of a port would close the
		// listener; another one keeps it answering, with a rejection.
		neighbour = h.create("heal-neighbour", "block", nil)
	} else {
		fsv = h.create("heal-loss-ext4", "ext4", map[string]string{volume.KeyCtrlLossTmo: tmo})
		vols = append(vols, fsv)
	}
	for _, v := range vols {
		h.stageAndPublish(t, v)
	}
	baseline := map[string]map[string]float64{}
	oldNS := map[string]sysfs.DevT{}
	for _, v := range vols {
		baseline[v.id] = counters(t, a, v)
		oldNS[v.id] = volumeDev(t, v)
	}
	front := rdevOf(t, blk.target)
	if front == oldNS[blk.id] {
		t.Fatalf("the block publish shows the namespace %s itself, not a front", front)
	}

	// The workloads: an O_DIRECT writer holding the published device node
	// open, and a writer of fsynced files in the published filesystem.
	blocks := int(blockSize(t, blk.target) / rawBlock)
	rawW := startWriter("raw", func(w *writer) { w.rawLoop(blk.target, blocks) })
	writers := []*writer{rawW}
	var fsW *writer
	if fsv != nil {
		fsW = startWriter("ext4", func(w *writer) { w.fileLoop(fsv.target) })
		writers = append(writers, fsW)
	}
	t.Cleanup(func() {
		// A writer stuck on a front that never healed returns once the
		// sweep tells the front to fail; until then it cannot be waited.
		for _, w := range writers {
			w.requestStop()
		}
	})
	waitFor(t, "the workloads are writing", 60*time.Second, func() bool {
		return rawW.count() >= 20 && (fsW == nil || fsW.count() >= 5)
	})

	cutAt := time.Now()
	if rejected {
		must(t, "Withdraw", h.exp.Withdraw(blk.nqn))
	} else {
		must(t, "PortDown", h.exp.PortDown(portOf(t, blk)))
	}
	for _, v := range vols {
		waitControllersGone(t, v, healDeadline)
	}
	t.Logf("the kernel deleted the controllers %v after the cut; raw %d writes, ext4 %d files so far",
		time.Since(cutAt).Round(time.Millisecond), rawW.count(), countOf(fsW))
	for _, v := range vols {
		a.waitState(t, v, 30*time.Second, heal.StateLost, heal.StateHealing)
	}
	stalled := rawW.count()
	time.Sleep(2 * time.Second) // the outage goes on: I/O waits in the front
	if n := rawW.count(); n > stalled+1 {
		t.Errorf("the raw writer completed %d writes with no path to the target", n-stalled)
	}

	fr := connectForeign(t, "loss-shift", foreignPort)
	t.Logf("the foreign subsystem now holds %s (%s); the block volume had %s", device(t, fr.nqn), volumeDev(t, &vol{nqn: fr.nqn}), oldNS[blk.id])
	if rejected {
		must(t, "Restore", h.exp.Restore(blk.nqn))
	} else {
		must(t, "PortUp", h.exp.PortUp(portOf(t, blk)))
	}
	back := time.Now()
	deadline := lossDeadline(t)
	for _, v := range vols {
		a.waitState(t, v, deadline, heal.StateLive)
	}
	t.Logf("live again %v after the target came back, %v after the cut", time.Since(back).Round(time.Millisecond), time.Since(cutAt).Round(time.Millisecond))
	resumed := rawW.count()
	resumedFiles := countOf(fsW)
	waitFor(t, "the workloads write again", 60*time.Second, func() bool {
		return rawW.count() >= resumed+20 && (fsW == nil || fsW.count() >= resumedFiles+5)
	})
	t.Logf("writing again %v after the target came back", time.Since(back).Round(time.Millisecond))
	for _, w := range writers {
		w.requestStop()
		if !w.waitStopped(30 * time.Second) {
			t.Fatalf("the %s writer does not stop", w.name)
		}
		if errs := w.errors(); len(errs) > 0 {
			t.Errorf("the %s workload saw %d I/O errors across the loss, first %q", w.name, len(errs), errs[0])
		}
		t.Logf("%s workload: %d writes, no error; longest write %v", w.name, w.count(), w.maxLatency().Round(time.Millisecond))
	}

	for _, v := range vols {
		a.assertSequence(t, v.id, heal.StateLive, heal.StateLost, heal.StateHealing, heal.StateLive)
		a.assertNeverUnknown(t, v.id)
		if ns := volumeDev(t, v); ns == oldNS[v.id] {
			t.Fatalf("volume %s came back as %s again: nothing took its number, so this proves nothing", v.id, ns)
		} else {
			t.Logf("volume %s: namespace %s -> %s, consumers untouched", v.id, oldNS[v.id], ns)
		}
		assertCounted(t, a, v, baseline[v.id])
		if row := a.statusRow(t, v); row[4] != string(heal.StateLive) || row[3] != volumeDev(t, v).String() {
			t.Errorf("status row %v, want state live on device %s", row, volumeDev(t, v))
		}
	}
	if got := rdevOf(t, blk.target); got != front {
		t.Errorf("the block publish moved from the front %s to %s", front, got)
	}
	verifyRaw(t, blk.target, rawW.count())
	if fsv != nil {
		verifyFiles(t, fsv.target, fsW.count())
	}
	fr.assertLive(t)
	for _, v := range vols {
		h.teardown(t, v)
	}
	if neighbour != nil {
		must(t, "DeleteVolume "+neighbour.id, h.delete(neighbour))
		h.assertGone(t, neighbour)
	}
}

func countOf(w *writer) int {
	if w == nil {
		return 0
	}
	return w.count()
}

// fsLossWithoutFront loses a mounted ext4 volume's controller with the
// agent running without fronts (--dm-multipath=false). The mount pins the
// old device, so the repair reconnects it under a new one and cannot move
// the filesystem: the honest outcome is a failed volume whose cause says it
// must be staged again. Restaging, which is what restarting the pods
// amounts to, finds the data.
func fsLossWithoutFront(t *testing.T) {
	opts := lossOptions()
	opts.noFront = true
	h := newHealFixture(t, opts)
	v := h.create("heal-nofront-ext4", "ext4", map[string]string{volume.KeyCtrlLossTmo: "5"})
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
	a.assertNeverUnknown(t, v.id)
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
