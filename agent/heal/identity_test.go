package heal

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/rds-csi/rds-csi/kernel/sysfs"
	"github.com/rds-csi/rds-csi/kernel/sysfs/sysfstest"
)

// recorder is a Notifier that keeps every transition.
type recorder struct{ got []Transition }

func (r *recorder) Notify(t Transition) { r.got = append(r.got, t) }

// A namespace that answers to the volume's NQN and NSID with another
// identity is never the volume: the loop does not take it for live (the
// kernel shows a live controller and a disk), it calls the repair, and when
// the repair refuses it as another disk the volume stays failed — neither
// the next scan nor a storage link coming back starts another repair, and
// the Notifier is told which disk answered.
func TestAnotherDiskUnderTheVolumesNQNIsNeverLive(t *testing.T) {
	staged := sysfs.Identity{WWID: "uuid.aaaa", UUID: "aaaa"}
	refuse := func(context.Context, Volume) error {
		return fmt.Errorf("namespace 1 is another disk: %w", ErrIdentityChanged)
	}
	// settled checks the end state: failed for another disk, and nothing
	// the kernel or a link does afterwards starts another repair.
	settled := func(t *testing.T, h *harness, rec *recorder) {
		t.Helper()
		got := h.wantState("pvc-a", StateFailed)
		if !strings.Contains(got.LastCause, "another disk") {
			t.Errorf("cause %q", got.LastCause)
		}
		if last := rec.got[len(rec.got)-1]; last.Health.State != StateFailed || !last.OtherDisk {
			t.Fatalf("last transition %+v, want failed with OtherDisk", last)
		}
		h.loop.scan()
		h.loop.rescan()
		h.loop.handleLink(LinkEvent{Interface: "eth1", Up: true})
		h.wantState("pvc-a", StateFailed)
		if n := h.repairer.calls.Load(); n != 1 {
			t.Fatalf("repair called %d times for another disk", n)
		}
	}
	v := volA
	v.Identity = staged

	t.Run("found when the volume is tracked", func(t *testing.T) {
		rec := &recorder{}
		h := newHarness(t, func(c *Config) { c.Notifier = rec })
		h.repairer.fn = refuse
		h.addController("nvme0", nqnA)
		sysfstest.AddNamespace(t, h.root, sysfstest.Namespace{Controller: "nvme0", Head: 1, NSID: 1, Dev: "259:0", UUID: "bbbb"})
		h.loop.begin()
		h.track(v)
		h.wantState("pvc-a", StateHealing)
		if len(rec.got) < 2 || rec.got[0].Health.State != StateLost ||
			!strings.Contains(rec.got[0].Health.LastCause, "uuid.aaaa") || !strings.Contains(rec.got[0].Health.LastCause, "uuid.bbbb") {
			t.Fatalf("the volume was not lost for another disk, naming both: %+v", rec.got)
		}
		h.runInbox()
		settled(t, h, rec)
	})

	t.Run("replaced under a live volume", func(t *testing.T) {
		rec := &recorder{}
		h := newHarness(t, func(c *Config) { c.Notifier = rec })
		h.addController("nvme0", nqnA)
		sysfstest.AddNamespace(t, h.root, sysfstest.Namespace{Controller: "nvme0", Head: 1, NSID: 1, Dev: "259:0", UUID: "aaaa"})
		h.loop.begin()
		h.track(v)
		h.wantState("pvc-a", StateLive)
		// The kernel drops the namespace and finds another under the NSID.
		h.repairer.fn = refuse
		sysfstest.RemoveDisk(t, h.root, "nvme0n1")
		h.loop.handleEvent(blockEvent("remove", "nvme0n1", "259", "0"))
		sysfstest.AddNamespace(t, h.root, sysfstest.Namespace{Controller: "nvme0", Head: 2, NSID: 1, Dev: "259:1", UUID: "bbbb"})
		h.loop.handleEvent(blockEvent("add", "nvme0n2", "259", "1"))
		h.wantState("pvc-a", StateHealing)
		h.runInbox()
		settled(t, h, rec)
	})
}
