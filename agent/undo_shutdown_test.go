package agent_test

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/rds-csi/rds-csi/agent"
	"github.com/rds-csi/rds-csi/kernel/sysfs/sysfstest"
	"github.com/rds-csi/rds-csi/volume"
)

// queueingAttacher records which volumes' fronts were told to queue again.
type queueingAttacher struct {
	agent.Attacher
	mu      sync.Mutex
	started []string
}

func (q *queueingAttacher) StopQueueing(context.Context, agent.Target) error { return nil }

func (q *queueingAttacher) StartQueueing(_ context.Context, t agent.Target) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.started = append(q.started, t.VolumeID)
	return nil
}

// A restart is a SIGTERM too: the shutdown mode of the run before lowered
// ctrl_loss_tmo and stopped the fronts queueing. The restarted agent gives
// its volumes both back, and touches nothing else.
func TestUndoShutdownRestoresCtrlLossTmoAndQueueingOfResumedVolumesOnly(t *testing.T) {
	root := t.TempDir()
	const (
		forever = "nqn.2000-02.com.mikrotik:pvc-forever"
		timed   = "nqn.2000-02.com.mikrotik:pvc-timed"
		rounded = "nqn.2000-02.com.mikrotik:pvc-rounded"
		foreign = "nqn.2014-08.org.example:other"
		off     = "nqn.2000-02.com.mikrotik:pvc-off"
	)
	sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme0", SubsysNQN: forever, CtrlLossTmo: "5"})
	sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme1", SubsysNQN: timed, CtrlLossTmo: "5"})
	// The kernel prints attempts × reconnect_delay: 63 for a volume's 60.
	sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme2", SubsysNQN: rounded, CtrlLossTmo: "63"})
	sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme3", SubsysNQN: foreign, CtrlLossTmo: "5"})
	// Set to reconnect for ever by hand: more than the record's 60, kept.
	sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme4", SubsysNQN: off, CtrlLossTmo: "off"})

	opts := agent.Options{NodeID: "node-1", SysRoot: root}
	if err := opts.Validate(); err != nil {
		t.Fatal(err)
	}
	att := &queueingAttacher{}
	n := agent.New(opts, att, agent.HostMounter{}, nil)
	tmo := func(s int) volume.ConnectOptions { c := volume.DefaultConnectOptions(); c.CtrlLossTmo = s; return c }
	vols := []agent.StagedVolume{
		{VolumeID: "pvc-forever", NQN: forever, NSID: 1, Connect: tmo(-1)},
		{VolumeID: "pvc-timed", NQN: timed, NSID: 1, Connect: tmo(60)},
		{VolumeID: "pvc-rounded", NQN: rounded, NSID: 1, Connect: tmo(60)},
		{VolumeID: "pvc-gone", NQN: "nqn.2000-02.com.mikrotik:pvc-gone", NSID: 1, Connect: tmo(-1)},
		{VolumeID: "pvc-off", NQN: off, NSID: 1, Connect: tmo(60)},
	}
	if err := n.UndoShutdown(context.Background(), vols); err != nil {
		t.Fatal(err)
	}
	for ctrl, want := range map[string]string{"nvme0": "-1", "nvme1": "60", "nvme2": "63", "nvme3": "5", "nvme4": "off"} {
		if got := sysfstest.ReadAttr(t, root, "class/nvme/"+ctrl, "ctrl_loss_tmo"); got != want {
			t.Errorf("%s ctrl_loss_tmo = %q, want %q", ctrl, got, want)
		}
	}
	want := []string{"pvc-forever", "pvc-timed", "pvc-rounded", "pvc-gone", "pvc-off"}
	if !slices.Equal(att.started, want) {
		t.Errorf("fronts told to queue: %v, want %v", att.started, want)
	}
}
