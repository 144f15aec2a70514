package heal

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rds-csi/rds-csi/kernel/sysfs/sysfstest"
	"github.com/rds-csi/rds-csi/kernel/uevent"
)

// liveVolume sets up volume A live on nvme0 (device 259:0), loop started.
func liveVolume(t *testing.T, configure func(*Config)) *harness {
	t.Helper()
	h := newHarness(t, configure)
	h.addController("nvme0", nqnA)
	h.addNamespace("nvme0", "259:0")
	h.loop.begin()
	h.track(volA)
	h.wantState("pvc-a", StateLive)
	return h
}

func TestReconnectsAreCountedOnceWhateverTheOrderOfScanAndEvent(t *testing.T) {
	type step func(h *harness)
	setState := func(s string) step {
		return func(h *harness) { sysfstest.SetState(t, h.root, "nvme0", s) }
	}
	scan := func(h *harness) { h.loop.scan() }
	event := func(h *harness) { h.loop.handleEvent(ctrlEvent("change", "nvme0", connected)) }
	wait := func(h *harness) { h.clock.advance(3 * time.Second) }
	tests := []struct {
		name           string
		steps          []step
		wantReconnects float64
		wantNotLive    float64 // observations of the not-live histogram
	}{
		{"scan sees connecting then live, the event follows",
			[]step{setState("connecting"), scan, wait, setState("live"), scan, event}, 1, 1},
		{"the event arrives before the scan sees live",
			[]step{setState("connecting"), scan, wait, setState("live"), event, scan}, 1, 1},
		{"a reconnect too quick for the scan is counted from the event",
			[]step{event}, 1, 0},
		{"a kernel older than 5.18 sends no event and the scan still counts",
			[]step{setState("resetting"), scan, wait, setState("live"), scan}, 1, 1},
		{"two reconnects count two",
			[]step{setState("connecting"), scan, setState("live"), scan, event, setState("connecting"), scan, setState("live"), event, scan}, 2, 2},
		{"a controller still connecting has not reconnected",
			[]step{setState("connecting"), scan, scan}, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := liveVolume(t, nil)
			for _, s := range tc.steps {
				s(h)
			}
			h.wantMetric("rds_node_reconnects_total", map[string]string{"volume": "pvc-a"}, tc.wantReconnects)
			got, _ := h.metric("rds_node_not_live_seconds", nil)
			if got != tc.wantNotLive {
				t.Errorf("not-live observations = %v, want %v", got, tc.wantNotLive)
			}
		})
	}
}

func TestAScanTurnsAConnectingControllerIntoReconnectingAndBack(t *testing.T) {
	h := liveVolume(t, nil)
	sysfstest.SetState(t, h.root, "nvme0", "connecting")
	h.clock.advance(time.Second)
	h.loop.scan()
	got := h.wantState("pvc-a", StateReconnecting)
	if !got.Since.Equal(h.clock.now()) || !strings.Contains(got.LastCause, "connecting") {
		t.Errorf("health %+v: want since now and a cause naming the state", got)
	}
	h.wantMetric("rds_node_controller_state", map[string]string{"volume": "pvc-a", "nqn": nqnA, "state": "reconnecting"}, 1)
	h.wantMetric("rds_node_controller_state", map[string]string{"volume": "pvc-a", "state": "live"}, 0)

	h.clock.advance(4 * time.Second)
	sysfstest.SetState(t, h.root, "nvme0", "live")
	h.loop.scan()
	h.wantState("pvc-a", StateLive)
	if sum := histogramSum(t, h.reg, "rds_node_not_live_seconds"); sum != 4 {
		t.Errorf("time not live = %vs, want 4s", sum)
	}
	if n := h.repairer.calls.Load(); n != 0 {
		t.Errorf("repair called %d times for a volume the kernel reconnected itself", n)
	}
}

