// Package uevent delivers the kernel's device events (uevents) to any number
// of subscribers.
//
// It listens on the kernel's netlink group, not udev's: the agent must not
// depend on a udev daemon, and kernel events reach a hostNetwork pod while
// udev's do not. One socket is shared; each subscriber has its own bounded
// queue so that a slow one never delays the others. A subscriber that falls
// behind loses events and is told so on Lost, and must then rescan the state
// it cares about; the socket itself can overflow too (the kernel drops
// events when its receive queue is full), which is reported the same way to
// every subscriber.
//
// The intended use is the subscribe, enumerate, loop idiom: subscribe first,
// then read the current state, then act on events. WaitFor packages it.
package uevent

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/pilebones/go-udev/netlink"
	"k8s.io/klog/v2"
)

// Event is one kernel uevent.
type Event struct {
	Action    string // add, remove, change, bind, unbind, move, online, offline
	Subsystem string // block, nvme, nvme-subsystem...
	DevPath   string // the sysfs path below /sys, e.g. /devices/virtual/block/loop0
	DevName   string // the /dev name when there is one, e.g. nvme0n1
	Env       map[string]string
	Seq       uint64 // the kernel's SEQNUM, increasing across all events
}

// QueueSize is how many events a subscriber may have pending before it
// starts losing them. Connecting one NVMe namespace makes about five events;
// a node reboot with many volumes makes a few hundred.
const QueueSize = 1024

// ErrStopped is returned by WaitFor when the monitor stopped before the wait
// was over.
var ErrStopped = errors.New("uevent monitor stopped")

// Monitor reads kernel uevents and fans them out to subscribers.
type Monitor struct {
	mu      sync.Mutex
	subs    map[*Subscription]struct{}
	stopped bool
	done    chan struct{}
}

// Subscription receives the events its filter accepts.
type Subscription struct {
	monitor *Monitor
	filter  func(Event) bool
	events  chan Event
	lost    chan struct{}
	once    sync.Once
}

// Events delivers matching events in the kernel's order. It is closed when
// the subscription is cancelled or the monitor stops.
func (s *Subscription) Events() <-chan Event { return s.events }

// Lost receives a value after events were dropped for this subscriber,
// either because it fell behind or because the kernel overflowed the socket.
// Whatever the subscriber tracks must then be rescanned. Several losses in a
// row are reported once.
func (s *Subscription) Lost() <-chan struct{} { return s.lost }

// Cancel ends the subscription and closes Events. It may be called more than
// once.
func (s *Subscription) Cancel() {
	s.monitor.mu.Lock()
	defer s.monitor.mu.Unlock()
	s.closeLocked()
}

func (s *Subscription) closeLocked() {
	s.once.Do(func() {
		delete(s.monitor.subs, s)
		close(s.events)
	})
}

// Subscribe registers a subscriber for the events filter accepts. filter runs
// on the monitor's goroutine for every event, so it must be quick and must
// not block or call Cancel. A nil filter accepts everything.
func (m *Monitor) Subscribe(filter func(Event) bool) *Subscription {
	s := &Subscription{
		monitor: m,
		filter:  filter,
		events:  make(chan Event, QueueSize),
		lost:    make(chan struct{}, 1),
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		close(s.events)
		return s
	}
	m.subs[s] = struct{}{}
	return s
}

// Done is closed once the monitor has stopped and closed every subscription.
func (m *Monitor) Done() <-chan struct{} { return m.done }

func newMonitor() *Monitor {
	return &Monitor{subs: map[*Subscription]struct{}{}, done: make(chan struct{})}
}

// dispatch hands ev to every subscriber that wants it, without ever waiting
// on one. Tests call it directly to stand in for the kernel.
func (m *Monitor) dispatch(ev Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for s := range m.subs {
		if s.filter != nil && !s.filter(ev) {
			continue
		}
		select {
		case s.events <- ev:
		default:
			signal(s.lost)
		}
	}
}

// lostAll tells every subscriber that events were dropped before reaching
// the monitor.
func (m *Monitor) lostAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for s := range m.subs {
		signal(s.lost)
	}
}

func (m *Monitor) stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stopped = true
	for s := range m.subs {
		s.closeLocked()
	}
	close(m.done)
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default: // already pending
	}
}

// reconnectDelay is the pause before reopening the socket after it failed,
// so a persistent failure does not spin.
const reconnectDelay = time.Second

