// Package heal is the node agent's single event loop and the health model of
// every staged volume.
//
// One goroutine (Run) owns all state. It subscribes to kernel uevents first,
// then reads sysfs, then serves one select loop over uevents, lost-event
// notices (which force a full rescan), a scan ticker, storage-link events and
// the node service's Track/Untrack calls. The ticker exists because the kernel
// sends no uevent when a controller goes to connecting or resetting; it reads
// only the `state` of managed controllers, so its cost grows with the number
// of volumes, not with everything on the node.
//
// The loop decides, it does not repair: a volume that becomes lost is handed
// to a Repairer, whose outcome moves it to live or failed. Readers (the CSI
// health call, the status command) get copies published under a lock that the
// loop holds only for the copy, so they never wait for the loop's work.
package heal

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"

	"github.com/rds-csi/rds-csi/kernel/sysfs"
	"github.com/rds-csi/rds-csi/kernel/uevent"
)

// State is a staged volume's health.
type State string

const (
	// StateUnknown: tracked, but not yet evaluated, or its facts could not
	// be read. It is never reported as live.
	StateUnknown State = "unknown"
	// StateLive: a controller of the volume's subsystem is live and the
	// namespace's block device is present.
	StateLive State = "live"
	// StateReconnecting: the kernel is reconnecting on its own (controller
	// new, connecting or resetting); I/O waits or fails per fast_io_fail_tmo.
	StateReconnecting State = "reconnecting"
	// StateLost: nothing will come back by itself (controller deleted,
	// namespace gone); only a repair helps.
	StateLost State = "lost"
	// StateHealing: a repair is running.
	StateHealing State = "healing"
	// StateFailed: the last repair failed; the volume stays failed until the
	// kernel shows it reconnecting or live again, or a storage link comes up
	// (which retries the repair).
	StateFailed State = "failed"
)

// reportedStates are the states the controller_state metric enumerates.
var reportedStates = []State{StateLive, StateReconnecting, StateLost, StateHealing, StateFailed}

// Health is a snapshot of one volume's health.
type Health struct {
	VolumeID   string    `json:"volumeID"`
	NQN        string    `json:"nqn"`
	Controller string    `json:"controller,omitempty"` // the live controller, else any of the subsystem's
	State      State     `json:"state"`
	Since      time.Time `json:"since"` // when State was entered
	LastCause  string    `json:"lastCause,omitempty"`
	LastHeal   time.Time `json:"lastHeal,omitzero"` // when the last repair finished
	Device     string    `json:"device,omitempty"`  // major:minor as last seen
}

// Volume is what the node service registers for a staged volume.
type Volume struct {
	VolumeID string
	NQN      string
	NSID     int
	// Device is the major:minor recorded at stage time, if known. With it a
	// renumbering that happened while the agent was down is still noticed.
	Device string
	// Identity is the namespace's identity when it was staged: a namespace
	// that answers to the NQN and NSID with another identity is another
	// disk, never the volume (zero: not known, any is taken).
	Identity sysfs.Identity
	// PVCNamespace and PVCName name the claim the volume was created for,
	// if known, for the Notifier (Events go on the PVC).
	PVCNamespace, PVCName string
}

// Repairer brings a lost volume back (reconnect, repoint consumers). The loop
// calls it once per loss, on its own goroutine, and cancels ctx when the
// volume is untracked or the node shuts down. Retrying until the target
// answers is the Repairer's business: it knows what is worth retrying.
// ErrConsumersStuck is what a Repairer wraps when it reconnected the volume
// but its consumers still hold the old device (a mounted filesystem): the
// volume stays failed, whatever the kernel shows, until it is tracked anew.
var ErrConsumersStuck = errors.New("consumers still hold the volume's old device")

// ErrIdentityChanged is what a Repairer wraps when the namespace that
// answers to the volume's NQN and NSID is another disk than the one staged:
// the volume stays failed, whatever the kernel shows, until it is staged
// again.
var ErrIdentityChanged = errors.New("the namespace is another disk than the one staged")

type Repairer interface {
	Repair(ctx context.Context, v Volume, h Health) error
}

// Notifier is told of every state change of a tracked volume, in order, on
// the loop's goroutine: Notify must return at once and hand anything slow
// (an API call) to a bounded queue of its own, as kube.Recorder does.
type Notifier interface {
	Notify(t Transition)
}

// Transition is one state change of a tracked volume.
type Transition struct {
	Volume Volume
	From   State
	// Health is the volume's health after the change; Health.Since is when
	// it changed.
	Health Health
	// LostAt is when the volume was lost, if it was since it was last live
	// (zero otherwise): a change to live with LostAt set ends a heal.
	LostAt time.Time
	// Stuck is set on a change to failed when consumers still hold the
	// volume's old device (ErrConsumersStuck): only staging it again helps.
	Stuck bool
	// OtherDisk is set on a change to failed when the namespace is another
	// disk than the one staged (ErrIdentityChanged).
	OtherDisk bool
}

