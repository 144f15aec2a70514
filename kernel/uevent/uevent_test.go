package uevent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rds-csi/rds-csi/kernel/loop"
)

// requireLoop skips unless this machine can make loop devices, whose attach
// is the cheapest way to make the kernel send real block uevents.
func requireLoop(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("real uevent tests need root to attach loop devices")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("no /dev/loop-control, cannot make the kernel send block uevents: %v", err)
	}
}

func backingFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 1<<20); err != nil {
		t.Fatal(err)
	}
	return path
}

func attach(t *testing.T, file string) string {
	t.Helper()
	dev, err := loop.Attach(context.Background(), file)
	if err != nil {
		t.Errorf("attach: %v", err)
		return ""
	}
	t.Cleanup(func() { _ = loop.Detach(context.Background(), dev) })
	return dev
}

func isLoopBlockEvent(ev Event) bool {
	return ev.Subsystem == "block" && strings.HasPrefix(ev.DevName, "loop")
}

// awaitEventFor reads sub until an event for the device name arrives.
func awaitEventFor(t *testing.T, sub *Subscription, name string) Event {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-sub.Events():
			if !ok {
				t.Fatal("subscription closed while waiting")
			}
			if ev.DevName == name {
				return ev
			}
		case <-timeout:
			t.Fatalf("no uevent for %s within 10s: kernel uevents are not reaching this process "+
				"(a network namespace outside the initial user namespace gets none)", name)
		}
	}
}

func TestRealUeventsReachEverySubscriber(t *testing.T) {
	requireLoop(t)
	m, err := Start(t.Context())
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	first := m.Subscribe(isLoopBlockEvent)
	second := m.Subscribe(isLoopBlockEvent)
	defer first.Cancel()
	defer second.Cancel()

	dev := attach(t, backingFile(t))
	name := filepath.Base(dev)
	for i, sub := range []*Subscription{first, second} {
		ev := awaitEventFor(t, sub, name)
		if ev.Action != "change" && ev.Action != "add" {
			t.Errorf("subscriber %d: action %q, want add or change", i, ev.Action)
		}
		if ev.Seq == 0 || !strings.HasSuffix(ev.DevPath, "/"+name) || ev.Env["MAJOR"] == "" {
			t.Errorf("subscriber %d: event not filled in: %+v", i, ev)
		}
	}
}

func TestWaitForWakesOnARealUevent(t *testing.T) {
	requireLoop(t)
	m, err := Start(t.Context())
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	file := backingFile(t)
	var checks atomic.Int32
	attached := make(chan string, 1)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err = WaitFor(ctx, m, isLoopBlockEvent, func() (bool, error) {
		if checks.Add(1) == 1 {
			// Make the device appear only once the wait is under way, so
			// only an event can end it.
			go func() { attached <- attach(t, file) }()
			return false, nil
		}
		devs, err := loop.Find(file)
		return len(devs) > 0, err
	})
	if err != nil {
		t.Fatalf("WaitFor: %v (kernel uevents may not reach this process)", err)
	}
	<-attached
	if checks.Load() < 2 {
		t.Fatalf("check ran %d times; the wait ended without being woken", checks.Load())
	}
}

func TestCancelledSubscriptionsAreClosedAndSkipped(t *testing.T) {
	m := newMonitor()
	sub := m.Subscribe(nil)
	sub.Cancel()
	sub.Cancel() // a second cancel is harmless
	m.dispatch(Event{Seq: 1})
	if _, ok := <-sub.Events(); ok {
		t.Fatal("a cancelled subscription received an event")
	}
	if len(m.subs) != 0 {
		t.Fatalf("%d subscriptions still registered", len(m.subs))
	}
}

func TestFiltersChooseWhatEachSubscriberGets(t *testing.T) {
	m := newMonitor()
	nvme := m.Subscribe(func(ev Event) bool { return ev.Subsystem == "nvme" })
	all := m.Subscribe(nil)
	for i, subsystem := range []string{"nvme", "block", "nvme"} {
		m.dispatch(Event{Subsystem: subsystem, Seq: uint64(i + 1)})
	}
	if got := drained(nvme); len(got) != 2 || got[0].Seq != 1 || got[1].Seq != 3 {
		t.Fatalf("nvme subscriber got %+v, want events 1 and 3", got)
	}
	if got := drained(all); len(got) != 3 {
		t.Fatalf("unfiltered subscriber got %d events, want 3", len(got))
	}
}