func TestARemovedControllerMakesTheVolumeLostOnTheEventAlone(t *testing.T) {
	h := liveVolume(t, func(c *Config) { c.Repairer = nil })
	sysfstest.RemoveController(t, h.root, "nvme0", sysfstest.RemoveAll)
	h.loop.handleEvent(blockEvent("remove", "nvme0n1", "259", "0"))
	got := h.wantState("pvc-a", StateLost)
	if got.LastCause != "controller deleted" {
		t.Errorf("cause %q, want controller deleted", got.LastCause)
	}
	h.loop.handleEvent(ctrlEvent("remove", "nvme0", nil))
	h.wantState("pvc-a", StateLost)
	h.wantMetric("rds_node_controller_losses_total", map[string]string{"volume": "pvc-a"}, 1)
	h.wantMetric("rds_node_uevents_total", map[string]string{"subsystem": "block", "action": "remove"}, 1)
}

func TestRenumberingIsCountedAndTheNewDeviceRecorded(t *testing.T) {
	tests := []struct {
		name     string
		recorded string // Volume.Device from the record
		scenario func(h *harness)
		want     float64
	}{
		{"controller deleted and reconnected under a new number", "", func(h *harness) {
			sysfstest.RemoveController(t, h.root, "nvme0", sysfstest.RemoveAll)
			h.loop.handleEvent(blockEvent("remove", "nvme0n1", "259", "0"))
			h.loop.handleEvent(ctrlEvent("remove", "nvme0", nil))
			h.addController("nvme1", nqnA)
			h.loop.handleEvent(ctrlEvent("add", "nvme1", nil))
			h.loop.handleEvent(ctrlEvent("change", "nvme1", connected))
			h.addNamespace("nvme1", "259:3")
			h.loop.handleEvent(blockEvent("add", "nvme1n1", "259", "3"))
		}, 1},
		{"renumbered while the agent was down", "259:7", func(*harness) {}, 1},
		{"same device as recorded", "259:3", func(*harness) {}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, func(c *Config) { c.Repairer = nil })
			dev := "259:0"
			if tc.recorded != "" {
				dev = "259:3"
			}
			h.addController("nvme0", nqnA)
			h.addNamespace("nvme0", dev)
			h.loop.begin()
			v := volA
			v.Device = tc.recorded
			h.track(v)
			tc.scenario(h)
			got := h.wantState("pvc-a", StateLive)
			if got.Device != "259:3" {
				t.Errorf("device %q, want 259:3", got.Device)
			}
			h.wantMetric("rds_node_renumberings_total", map[string]string{"volume": "pvc-a"}, tc.want)
		})
	}
}

func TestRepairIsCalledExactlyOncePerLoss(t *testing.T) {
	h := liveVolume(t, nil)
	h.repairer.fn = func(ctx context.Context, v Volume) error {
		if v != volA {
			t.Errorf("repair of %+v, want %+v", v, volA)
		}
		return nil
	}
	lose := func(ctrl, major, minor string) {
		sysfstest.RemoveController(t, h.root, ctrl, sysfstest.RemoveAll)
		h.loop.handleEvent(blockEvent("remove", ctrl+"n1", major, minor))
		h.loop.handleEvent(ctrlEvent("remove", ctrl, nil))
		h.loop.scan()
		h.loop.scan()
		h.loop.handleEvent(unrelatedEvent)
	}
	lose("nvme0", "259", "0")
	h.wantState("pvc-a", StateHealing)
	// The repair's own connect arrives as events while it runs.
	h.addController("nvme1", nqnA)
	h.addNamespace("nvme1", "259:1")
	h.loop.handleEvent(ctrlEvent("add", "nvme1", nil))
	h.loop.handleEvent(blockEvent("add", "nvme1n1", "259", "1"))
	h.wantState("pvc-a", StateHealing)
	h.runInbox()
	got := h.wantState("pvc-a", StateLive)
	if got.LastHeal.IsZero() {
		t.Error("LastHeal not set after a repair")
	}
	if n := h.repairer.calls.Load(); n != 1 {
		t.Fatalf("repair called %d times for one loss", n)
	}
	h.wantMetric("rds_node_heal_actions_total", map[string]string{"kind": KindRepair, "result": "ok"}, 1)

	lose("nvme1", "259", "1")
	h.runInbox()
	if n := h.repairer.calls.Load(); n != 2 {
		t.Fatalf("repair called %d times for two losses", n)
	}
	h.wantMetric("rds_node_controller_losses_total", map[string]string{"volume": "pvc-a"}, 2)
}

