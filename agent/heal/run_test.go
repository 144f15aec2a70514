package heal

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rds-csi/rds-csi/kernel/sysfs"
	"github.com/rds-csi/rds-csi/kernel/sysfs/sysfstest"
	"github.com/rds-csi/rds-csi/kernel/uevent"
)

func TestRunActsOnInjectedEventsAndRescansAfterLostOnes(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Repairer = nil; c.ScanInterval = time.Hour })
	h.addController("nvme0", nqnA)
	h.addNamespace("nvme0", "259:0")
	if err := h.loop.Track(volA); err != nil {
		t.Fatal(err)
	}
	h.run()
	h.eventually("volume live", func() bool { return h.state("pvc-a") == StateLive })

	sysfstest.RemoveController(t, h.root, "nvme0", sysfstest.RemoveAll)
	h.sub.events <- ctrlEvent("remove", "nvme0", nil)
	h.eventually("volume lost on the event", func() bool { return h.state("pvc-a") == StateLost })

	// The reconnect's events are dropped: only the lost notice arrives.
	h.addController("nvme1", nqnA)
	h.addNamespace("nvme1", "259:1")
	h.sub.lost <- struct{}{}
	h.eventually("volume live after the rescan", func() bool { return h.state("pvc-a") == StateLive })
	if got, _ := h.loop.Health("pvc-a"); got.Device != "259:1" || got.Controller != "nvme1" {
		t.Errorf("health %+v, want device 259:1 on nvme1", got)
	}
}

func TestRunSubscribesBeforeReadingSysfs(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Repairer = nil; c.ScanInterval = time.Hour })
	if err := h.loop.Track(volA); err != nil {
		t.Fatal(err)
	}
	// The volume connects just as the loop subscribes: its events are
	// gone, so only reading sysfs after subscribing can find it.
	h.loop.subscribe = func() eventSource {
		h.addController("nvme0", nqnA)
		h.addNamespace("nvme0", "259:0")
		return h.sub
	}
	h.run()
	h.eventually("volume evaluated", func() bool { return h.state("pvc-a") != StateUnknown })
	if got := h.state("pvc-a"); got != StateLive {
		t.Fatalf("state %s: the enumeration ran before the subscription", got)
	}
}

func TestTrackAndUntrackAreSafeFromManyGoroutinesWhileTheLoopRuns(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.ScanInterval = time.Millisecond })
	h.addController("nvme0", nqnA)
	h.addNamespace("nvme0", "259:0")
	h.run()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				id := fmt.Sprintf("pvc-%d-%d", g, i%5)
				if err := h.loop.Track(Volume{VolumeID: id, NQN: nqnA, NSID: 1}); err != nil {
					t.Error(err)
					return
				}
				h.loop.Health(id)
				h.loop.Snapshot()
				if i%3 == 0 {
					h.loop.Untrack(id)
				}
				if i%20 == 0 {
					h.sub.events <- ctrlEvent("change", "nvme0", connected)
				}
			}
		})
	}
	wg.Wait()
	for g := range 8 {
		for i := range 5 {
			h.loop.Untrack(fmt.Sprintf("pvc-%d-%d", g, i))
		}
	}
	if snap := h.loop.Snapshot(); len(snap) != 0 {
		t.Fatalf("%d volumes still reported after untracking all", len(snap))
	}
	h.eventually("every volume series gone", func() bool {
		_, ok := h.metric("rds_node_controller_state", nil)
		_, ok2 := h.metric("rds_node_reconnects_total", nil)
		return !ok && !ok2
	})
}

func TestMetricsExistOnlyForTrackedVolumes(t *testing.T) {
	h := liveVolume(t, nil)
	h.track(Volume{VolumeID: "pvc-b", NQN: nqnB, NSID: 1}) // lost: no controller
	perVolume := []string{"rds_node_controller_state", "rds_node_reconnects_total",
		"rds_node_controller_losses_total", "rds_node_renumberings_total"}
	for _, name := range perVolume {
		if _, ok := h.metric(name, map[string]string{"volume": "pvc-a"}); !ok {
			t.Errorf("%s missing for a tracked volume", name)
		}
	}
	h.loop.Untrack("pvc-a")
	h.loop.applyTracking()
	for _, name := range perVolume {
		if _, ok := h.metric(name, map[string]string{"volume": "pvc-a"}); ok {
			t.Errorf("%s still present after untrack", name)
		}
		if _, ok := h.metric(name, map[string]string{"volume": "pvc-b"}); !ok {
			t.Errorf("%s of the other volume went too", name)
		}
	}
	if _, ok := h.metric("rds_node_controller_state", map[string]string{"volume": "never-tracked"}); ok {
		t.Error("a series for a volume never tracked")
	}
}

