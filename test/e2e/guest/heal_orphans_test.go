//go:build e2eguest

package guest

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rds-csi/rds-csi/agent/heal"
	"github.com/rds-csi/rds-csi/kernel/fabrics"
	"github.com/rds-csi/rds-csi/volume"
)

// TestHealOrphans: controllers of managed subsystems that no staged volume
// claims are disconnected after the grace period, but never one
// whose device is in use, even without a record saying why, and never one
// outside the managed prefix.
func TestHealOrphans(t *testing.T) {
	h := newHealFixture(t, healOptions{})
	stray := h.create("heal-orphan-stray", "block", nil)
	mounted := h.create("heal-orphan-mounted", "block", nil)

	// An admin connected and mounted a volume of ours by hand while the
	// agent was down: the restarted agent finds a managed controller with
	// no record, and must leave it because its device is mounted.
	h.agent.stop()
	mctrl := connectByHand(t, mounted)
	waitFor(t, "the namespace of "+mounted.nqn+" appears", 60*time.Second, func() bool {
		_, err := sysTree.ResolveNamespace(mounted.nqn, 1)
		return err == nil
	})
	mnt := filepath.Join(h.dir, "by-hand")
	must(t, "mkdir", os.MkdirAll(mnt, 0o755))
	dev := device(t, mounted.nqn)
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", dev).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 %s: %v\n%s", dev, err, out)
	}
	must(t, "mounting "+dev+" by hand", unix.Mount(dev, mnt, "ext4", 0, ""))
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
	p := newPayload(t, 1<<20)
	p.writeFile(t, filepath.Join(mnt, "data"))
	a := h.startAgent()
	started := time.Now()

	fr := connectForeign(t, "orphan-bystander", 4500)

	// A controller of ours appears while the agent runs, and nothing
	// stages it.
	connecting := time.Now()
	sctrl := connectByHand(t, stray)
	waitControllersGone(t, stray, 60*time.Second)
	took := time.Since(connecting)
	t.Logf("the stray controller %s was disconnected %v after it connected (grace %v)", sctrl, took.Round(time.Millisecond), healOrphanGrace)
	if took < healOrphanGrace {
		t.Errorf("the stray controller went after %v, before its grace of %v", took, healOrphanGrace)
	}

	// The mounted one was a candidate from the agent's start; by now its
	// disconnect has been tried and refused.
	waitFor(t, "the agent refused to disconnect the mounted controller", 60*time.Second, func() bool {
		return a.counter(t, "rds_node_heal_actions_total", map[string]string{"kind": heal.KindOrphanDisconnect, "result": "error"}) >= 1
	})
	if wait := healOrphanGrace - time.Since(started); wait > 0 {
		time.Sleep(wait)
	}
	time.Sleep(2 * healOrphanGrace) // and a retry would have had time too
	if got := controllersOf(t, mounted.nqn); len(got) != 1 || ctrlName(got[0]) != mctrl {
		t.Fatalf("the controller of the hand-mounted volume is now %v, was %s", got, mctrl)
	}
	p.checkFile(t, "mounted by hand, after the orphan checks", filepath.Join(mnt, "data"))
	fr.assertLive(t)
	if got := a.counter(t, "rds_node_heal_actions_total", map[string]string{"kind": heal.KindOrphanDisconnect, "result": "ok"}); got != 1 {
		t.Errorf("rds_node_heal_actions_total{kind=orphan_disconnect,result=ok} = %v, want 1 (the stray controller only)", got)
	}

	must(t, "unmounting by hand", unix.Unmount(mnt, 0))
	if err := sysTree.DeleteController(mctrl); err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("deleting %s: %v", mctrl, err)
	}
	for _, v := range []*vol{stray, mounted} {
		must(t, "DeleteVolume "+v.id, h.delete(v))
		h.assertGone(t, v)
	}
}

// connectByHand connects a volume with a raw /dev/nvme-fabrics write and
// the node's host identity, as nvme-cli on the node would. It returns the
// controller's name without waiting for the namespace: an orphan may be
// gone again before that.
func connectByHand(t *testing.T, v *vol) string {
	t.Helper()
	fab := &fabrics.Fabrics{Device: fabrics.DefaultDevice, Sysfs: sysTree}
	c, err := fab.Connect(ctxFor(t, 60*time.Second), fabrics.Options{
		Transport: "tcp", TrAddr: v.context[volume.KeyAddress], TrSvcID: strconv.Itoa(portOf(t, v)), NQN: v.nqn,
		HostNQN: volume.HostNQN(nodeID), HostID: volume.HostID(nodeID), CtrlLossTmo: -1, ReconnectDelay: 1, KeepAliveTmo: 5, FastIOFailTmo: -1,
	})
	if err != nil {
		t.Fatalf("connecting %s by hand: %v", v.nqn, err)
	}
	t.Logf("connected %s by hand as %s", v.nqn, c.Controller)
	return c.Controller
}