// unrelatedEvent must not make the loop repair again.
var unrelatedEvent = uevent.Event{Action: "remove", Subsystem: "nvme-subsystem", DevName: "nvme-subsys0"}

func TestAFailedRepairStaysFailedUntilAStorageLinkComesUp(t *testing.T) {
	h := liveVolume(t, nil)
	h.repairer.fn = func(context.Context, Volume) error { return errors.New("target does not answer") }
	sysfstest.RemoveController(t, h.root, "nvme0", sysfstest.RemoveAll)
	h.loop.handleEvent(ctrlEvent("remove", "nvme0", nil))
	h.runInbox()
	got := h.wantState("pvc-a", StateFailed)
	if !strings.Contains(got.LastCause, "target does not answer") {
		t.Errorf("cause %q does not carry the repair error", got.LastCause)
	}
	h.loop.scan()
	h.loop.handleLink(LinkEvent{Interface: "eth1", Up: false})
	if n := h.repairer.calls.Load(); n != 1 {
		t.Fatalf("repair called %d times before any link came up", n)
	}
	h.repairer.fn = nil
	h.addController("nvme1", nqnA)
	h.addNamespace("nvme1", "259:1")
	h.loop.handleLink(LinkEvent{Interface: "eth1", Up: true})
	// The scan on link-up already sees the volume back: no repair needed.
	h.wantState("pvc-a", StateLive)
	if n := h.repairer.calls.Load(); n != 1 {
		t.Fatalf("repair called %d times for a volume that came back", n)
	}
}

func TestALinkComingUpRetriesTheRepairOfAFailedVolume(t *testing.T) {
	h := liveVolume(t, nil)
	h.repairer.fn = func(context.Context, Volume) error { return errors.New("no route") }
	sysfstest.RemoveController(t, h.root, "nvme0", sysfstest.RemoveAll)
	h.loop.handleEvent(ctrlEvent("remove", "nvme0", nil))
	h.runInbox()
	h.wantState("pvc-a", StateFailed)
	h.loop.handleLink(LinkEvent{Interface: "eth1", Up: true})
	h.wantState("pvc-a", StateHealing)
	h.runInbox()
	if n := h.repairer.calls.Load(); n != 2 {
		t.Fatalf("repair called %d times, want a retry on link-up", n)
	}
}

func TestARepairThatReportsSuccessWithoutResultFailsInsteadOfSpinning(t *testing.T) {
	h := liveVolume(t, nil)
	sysfstest.RemoveController(t, h.root, "nvme0", sysfstest.RemoveAll)
	h.loop.handleEvent(ctrlEvent("remove", "nvme0", nil))
	h.runInbox()
	h.wantState("pvc-a", StateFailed)
	h.loop.scan()
	if n := h.repairer.calls.Load(); n != 1 {
		t.Fatalf("repair called %d times", n)
	}
}