// Config configures a Loop.
type Config struct {
	Sysfs  sysfs.Tree
	Events *uevent.Monitor
	// ManagedNQNPrefix: only controllers of subsystems under it are watched,
	// disconnected as orphans or have their ctrl_loss_tmo lowered.
	ManagedNQNPrefix string
	// ScanInterval bounds the detection of state-only changes; default 1s.
	ScanInterval time.Duration
	// OrphanGrace is how long a managed controller may belong to no tracked
	// volume before it is disconnected; default 2m.
	OrphanGrace time.Duration
	// Links reports storage-link changes; nil means none.
	Links LinkSource
	// Repairer handles lost volumes; nil leaves them lost.
	Repairer Repairer
	// Disconnect deletes a controller (production: fabrics.Disconnect). It
	// is called only for orphans under ManagedNQNPrefix; nil disables
	// orphan removal.
	Disconnect func(ctx context.Context, controller string) error
	// Notifier is told of every state change (the agent turns some into
	// Kubernetes Events); nil tells no one.
	Notifier Notifier
	Metrics  *Metrics
	Clock    func() time.Time
}

const (
	defaultScanInterval = time.Second
	defaultOrphanGrace  = 2 * time.Minute
	// disconnectTimeout bounds one orphan disconnect; delete_controller
	// tears down queues synchronously and can hang on a dead target.
	disconnectTimeout = 30 * time.Second
)

// ErrEventsStopped is returned by Run when the uevent monitor stopped.
var ErrEventsStopped = errors.New("uevent monitor stopped")

// eventSource is the part of a uevent subscription the loop uses; tests
// feed events through their own.
type eventSource interface {
	Events() <-chan uevent.Event
	Lost() <-chan struct{}
	Cancel()
}

// Loop is the agent's healing loop.
type Loop struct {
	cfg       Config
	subscribe func() eventSource
	now       func() time.Time
	metrics   *Metrics

	// mu guards wanted, held and published, the only state shared with
	// other goroutines. It is held for map operations only.
	mu        sync.RWMutex
	wanted    map[string]Volume // what the node service tracks
	held      map[string]int    // NQNs being staged, see Hold
	published map[string]Health
	wake      chan struct{} // capacity 1: Track/Untrack never block

	inbox   chan func() // results of background work, run on the loop
	stopped chan struct{}
	running atomic.Bool

	// repairCtx parents every repair; Shutdown cancels it so that no repair
	// reconnects behind a lowered ctrl_loss_tmo.
	repairCtx     context.Context
	cancelRepairs context.CancelFunc
	draining      atomic.Bool

	// Owned by the loop goroutine.
	// ctrls is nil until sysfs was read successfully, and every volume
	// reads unknown meanwhile.
	ctrls map[string]*controller
	vols  map[string]*volume
	// lastScanErr keeps a persistent sysfs error from being logged every
	// scan interval.
	lastScanErr map[string]string
}

// New returns a loop; Run starts it.
func New(cfg Config) (*Loop, error) {
	if cfg.Events == nil {
		return nil, errors.New("heal: a uevent monitor is required")
	}
	events := cfg.Events
	return newLoop(cfg, func() eventSource { return events.Subscribe(relevant) })
}