func TestASlowSubscriberLosesEventsWithoutDelayingOthers(t *testing.T) {
	m := newMonitor()
	slow := m.Subscribe(nil)
	fast := m.Subscribe(nil)
	total := QueueSize + 10
	for i := 1; i <= total; i++ {
		m.dispatch(Event{Seq: uint64(i)})
		select {
		case ev := <-fast.Events():
			if ev.Seq != uint64(i) {
				t.Fatalf("fast subscriber got event %d, want %d", ev.Seq, i)
			}
		default:
			t.Fatalf("event %d did not reach the fast subscriber at once", i)
		}
	}
	select {
	case <-fast.Lost():
		t.Fatal("the fast subscriber was told it lost events")
	default:
	}
	select {
	case <-slow.Lost():
	default:
		t.Fatal("the slow subscriber was not told it lost events")
	}
	got := drained(slow)
	if len(got) != QueueSize || got[0].Seq != 1 || got[QueueSize-1].Seq != QueueSize {
		t.Fatalf("slow subscriber kept %d events, want the first %d in order", len(got), QueueSize)
	}
}

func TestStoppingTheMonitorClosesSubscriptions(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	m, err := Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sub := m.Subscribe(nil)
	cancel()
	select {
	case <-m.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("monitor did not stop within 5s of its context ending")
	}
	for range sub.Events() {
	}
	if _, ok := <-m.Subscribe(nil).Events(); ok {
		t.Fatal("subscribing to a stopped monitor gave an open subscription")
	}
}

func TestWaitFor(t *testing.T) {
	errBroken := errors.New("broken")
	tests := []struct {
		name string
		// act runs after the first check, on the monitor, as the kernel would.
		act     func(m *Monitor)
		check   func(calls int) (bool, error)
		timeout time.Duration
		wantErr error
		// wantChecks is how many times check must have run.
		wantChecks int
	}{
		{
			name:       "a state already reached returns after one check",
			check:      func(int) (bool, error) { return true, nil },
			wantChecks: 1,
		},
		{
			name:       "a matching event triggers a new check",
			act:        func(m *Monitor) { m.dispatch(Event{Subsystem: "block"}) },
			check:      func(calls int) (bool, error) { return calls == 2, nil },
			wantChecks: 2,
		},
		{
			name: "an event the filter rejects does not trigger a check",
			act:  func(m *Monitor) { m.dispatch(Event{Subsystem: "net"}) },
			check: func(calls int) (bool, error) {
				return calls > 1, nil
			},
			timeout:    100 * time.Millisecond,
			wantErr:    context.DeadlineExceeded,
			wantChecks: 1,
		},
		{
			name:       "lost events trigger a new check",
			act:        func(m *Monitor) { m.lostAll() },
			check:      func(calls int) (bool, error) { return calls == 2, nil },
			wantChecks: 2,
		},
		{
			name:       "a failing check ends the wait with its error",
			check:      func(int) (bool, error) { return false, errBroken },
			wantErr:    errBroken,
			wantChecks: 1,
		},
		{
			name:       "the deadline ends the wait",
			check:      func(int) (bool, error) { return false, nil },
			timeout:    100 * time.Millisecond,
			wantErr:    context.DeadlineExceeded,
			wantChecks: 1,
		},
		{
			name:       "a stopping monitor ends the wait",
			act:        func(m *Monitor) { m.stop() },
			check:      func(int) (bool, error) { return false, nil },
			wantErr:    ErrStopped,
			wantChecks: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMonitor()
			timeout := tt.timeout
			if timeout == 0 {
				timeout = 5 * time.Second
			}
			ctx, cancel := context.WithTimeout(t.Context(), timeout)
			defer cancel()
			calls := 0
			err := WaitFor(ctx, m, func(ev Event) bool { return ev.Subsystem == "block" }, func() (bool, error) {
				calls++
				if calls == 1 {
					// The subscription must exist before the first check, or
					// an event between check and subscribe would be missed.
					m.mu.Lock()
					subscribed := len(m.subs)
					m.mu.Unlock()
					if subscribed != 1 {
						t.Errorf("first check ran with %d subscriptions, want 1", subscribed)
					}
					if tt.act != nil {
						go tt.act(m)
					}
				}
				return tt.check(calls)
			})
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("WaitFor = %v, want %v", err, tt.wantErr)
			}
			if calls != tt.wantChecks {
				t.Fatalf("check ran %d times, want %d", calls, tt.wantChecks)
			}
		})
	}
}

func drained(s *Subscription) []Event {
	var got []Event
	for {
		select {
		case ev := <-s.Events():
			got = append(got, ev)
		default:
			return got
		}
	}
}