func TestUnreadableSysfsIsUnknownAndNeverStartsARepair(t *testing.T) {
	h := newHarness(t, nil)
	h.addController("nvme0", nqnA)
	h.addNamespace("nvme0", "259:0")
	sysfstest.RemoveAttr(t, h.root, "class/nvme/nvme0", "transport")
	h.loop.begin()
	h.track(volA)
	h.loop.scan()
	// A readable controller arriving while the table is unknown.
	h.addController("nvme1", nqnB)
	h.loop.handleEvent(ctrlEvent("add", "nvme1", nil))
	h.loop.handleEvent(blockEvent("remove", "nvme0n1", "259", "0"))
	h.wantState("pvc-a", StateUnknown)
	if n := h.repairer.calls.Load(); n != 0 {
		t.Fatalf("repair called %d times on a read error", n)
	}
	if _, ok := h.metric("rds_node_controller_state", map[string]string{"volume": "pvc-a"}); ok {
		t.Error("an unknown state is reported as a metric value")
	}
	if got, _ := h.metric("rds_node_scan_errors_total", nil); got == 0 {
		t.Error("scan errors not counted")
	}
}

func TestOrphansAreDisconnectedAfterTheGraceAndNotBefore(t *testing.T) {
	tests := []struct {
		name  string
		setup func(h *harness) // after begin
		want  bool
	}{
		{"a controller nobody tracks", func(*harness) {}, true},
		{"a tracked volume's controller", func(h *harness) { h.track(volA) }, false},
		{"a controller being staged (held)", func(h *harness) { h.loop.Hold(nqnA) }, false},
		{"a controller held and released", func(h *harness) { h.loop.Hold(nqnA)() }, true},
		{"a volume re-registered after the loop started", func(h *harness) {
			h.clock.advance(time.Minute)
			h.track(volA)
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			h.addController("nvme0", nqnA)
			h.addNamespace("nvme0", "259:0")
			h.loop.begin()
			tc.setup(h)
			h.clock.advance(2*time.Minute - time.Second)
			h.loop.scan()
			if h.loop.ctrls["nvme0"].disconnecting {
				t.Fatal("disconnect started before the grace ended")
			}
			h.clock.advance(time.Second)
			h.loop.scan()
			if got := h.loop.ctrls["nvme0"].disconnecting; got != tc.want {
				t.Fatalf("disconnect started = %v, want %v", got, tc.want)
			}
			if !tc.want {
				return
			}
			select {
			case name := <-h.disconnects:
				if name != "nvme0" {
					t.Errorf("disconnected %s, want nvme0", name)
				}
			case <-time.After(waitLimit):
				t.Fatal("Disconnect was never called")
			}
			h.runInbox()
			h.wantMetric("rds_node_heal_actions_total", map[string]string{"kind": KindOrphanDisconnect, "result": "ok"}, 1)
		})
	}
}

func TestUntrackingStartsAFreshGrace(t *testing.T) {
	h := newHarness(t, nil)
	h.addController("nvme0", nqnA)
	h.addNamespace("nvme0", "259:0")
	h.loop.begin()
	h.track(volA)
	h.clock.advance(time.Hour)
	h.loop.Untrack("pvc-a")
	h.loop.applyTracking()
	h.clock.advance(time.Minute)
	h.loop.scan()
	if h.loop.ctrls["nvme0"].disconnecting {
		t.Fatal("an unstaged volume's controller was disconnected before its own grace")
	}
}

func TestOnlyManagedFabricControllersAreEverDisconnected(t *testing.T) {
	h := newHarness(t, nil)
	h.addController("nvme0", nqnA)
	h.addController("nvme1", foreignNQN)
	// A local drive whose NQN happens to look like ours: the transport
	// alone must keep it out.
	sysfstest.AddController(t, h.root, sysfstest.Controller{Name: "nvme2", SubsysNQN: prefix + "local", Transport: "pcie", Address: "0000:01:00.0"})
	h.loop.begin()
	h.clock.advance(time.Hour)
	h.loop.scan()
	var got []string
	for len(got) < 1 {
		select {
		case name := <-h.disconnects:
			got = append(got, name)
		case <-time.After(waitLimit):
			t.Fatal("the managed orphan was not disconnected")
		}
	}
	h.runInbox()
	h.clock.advance(time.Hour)
	h.loop.scan()
	h.loop.rescan()
	select {
	case name := <-h.disconnects:
		got = append(got, name)
	case <-time.After(100 * time.Millisecond):
	}
	if len(got) != 1 || got[0] != "nvme0" {
		t.Fatalf("disconnected %v, want only nvme0", got)
	}
	for _, name := range []string{"nvme1", "nvme2"} {
		if _, ok := h.loop.ctrls[name]; ok {
			t.Errorf("%s is watched though it is not ours", name)
		}
	}
}

