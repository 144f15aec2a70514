package heal

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/rds-csi/rds-csi/kernel/sysfs"
	"github.com/rds-csi/rds-csi/kernel/sysfs/sysfstest"
	"github.com/rds-csi/rds-csi/kernel/uevent"
)

const (
	prefix     = "nqn.2000-02.com.mikrotik:"
	nqnA       = prefix + "pvc-a"
	nqnB       = prefix + "pvc-b"
	foreignNQN = "nqn.2014-08.org.example:someone-else"
	// waitLimit only bounds how long a broken test hangs; nothing is
	// asserted about timing.
	waitLimit = 5 * time.Second
)

var volA = Volume{VolumeID: "pvc-a", NQN: nqnA, NSID: 1}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fakeSub stands in for a uevent subscription.
type fakeSub struct {
	events chan uevent.Event
	lost   chan struct{}
}

func (s *fakeSub) Events() <-chan uevent.Event { return s.events }
func (s *fakeSub) Lost() <-chan struct{}       { return s.lost }
func (s *fakeSub) Cancel()                     {}

// fakeRepairer counts calls and runs fn (nil: succeed without doing anything).
type fakeRepairer struct {
	calls atomic.Int32
	fn    func(ctx context.Context, v Volume) error
}

func (r *fakeRepairer) Repair(ctx context.Context, v Volume, _ Health) error {
	r.calls.Add(1)
	if r.fn == nil {
		return nil
	}
	return r.fn(ctx, v)
}

type harness struct {
	t           testing.TB
	root        string
	clock       *fakeClock
	reg         *prometheus.Registry
	sub         *fakeSub
	loop        *Loop
	repairer    *fakeRepairer
	disconnects chan string
	faults      *sysfstest.Faults
}

// newHarness builds a loop over an empty fake sysfs. The loop is driven
// step by step (begin, handleEvent, scan...) unless run is called.
func newHarness(t testing.TB, configure func(*Config)) *harness {
	t.Helper()
	h := &harness{
		t:           t,
		root:        t.TempDir(),
		clock:       &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
		reg:         prometheus.NewRegistry(),
		sub:         &fakeSub{events: make(chan uevent.Event, 64), lost: make(chan struct{}, 1)},
		repairer:    &fakeRepairer{},
		disconnects: make(chan string, 16),
		faults:      &sysfstest.Faults{},
	}
	cfg := Config{
		Sysfs:            sysfs.Tree{Root: h.root, ReadFile: h.faults.ReadFile},
		ManagedNQNPrefix: prefix,
		OrphanGrace:      2 * time.Minute,
		Metrics:          NewMetrics(h.reg),
		Clock:            h.clock.now,
		Repairer:         h.repairer,
		Disconnect: func(_ context.Context, name string) error {
			// As the kernel does: the controller and its devices go.
			sysfstest.RemoveController(t, h.root, name, sysfstest.RemoveAll)
			h.disconnects <- name
			return nil
		},
	}
	if configure != nil {
		configure(&cfg)
	}
	l, err := newLoop(cfg, func() eventSource { return h.sub })
	if err != nil {
		t.Fatal(err)
	}
	h.loop = l
	t.Cleanup(func() {
		// Background work of a step-driven loop hands results to a loop
		// that never reads them; closing stopped lets it finish.
		if l.running.CompareAndSwap(false, true) {
			close(l.stopped)
		}
		l.cancelRepairs()
	})
	return h
}

// run starts Run; the test's end stops it and waits for it.
func (h *harness) run() {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.loop.Run(ctx) }()
	h.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				h.t.Errorf("Run: %v", err)
			}
		case <-time.After(waitLimit):
			h.t.Error("Run did not return after its context ended")
		}
	})
}

func (h *harness) addController(name, nqn string) {
	h.t.Helper()
	sysfstest.AddController(h.t, h.root, sysfstest.Controller{Name: name, SubsysNQN: nqn})
}

func (h *harness) addNamespace(ctrl, dev string) string {
	h.t.Helper()
	return sysfstest.AddNamespace(h.t, h.root, sysfstest.Namespace{Controller: ctrl, Head: 1, NSID: 1, Dev: dev})
}

func (h *harness) track(v Volume) {
	h.t.Helper()
	if err := h.loop.Track(v); err != nil {
		h.t.Fatal(err)
	}
	h.loop.applyTracking()
}

// runInbox runs the next result of background work (a repair or a
// disconnect) on the test goroutine, as the loop would.
func (h *harness) runInbox() {
	h.t.Helper()
	select {
	case fn := <-h.loop.inbox:
		fn()
	case <-time.After(waitLimit):
		h.t.Fatal("no background result arrived")
	}
}

func (h *harness) state(id string) State {
	h.t.Helper()
	got, ok := h.loop.Health(id)
	if !ok {
		h.t.Fatalf("volume %s has no health", id)
	}
	return got.State
}

func (h *harness) wantState(id string, want State) Health {
	h.t.Helper()
	got, ok := h.loop.Health(id)
	if !ok || got.State != want {
		h.t.Fatalf("volume %s: health %+v (found %v), want state %s", id, got, ok, want)
	}
	return got
}

// eventually polls cond for Run-driven tests.
func (h *harness) eventually(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func ctrlEvent(action, name string, env map[string]string) uevent.Event {
	return uevent.Event{Action: action, Subsystem: "nvme", DevName: name, DevPath: "/devices/virtual/nvme-fabrics/ctl/" + name, Env: env}
}

func blockEvent(action, name, major, minor string) uevent.Event {
	return uevent.Event{Action: action, Subsystem: "block", DevName: name, DevPath: "/devices/virtual/nvme-fabrics/ctl/x/" + name,
		Env: map[string]string{"MAJOR": major, "MINOR": minor}}
}

var connected = map[string]string{"NVME_EVENT": "connected"}

// metric finds the series of name whose labels include labels. For
// counters and gauges it returns the value, for histograms the count.
func (h *harness) metric(name string, labels map[string]string) (float64, bool) {
	h.t.Helper()
	families, err := h.reg.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !hasLabels(m, labels) {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue(), true
			case m.Gauge != nil:
				return m.Gauge.GetValue(), true
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount()), true
			}
		}
	}
	return 0, false
}

func (h *harness) wantMetric(name string, labels map[string]string, want float64) {
	h.t.Helper()
	got, ok := h.metric(name, labels)
	if !ok || got != want {
		h.t.Errorf("%s%v = %v (present %v), want %v", name, labels, got, ok, want)
	}
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	have := map[string]string{}
	for _, lp := range m.GetLabel() {
		have[lp.GetName()] = lp.GetValue()
	}
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

func histogramSum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetHistogram().GetSampleSum()
		}
	}
	return -1
}