// Start opens the kernel uevent socket and delivers events until ctx ends.
// Events that happen after Start returns are never missed by a subscriber
// registered before they happen, unless it is told so on Lost.
func Start(ctx context.Context) (*Monitor, error) {
	conn, err := connect()
	if err != nil {
		return nil, err
	}
	m := newMonitor()
	go m.run(ctx, conn)
	return m, nil
}

func connect() (*netlink.UEventConn, error) {
	conn := &netlink.UEventConn{}
	if err := conn.Connect(netlink.KernelEvent); err != nil {
		return nil, fmt.Errorf("open the kernel uevent socket: %w", err)
	}
	return conn, nil
}

// run reads the socket until ctx ends. If reading fails (the kernel reports
// ENOBUFS after dropping events for a full queue), subscribers are told they
// lost events and a new socket is opened.
func (m *Monitor) run(ctx context.Context, conn *netlink.UEventConn) {
	defer m.stop()
	for {
		m.read(ctx, conn)
		_ = conn.Close()
		if ctx.Err() != nil {
			return
		}
		m.lostAll()
		for {
			var err error
			if conn, err = connect(); err == nil {
				break
			}
			klog.ErrorS(err, "Reopening the kernel uevent socket failed, retrying", "delay", reconnectDelay)
			select {
			case <-ctx.Done():
				return
			case <-time.After(reconnectDelay):
			}
		}
		// Events between the failure and the new socket are gone too; the
		// subscribers were told above and rescan after this point.
	}
}

// read delivers events from conn until ctx ends or the socket fails.
func (m *Monitor) read(ctx context.Context, conn *netlink.UEventConn) {
	readCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	queue := make(chan netlink.UEvent)
	errs := make(chan error)
	go conn.MonitorWithContext(readCtx, queue, errs, nil)
	for {
		select {
		case raw, ok := <-queue:
			if !ok {
				return // ctx ended or the socket failed; the error came on errs
			}
			m.dispatch(fromNetlink(raw))
		case err := <-errs:
			// Dropped messages (forged or truncated) only concern the
			// message itself; a fatal error is followed by queue closing.
			klog.V(2).InfoS("Kernel uevent socket reported an error", "err", err)
			if errors.Is(err, netlink.ErrTruncatedMessage) {
				m.lostAll()
			}
		}
	}
}

func fromNetlink(raw netlink.UEvent) Event {
	seq, _ := strconv.ParseUint(raw.Env["SEQNUM"], 10, 64)
	devPath := raw.Env["DEVPATH"]
	if devPath == "" {
		devPath = raw.KObj
	}
	return Event{
		Action:    string(raw.Action),
		Subsystem: raw.Env["SUBSYSTEM"],
		DevPath:   devPath,
		DevName:   raw.Env["DEVNAME"],
		Env:       raw.Env,
		Seq:       seq,
	}
}

// WaitFor waits until check reports done. It subscribes first and checks
// after, so a change that happens between the two is seen either by the
// check or as an event: it cannot fall in a gap. check runs once at the
// start, after every event filter accepts, and after any loss of events. It
// returns check's error, ErrStopped if the monitor stops, or an error
// wrapping ctx.Err() at ctx's end. There is no polling: if the change the
// caller waits for makes no uevent, this waits until ctx ends.
func WaitFor(ctx context.Context, m *Monitor, filter func(Event) bool, check func() (done bool, err error)) error {
	return WaitPolling(ctx, m, filter, 0, check)
}

// WaitPolling is WaitFor that also checks every interval when no event
// comes, for conditions that can change without one, or that check itself
// acts on (a check that asks the kernel to look again); 0 checks on events
// only.
func WaitPolling(ctx context.Context, m *Monitor, filter func(Event) bool, interval time.Duration, check func() (done bool, err error)) error {
	sub := m.Subscribe(filter)
	defer sub.Cancel()
	var tick <-chan time.Time
	if interval > 0 {
		t := time.NewTicker(interval)
		defer t.Stop()
		tick = t.C
	}
	for {
		done, err := check()
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for a device event: %w", ctx.Err())
		case <-sub.Lost():
		case <-tick:
		case _, ok := <-sub.Events():
			if !ok {
				return ErrStopped
			}
			drain(sub.Events()) // one check covers every event already queued
		}
	}
}

func drain(events <-chan Event) {
	for {
		select {
		case _, ok := <-events:
			if !ok {
				return
			}
		default:
			return
		}
	}
}