func TestHealthAndTrackNeverWaitForABusyLoop(t *testing.T) {
	h := newHarness(t, nil)
	h.addController("nvme0", nqnA)
	h.addNamespace("nvme0", "259:0")
	if err := h.loop.Track(volA); err != nil {
		t.Fatal(err)
	}
	h.run()
	h.eventually("volume live", func() bool { return h.state("pvc-a") == StateLive })

	release := make(chan struct{})
	busy := make(chan struct{})
	h.loop.inbox <- func() { close(busy); <-release } // a handler that hangs
	<-busy
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.loop.Health("pvc-a")
		h.loop.Snapshot()
		_ = h.loop.Track(Volume{VolumeID: "pvc-b", NQN: nqnB, NSID: 1})
		h.loop.Untrack("pvc-b")
		h.loop.Hold(nqnB)()
	}()
	select {
	case <-done:
	case <-time.After(waitLimit):
		t.Error("a reader waited for the busy loop")
	}
	close(release)
}

func TestTrackRefusesVolumesOutsideTheManagedPrefix(t *testing.T) {
	h := newHarness(t, nil)
	for _, v := range []Volume{
		{VolumeID: "x", NQN: foreignNQN, NSID: 1},
		{VolumeID: "", NQN: nqnA, NSID: 1},
		{VolumeID: "x", NQN: nqnA, NSID: 0},
	} {
		if err := h.loop.Track(v); err == nil {
			t.Errorf("Track(%+v) accepted", v)
		}
	}
	if len(h.loop.Snapshot()) != 0 {
		t.Error("a refused volume is reported")
	}
}

func TestStatusServesATableAndJSON(t *testing.T) {
	h := liveVolume(t, nil)
	handler := StatusHandler(h.loop)

	rec := httptest.NewRecorder()
	handler.ServeHTTP(rec, httptest.NewRequest("GET", "/status", nil))
	text := rec.Body.String()
	for _, want := range []string{"VOLUME", "LAST HEAL", "pvc-a", nqnA, "nvme0", "259:0", "live"} {
		if !strings.Contains(text, want) {
			t.Errorf("table lacks %q:\n%s", want, text)
		}
	}

	rec = httptest.NewRecorder()
	handler.ServeHTTP(rec, httptest.NewRequest("GET", "/status?format=json", nil))
	var got []Health
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatalf("json: %v\n%s", err, rec.Body.String())
	}
	if len(got) != 1 || got[0].VolumeID != "pvc-a" || got[0].State != StateLive || got[0].Device != "259:0" {
		t.Errorf("json %+v", got)
	}

	rec = httptest.NewRecorder()
	handler.ServeHTTP(rec, httptest.NewRequest("GET", "/status?format=yaml", nil))
	if rec.Code != 400 {
		t.Errorf("unknown format answered %d", rec.Code)
	}
}

func TestOnlyNVMeEventsReachTheLoop(t *testing.T) {
	tests := []struct {
		ev   uevent.Event
		want bool
	}{
		{uevent.Event{Subsystem: "nvme", DevName: "nvme0"}, true},
		{uevent.Event{Subsystem: "nvme-subsystem", DevPath: "/devices/virtual/nvme-subsystem/nvme-subsys0"}, true},
		{uevent.Event{Subsystem: "block", DevName: "nvme0n1"}, true},
		{uevent.Event{Subsystem: "block", DevName: "loop3", DevPath: "/devices/virtual/block/loop3"}, false},
		{uevent.Event{Subsystem: "block", DevName: "dm-0", DevPath: "/devices/virtual/block/dm-0"}, false},
		{uevent.Event{Subsystem: "net", DevPath: "/devices/virtual/net/veth1"}, false},
	}
	for _, tc := range tests {
		if got := relevant(tc.ev); got != tc.want {
			t.Errorf("relevant(%+v) = %v, want %v", tc.ev, got, tc.want)
		}
	}
}

func TestAPrefixThatWouldClaimOtherVendorsIsRefused(t *testing.T) {
	for _, p := range []string{"", "nqn.", "nqn.2000-02.com.mikrotik", "mikrotik:"} {
		if _, err := newLoop(Config{Sysfs: sysfs.Tree{Root: t.TempDir()}, ManagedNQNPrefix: p}, nil); err == nil {
			t.Errorf("prefix %q accepted", p)
		}
	}
}
