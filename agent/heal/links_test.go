package heal

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/rds-csi/rds-csi/kernel/sysfs/sysfstest"
)

func linkUpdate(name string, flags net.Flags, oper netlink.LinkOperState) netlink.LinkUpdate {
	return netlink.LinkUpdate{Link: &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: name, Flags: flags, OperState: oper}}}
}

func TestLinkUpdatesAreFilteredToTheStorageNICs(t *testing.T) {
	src := NetlinkLinks{Interfaces: []string{"eth1"}}
	tests := []struct {
		name   string
		update netlink.LinkUpdate
		want   LinkEvent
		wanted bool
	}{
		{"storage NIC up", linkUpdate("eth1", net.FlagUp, netlink.OperUp), LinkEvent{"eth1", true}, true},
		{"storage NIC carrier lost", linkUpdate("eth1", net.FlagUp, netlink.OperDown), LinkEvent{"eth1", false}, true},
		{"storage NIC set down", linkUpdate("eth1", 0, netlink.OperUp), LinkEvent{"eth1", false}, true},
		{"driver without operstate", linkUpdate("eth1", net.FlagUp, netlink.OperUnknown), LinkEvent{"eth1", true}, true},
		{"a pod's veth", linkUpdate("veth12", net.FlagUp, netlink.OperUp), LinkEvent{}, false},
		{"no link", netlink.LinkUpdate{}, LinkEvent{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, wanted := src.event(tc.update)
			if wanted != tc.wanted || got != tc.want {
				t.Errorf("event = %+v, %v; want %+v, %v", got, wanted, tc.want, tc.wanted)
			}
		})
	}
}

func TestRealLinkSubscriptionEndsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	events, err := NetlinkLinks{Interfaces: []string{"lo"}}.Subscribe(ctx)
	if err != nil {
		t.Skipf("no rtnetlink here: %v", err)
	}
	cancel()
	select {
	case _, ok := <-events:
		for ok {
			_, ok = <-events
		}
	case <-time.After(waitLimit):
		t.Fatal("the link channel stayed open after its context ended")
	}
}

type fakeLinks chan LinkEvent

func (f fakeLinks) Subscribe(context.Context) (<-chan LinkEvent, error) { return f, nil }

func TestRunRetriesAFailedRepairWhenAStorageLinkComesUp(t *testing.T) {
	links := make(fakeLinks, 1)
	h := newHarness(t, func(c *Config) { c.Links = links; c.ScanInterval = time.Hour })
	h.repairer.fn = func(context.Context, Volume) error { return errors.New("no route to target") }
	h.addController("nvme0", nqnA)
	h.addNamespace("nvme0", "259:0")
	if err := h.loop.Track(volA); err != nil {
		t.Fatal(err)
	}
	h.run()
	h.eventually("volume live", func() bool { return h.state("pvc-a") == StateLive })
	sysfstest.RemoveController(t, h.root, "nvme0", sysfstest.RemoveAll)
	h.sub.events <- ctrlEvent("remove", "nvme0", nil)
	h.eventually("repair failed", func() bool { return h.state("pvc-a") == StateFailed })
	links <- LinkEvent{Interface: "eth1", Up: true}
	h.eventually("second repair", func() bool { return h.repairer.calls.Load() == 2 })
}