func TestADisconnectIsSkippedWhenTheNameWasReusedMeanwhile(t *testing.T) {
	h := newHarness(t, nil)
	h.addController("nvme0", nqnA)
	h.loop.begin()
	// nvme0 goes away and a foreign controller takes the number before the
	// loop hears of it.
	sysfstest.RemoveController(t, h.root, "nvme0", sysfstest.RemoveAll)
	h.addController("nvme0", foreignNQN)
	h.clock.advance(time.Hour)
	h.loop.checkOrphans()
	h.runInbox()
	select {
	case name := <-h.disconnects:
		t.Fatalf("disconnected %s, now a foreign controller", name)
	default:
	}
}

func TestShutdownLowersCtrlLossTmoOfManagedControllersOnly(t *testing.T) {
	h := newHarness(t, nil)
	h.addController("nvme0", nqnA)
	h.addController("nvme1", nqnB)
	h.addController("nvme2", foreignNQN)
	sysfstest.AddController(t, h.root, sysfstest.Controller{Name: "nvme3", SubsysNQN: prefix + "local", Transport: "pcie", Address: "0000:01:00.0"})
	if err := h.loop.Shutdown(context.Background(), 5); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"nvme0": "5", "nvme1": "5", "nvme2": "off", "nvme3": "off"}
	for name, w := range want {
		if got := sysfstest.ReadAttr(t, h.root, "class/nvme/"+name, "ctrl_loss_tmo"); got != w {
			t.Errorf("%s ctrl_loss_tmo = %q, want %q", name, got, w)
		}
	}
	h.wantMetric("rds_node_heal_actions_total", map[string]string{"kind": KindShutdownTmo, "result": "ok"}, 2)
}

func TestShutdownStopsRepairs(t *testing.T) {
	h := liveVolume(t, func(c *Config) { c.Disconnect = nil })
	started := make(chan struct{})
	h.repairer.fn = func(ctx context.Context, _ Volume) error {
		close(started)
		<-ctx.Done()
		return ctx.Err()
	}
	sysfstest.RemoveController(t, h.root, "nvme0", sysfstest.RemoveAll)
	h.loop.handleEvent(ctrlEvent("remove", "nvme0", nil))
	<-started
	if err := h.loop.Shutdown(context.Background(), 5); err != nil {
		t.Fatal(err)
	}
	h.runInbox() // the cancelled repair's result
	h.wantState("pvc-a", StateFailed)
	h.loop.handleLink(LinkEvent{Interface: "eth1", Up: true})
	if n := h.repairer.calls.Load(); n != 1 {
		t.Fatalf("repair called %d times after shutdown began", n)
	}
}

func TestCtrlLossTmoReadBackMayBeRoundedUpButNotDown(t *testing.T) {
	tests := []struct {
		readBack string
		ok       bool
	}{{"5", true}, {"10", true}, {"4", false}, {"off", false}}
	for _, tc := range tests {
		t.Run(tc.readBack, func(t *testing.T) {
			h := newHarness(t, nil)
			h.addController("nvme0", nqnA)
			// What the kernel prints after the write of 5.
			sysfstest.SetAttr(t, h.root, "nvme0", "ctrl_loss_tmo", tc.readBack)
			err := h.loop.checkCtrlLossTmo("nvme0", 5)
			if (err == nil) != tc.ok {
				t.Errorf("read back %s after writing 5: err %v, want ok=%v", tc.readBack, err, tc.ok)
			}
		})
	}
}

