package heal

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rds-csi/rds-csi/kernel/sysfs/sysfstest"
)

// recordingNotifier keeps what the loop tells it.
type recordingNotifier struct {
	mu  sync.Mutex
	got []Transition
}

func (n *recordingNotifier) Notify(t Transition) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.got = append(n.got, t)
}

func (n *recordingNotifier) transitions() []Transition {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]Transition(nil), n.got...)
}

var volWithPVC = Volume{VolumeID: "pvc-a", NQN: nqnA, NSID: 1, PVCNamespace: "team-a", PVCName: "data"}

// liveVolumeNotifying is liveVolume with a PVC and a recording notifier.
func liveVolumeNotifying(t *testing.T) (*harness, *recordingNotifier) {
	t.Helper()
	n := &recordingNotifier{}
	h := newHarness(t, func(c *Config) { c.Notifier = n })
	h.addController("nvme0", nqnA)
	h.addNamespace("nvme0", "259:0")
	h.loop.begin()
	h.track(volWithPVC)
	h.wantState("pvc-a", StateLive)
	return h, n
}

func (h *harness) loseController(ctrl string) {
	h.t.Helper()
	sysfstest.RemoveController(h.t, h.root, ctrl, sysfstest.RemoveAll)
	h.loop.handleEvent(ctrlEvent("remove", ctrl, nil))
}

func TestTheNotifierHearsALossAndItsHealInOrderWithTheVolumesPVC(t *testing.T) {
	h, n := liveVolumeNotifying(t)
	h.clock.advance(time.Minute)
	lostAt := h.clock.now()
	h.repairer.fn = func(context.Context, Volume) error {
		h.clock.advance(3 * time.Second)
		h.addController("nvme1", nqnA)
		h.addNamespace("nvme1", "259:1")
		return nil
	}
	h.loseController("nvme0")
	h.runInbox()
	h.wantState("pvc-a", StateLive)

	got := n.transitions()
	want := []struct{ from, to State }{
		{StateUnknown, StateLive}, {StateLive, StateLost}, {StateLost, StateHealing}, {StateHealing, StateLive},
	}
	if len(got) != len(want) {
		t.Fatalf("notified %d transitions %+v, want %d", len(got), got, len(want))
	}
	for i, w := range want {
		if got[i].From != w.from || got[i].Health.State != w.to {
			t.Errorf("transition %d: %s -> %s, want %s -> %s", i, got[i].From, got[i].Health.State, w.from, w.to)
		}
		if got[i].Volume != volWithPVC {
			t.Errorf("transition %d of %+v, want the tracked volume with its PVC", i, got[i].Volume)
		}
		if got[i].Stuck {
			t.Errorf("transition %d says stuck", i)
		}
	}
	if !got[0].LostAt.IsZero() {
		t.Errorf("the first live says lost at %v", got[0].LostAt)
	}
	healed := got[3]
	if !healed.LostAt.Equal(lostAt) || healed.Health.Since.Sub(healed.LostAt) != 3*time.Second {
		t.Errorf("healed: lost at %v, live at %v; want lost at %v and 3s without a controller", healed.LostAt, healed.Health.Since, lostAt)
	}

	// A later outage the kernel heals by itself is no heal.
	sysfstest.SetState(t, h.root, "nvme1", "connecting")
	h.loop.scan()
	sysfstest.SetState(t, h.root, "nvme1", "live")
	h.loop.scan()
	if last := n.transitions()[len(n.transitions())-1]; last.Health.State != StateLive || !last.LostAt.IsZero() {
		t.Errorf("a kernel reconnect reported as %+v", last)
	}
}

func TestTheNotifierHearsWhetherAFailedRepairLeftConsumersStuck(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		wantStuck bool
	}{
		{"the target does not answer", errors.New("no route to target"), false},
		{"a mounted filesystem holds the old device", fmt.Errorf("reconnected, but %w", ErrConsumersStuck), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, n := liveVolumeNotifying(t)
			h.repairer.fn = func(context.Context, Volume) error { return tc.err }
			h.loseController("nvme0")
			h.runInbox()
			got := n.transitions()
			last := got[len(got)-1]
			if last.From != StateHealing || last.Health.State != StateFailed || last.Stuck != tc.wantStuck {
				t.Fatalf("last transition %s -> %s stuck %v, want healing -> failed stuck %v", last.From, last.Health.State, last.Stuck, tc.wantStuck)
			}
			if last.Health.LastCause == "" {
				t.Error("a failed repair without a cause")
			}
		})
	}
}