func newLoop(cfg Config, subscribe func() eventSource) (*Loop, error) {
	// A prefix without its domain part would claim other vendors'
	// subsystems, and orphan removal disconnects what the prefix claims.
	if !strings.HasPrefix(cfg.ManagedNQNPrefix, "nqn.") || !strings.Contains(cfg.ManagedNQNPrefix, ":") {
		return nil, fmt.Errorf("heal: managed NQN prefix %q must look like nqn.yyyy-mm.domain:…", cfg.ManagedNQNPrefix)
	}
	if cfg.Sysfs.Root == "" {
		return nil, errors.New("heal: sysfs root is required")
	}
	if cfg.ScanInterval <= 0 {
		cfg.ScanInterval = defaultScanInterval
	}
	if cfg.OrphanGrace <= 0 {
		cfg.OrphanGrace = defaultOrphanGrace
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	repairCtx, cancel := context.WithCancel(context.Background())
	return &Loop{
		cfg:           cfg,
		subscribe:     subscribe,
		now:           cfg.Clock,
		metrics:       cfg.Metrics,
		wanted:        map[string]Volume{},
		published:     map[string]Health{},
		wake:          make(chan struct{}, 1),
		inbox:         make(chan func()),
		stopped:       make(chan struct{}),
		repairCtx:     repairCtx,
		cancelRepairs: cancel,
		vols:          map[string]*volume{},
	}, nil
}

// relevant keeps the loop's queue free of the many block events of loop
// devices, partitions and device-mapper. It runs on the monitor's goroutine.
func relevant(ev uevent.Event) bool {
	switch ev.Subsystem {
	case "nvme", "nvme-subsystem":
		return true
	case "block":
		return strings.HasPrefix(ev.DevName, "nvme") || strings.Contains(ev.DevPath, "/nvme")
	}
	return false
}

// Track starts watching a staged volume: after NodeStage connected it
// (holding the NQN with Hold meanwhile), and for every record found after a
// restart. Tracking the same volume again is harmless. Only NQNs under the
// managed prefix are accepted: the loop never watches what it may not
// repair.
func (l *Loop) Track(v Volume) error {
	switch {
	case v.VolumeID == "":
		return errors.New("heal: volume ID is required")
	case !strings.HasPrefix(v.NQN, l.cfg.ManagedNQNPrefix):
		return fmt.Errorf("heal: NQN %q of volume %s is not under the managed prefix %q", v.NQN, v.VolumeID, l.cfg.ManagedNQNPrefix)
	case v.NSID < 1:
		return fmt.Errorf("heal: invalid NSID %d for volume %s", v.NSID, v.VolumeID)
	}
	l.mu.Lock()
	if old, ok := l.wanted[v.VolumeID]; !ok || old != v {
		l.published[v.VolumeID] = Health{VolumeID: v.VolumeID, NQN: v.NQN, State: StateUnknown, Since: l.now(), Device: v.Device}
	}
	l.wanted[v.VolumeID] = v
	l.mu.Unlock()
	l.poke()
	return nil
}

// Untrack stops watching a volume (after unstage). Its metric series go with
// it; its controller becomes an orphan candidate if nothing else uses it.
func (l *Loop) Untrack(volumeID string) {
	l.mu.Lock()
	delete(l.wanted, volumeID)
	delete(l.published, volumeID)
	l.mu.Unlock()
	l.poke()
}

func (l *Loop) poke() {
	select {
	case l.wake <- struct{}{}:
	default: // a wake-up is already pending and will see this change
	}
}

// Health returns a tracked volume's latest health without waiting for the
// loop.
func (l *Loop) Health(volumeID string) (Health, bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	h, ok := l.published[volumeID]
	return h, ok
}

// Snapshot returns every tracked volume's health, ordered by volume ID.
func (l *Loop) Snapshot() []Health {
	l.mu.RLock()
	out := make([]Health, 0, len(l.published))
	for _, h := range l.published {
		out = append(out, h)
	}
	l.mu.RUnlock()
	slices.SortFunc(out, func(a, b Health) int { return strings.Compare(a.VolumeID, b.VolumeID) })
	return out
}

// publish makes h visible to readers unless the volume was untracked or
// re-registered differently in the meantime, so that a late publish cannot
// resurrect a volume Untrack already removed.
func (l *Loop) publish(v Volume, h Health) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if cur, ok := l.wanted[v.VolumeID]; ok && cur == v {
		l.published[v.VolumeID] = h
	}
}

// Run serves the loop until ctx ends (returning nil) or the uevent monitor
// stops. It may be called once.
func (l *Loop) Run(ctx context.Context) error {
	if !l.running.CompareAndSwap(false, true) {
		return errors.New("heal: loop already ran")
	}
	defer close(l.stopped)
	defer l.cancelRepairs()

	// Subscribe before reading sysfs: a change in between is then seen as
	// an event or by the read, never lost in a gap.
	sub := l.subscribe()
	defer sub.Cancel()
	var links <-chan LinkEvent
	if l.cfg.Links != nil {
		var err error
		if links, err = l.cfg.Links.Subscribe(ctx); err != nil {
			// Link events only speed up detection; the scan still works.
			klog.ErrorS(err, "Storage link events unavailable, relying on the sysfs scan")
		}
	}
	l.begin()
	ticker := time.NewTicker(l.cfg.ScanInterval)
	defer ticker.Stop()
	klog.InfoS("Healing loop started", "scanInterval", l.cfg.ScanInterval, "orphanGrace", l.cfg.OrphanGrace, "prefix", l.cfg.ManagedNQNPrefix)
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-sub.Events():
			if !ok {
				return ErrEventsStopped
			}
			l.timed(func() { l.handleEvent(ev) })
		case <-sub.Lost():
			klog.InfoS("Uevents were lost, rescanning sysfs")
			l.timed(l.rescan)
		case <-ticker.C:
			l.timed(l.scan)
		case le, ok := <-links:
			if !ok {
				links = nil
				continue
			}
			l.timed(func() { l.handleLink(le) })
		case <-l.wake:
			l.timed(l.applyTracking)
		case fn := <-l.inbox:
			l.timed(fn)
		}
	}
}

func (l *Loop) timed(fn func()) {
	start := time.Now()
	fn()
	l.metrics.observeReconcile(time.Since(start))
}

// begin is Run's enumeration step. sysfs is read before the volumes are
// applied so that no volume is judged against an empty controller table;
// the orphan grace of every controller present starts here.
func (l *Loop) begin() {
	l.rescan()
	l.applyTracking()
}

// toLoop hands the result of background work to the loop; it gives up once
// the loop has stopped so that no goroutine outlives it.
func (l *Loop) toLoop(fn func()) {
	select {
	case l.inbox <- fn:
	case <-l.stopped:
	}
}

// Notifiers tells each of its notifiers of every transition, in order;
// nil ones are skipped.
type Notifiers []Notifier

// Notify implements Notifier.
func (ns Notifiers) Notify(t Transition) {
	for _, n := range ns {
		if n != nil {
			n.Notify(t)
		}
	}
}
