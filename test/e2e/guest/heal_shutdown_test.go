//go:build e2eguest

package guest

import (
	"strings"
	"testing"
	"time"

	"github.com/rds-csi/rds-csi/agent"
	"github.com/rds-csi/rds-csi/agent/heal"
	"github.com/rds-csi/rds-csi/volume"
)

// TestHealShutdown: on node shutdown the agent lowers ctrl_loss_tmo of its
// controllers, so that a reboot with the network already gone
// gives them up within seconds instead of retrying forever, and it repairs
// nothing any more. A foreign controller keeps its own setting.
func TestHealShutdown(t *testing.T) {
	const tmo = 3
	h := newHealFixture(t, healOptions{})
	v := h.create("heal-shutdown", "block", map[string]string{volume.KeyCtrlLossTmo: "-1"})
	h.stageAndPublish(t, v)
	a := h.agent
	fr := connectForeign(t, "shutdown-bystander", 4501)
	p := newPayload(t, 1<<20)
	p.writeAt(t, v.target, 1<<20)

	ctrl := ctrlName(controllersOf(t, v.nqn)[0])
	for _, c := range []string{ctrl, fr.controller} {
		if got := ctrlLossTmo(t, c); got != -1 {
			t.Fatalf("ctrl_loss_tmo of %s is %d before the shutdown, want off (-1)", c, got)
		}
	}
	must(t, "Shutdown", a.loop.Shutdown(ctxFor(t, 30*time.Second), tmo))
	shutdownAt := time.Now()
	// The kernel keeps the timeout as a number of reconnect attempts and
	// prints attempts × reconnect_delay, so it may read rounded up to the
	// next multiple of the delay (1 s here).
	const delay = 1
	if got := ctrlLossTmo(t, ctrl); got < tmo || got >= tmo+delay {
		t.Errorf("ctrl_loss_tmo of the volume's controller %s reads %d after Shutdown(%d)", ctrl, got, tmo)
	} else {
		t.Logf("ctrl_loss_tmo of %s is %d", ctrl, got)
	}
	if got := ctrlLossTmo(t, fr.controller); got != -1 {
		t.Errorf("ctrl_loss_tmo of the foreign controller %s changed to %d", fr.controller, got)
	}
	p.checkAt(t, "after lowering ctrl_loss_tmo", v.target, 1<<20)

	// The network goes before the controllers do, as in a reboot: the
	// kernel now gives up after the lowered timeout.
	downAt := time.Now()
	must(t, "PortDown", h.exp.PortDown(portOf(t, v)))
	waitControllersGone(t, v, 60*time.Second)
	t.Logf("controller %s deleted by the kernel %v after the port went down", ctrl, time.Since(downAt).Round(time.Millisecond))
	a.waitState(t, v, 30*time.Second, heal.StateLost)
	must(t, "PortUp", h.exp.PortUp(portOf(t, v)))
	time.Sleep(3 * time.Second)
	if got := controllersOf(t, v.nqn); len(got) != 0 {
		t.Errorf("the volume was reconnected after Shutdown: %v", got)
	}
	a.mu.Lock()
	for _, tr := range a.transitions {
		if tr.volumeID == v.id && tr.to == heal.StateHealing && tr.at.After(shutdownAt) {
			t.Errorf("a repair started after Shutdown (%+v)", tr)
		}
	}
	a.mu.Unlock()
	fr.assertLive(t)
	h.teardown(t, v)
}

// TestHealShutdownIsUndoneByARestart: SIGTERM also comes with a restart
// (systemctl restart, a DaemonSet rollout), and the shutdown mode cannot
// tell. The restarted agent gives the volume its own ctrl_loss_tmo back and
// makes its front queue again, or the next outage would fail its I/O.
func TestHealShutdownIsUndoneByARestart(t *testing.T) {
	h := newHealFixture(t, healOptions{})
	v := h.create("heal-shutdown-restart", "block", map[string]string{volume.KeyCtrlLossTmo: "-1"})
	h.stageAndPublish(t, v)
	ctrl := ctrlName(controllersOf(t, v.nqn)[0])
	front := agent.MapperName(v.id)
	if !frontQueues(t, front) {
		t.Fatalf("the front %s does not queue before the shutdown", front)
	}

	ctx := ctxFor(t, 30*time.Second)
	must(t, "Shutdown", h.agent.loop.Shutdown(ctx, 3))
	must(t, "StopQueueing", h.agent.node.StopQueueing(ctx))
	if got := ctrlLossTmo(t, ctrl); got == -1 {
		t.Fatalf("ctrl_loss_tmo of %s still off after Shutdown", ctrl)
	}
	if frontQueues(t, front) {
		t.Fatalf("the front %s still queues after StopQueueing", front)
	}
	h.agent.stop()

	second := h.startAgent()
	if got := ctrlLossTmo(t, ctrl); got != -1 {
		t.Errorf("ctrl_loss_tmo of %s is %d after the restart, want the volume's own: off (-1)", ctrl, got)
	}
	if !frontQueues(t, front) {
		t.Errorf("the front %s does not queue after the restart", front)
	}
	second.waitState(t, v, 30*time.Second, heal.StateLive)
	h.teardown(t, v)
}

// frontQueues reads from the kernel whether a front queues I/O while it
// has no path.
func frontQueues(t *testing.T, name string) bool {
	t.Helper()
	table, err := agent.KernelMapper{}.Table(ctxFor(t, 30*time.Second), name)
	if err != nil || len(table) == 0 {
		t.Fatalf("table of %s: %v %v", name, table, err)
	}
	return strings.Contains(table[0].Params, "queue_if_no_path")
}

func ctrlLossTmo(t *testing.T, controller string) int {
	t.Helper()
	n, err := sysTree.CtrlLossTmo(controller)
	if err != nil {
		t.Fatalf("reading ctrl_loss_tmo of %s: %v", controller, err)
	}
	return n
}