// NodeStage tracks a volume as soon as its device is there, which can be
// before the loop has handled the uevents of the controller the stage just
// made: the volume must be judged from sysfs, not from the loop's stale
// table, or it would be taken for lost and needlessly repaired.
func TestAVolumeTrackedBeforeTheLoopSawItsNewControllerIsNotLost(t *testing.T) {
	tests := []struct {
		name  string
		state string
		want  State
	}{
		{"a live controller", "live", StateLive},
		{"a controller still connecting", "connecting", StateReconnecting},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			h.loop.begin()
			sysfstest.AddController(t, h.root, sysfstest.Controller{Name: "nvme0", SubsysNQN: nqnA, State: tc.state})
			if tc.state == "live" {
				h.addNamespace("nvme0", "259:0")
			}
			h.track(volA)
			h.wantState("pvc-a", tc.want)

			// The stage's uevents reach the loop late.
			h.loop.handleEvent(ctrlEvent("add", "nvme0", nil))
			if tc.state == "live" {
				h.loop.handleEvent(ctrlEvent("change", "nvme0", connected))
				h.loop.handleEvent(blockEvent("add", "nvme0n1", "259", "0"))
			}
			h.wantState("pvc-a", tc.want)
			if n := h.repairer.calls.Load(); n != 0 {
				t.Errorf("repair called %d times for a volume that was never lost", n)
			}
			h.wantMetric("rds_node_controller_losses_total", map[string]string{"volume": "pvc-a"}, 0)
			// The first connect is not a reconnect, however late its event.
			h.wantMetric("rds_node_reconnects_total", map[string]string{"volume": "pvc-a"}, 0)
		})
	}
}

// The kernel answers ENODEV for the attributes of a controller it is
// deleting. Whichever path reads them first, that is the controller going,
// not an unreadable sysfs: the volume is lost (and repaired), never unknown.
func TestAControllerAnsweringENODEVIsGoneNotAScanError(t *testing.T) {
	tests := []struct {
		name string
		step func(h *harness)
	}{
		{"the state scan", func(h *harness) { h.loop.scan() }},
		{"a full rescan after lost uevents", func(h *harness) { h.loop.rescan() }},
		{"the controller's change event", func(h *harness) { h.loop.handleEvent(ctrlEvent("change", "nvme0", nil)) }},
		{"the disk's remove event", func(h *harness) { h.loop.handleEvent(blockEvent("remove", "nvme0n1", "259", "0")) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := liveVolume(t, func(c *Config) { c.Repairer = nil })
			h.faults.Fail(t, h.root, "class/nvme/nvme0", syscall.ENODEV)
			tc.step(h)
			h.wantState("pvc-a", StateLost)
			h.wantMetric("rds_node_scan_errors_total", nil, 0)
			h.wantMetric("rds_node_controller_losses_total", map[string]string{"volume": "pvc-a"}, 1)
		})
	}
}

// The same holds for a repair: it returns once its new controller and
// device exist, which can be before the loop handled their uevents. The
// outcome is judged from sysfs, or a successful repair would read failed.
func TestARepairJudgedBeforeTheLoopSawItsNewControllerIsLive(t *testing.T) {
	h := liveVolume(t, nil)
	h.repairer.fn = func(context.Context, Volume) error {
		h.addController("nvme1", nqnA)
		h.addNamespace("nvme1", "259:1")
		return nil
	}
	sysfstest.RemoveController(t, h.root, "nvme0", sysfstest.RemoveAll)
	h.loop.handleEvent(ctrlEvent("remove", "nvme0", nil))
	h.runInbox()
	got := h.wantState("pvc-a", StateLive)
	if got.Controller != "nvme1" || got.Device != "259:1" {
		t.Errorf("health %+v, want live on nvme1 with device 259:1", got)
	}
	h.wantMetric("rds_node_heal_actions_total", map[string]string{"kind": KindRepair, "result": "ok"}, 1)
}
