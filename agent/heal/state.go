package heal

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"

	"k8s.io/klog/v2"

	"github.com/rds-csi/rds-csi/kernel/sysfs"
	"github.com/rds-csi/rds-csi/kernel/uevent"
)

// controller is the loop's view of one managed controller: a small state
// machine fed by uevents and the scan.
type controller struct {
	name, nqn string
	state     string // the kernel's text, "" until first read
	// everLive tells a reconnect from the first connect.
	everLive bool
	// expectConnected is set when the scan saw the controller turn live
	// before the kernel's NVME_EVENT=connected arrived, so that one
	// reconnect is not counted twice.
	expectConnected bool
	orphanSince     time.Time // zero while some volume owns the subsystem
	disconnecting   bool
}

// volume is the loop's view of one tracked volume.
type volume struct {
	Volume
	health     Health
	devPresent bool
	resolveErr error // the namespace could not be resolved: facts unknown
	// notLiveSince is when the volume last left live; zero while live.
	notLiveSince time.Time
	// lostAt is when the volume was lost since it was last live; zero if
	// it was not.
	lostAt       time.Time
	repairCancel context.CancelFunc
	// stuck is set when a repair reported that consumers hold a device the
	// volume no longer has (ErrConsumersStuck): the kernel being live again
	// does not make the volume usable, so failed stays until the volume is
	// tracked anew (restaged).
	stuck bool
	// otherDisk is set when the repair refused the namespace as another
	// disk (ErrIdentityChanged); like stuck, failed then stays.
	otherDisk bool
	// foreign describes the namespace that answers to the volume's NQN
	// and NSID with another identity than the staged one; empty when the
	// namespace is the volume's or absent.
	foreign string
}

// visibleDiskRE matches namespace disks consumers use; hidden per-path
// disks (nvmeXcYnZ) come and go with paths and say nothing about the volume.
var visibleDiskRE = regexp.MustCompile(`^nvme[0-9]+n[0-9]+$`)

// managed is the one test of whether the loop may watch and act on a
// controller: an IP fabric (local PCIe drives are never ours) and a
// subsystem under the managed prefix. Everything destructive acts only on
// controllers that passed it.
func (l *Loop) managed(c sysfs.Controller) bool {
	return (c.Transport == "tcp" || c.Transport == "rdma") && strings.HasPrefix(c.SubsysNQN, l.cfg.ManagedNQNPrefix)
}

func devName(ev uevent.Event) string {
	if ev.DevName != "" {
		return path.Base(ev.DevName)
	}
	return path.Base(ev.DevPath)
}

// handleEvent acts on one uevent at once: there is no batching, detection
// latency of uevent-visible changes is the loop's own latency.
func (l *Loop) handleEvent(ev uevent.Event) {
	l.metrics.uevent(ev.Subsystem, ev.Action)
	if l.ctrls == nil {
		// The last read of sysfs failed: there is no table to update, and
		// a full read covers whatever the event announces.
		l.rescan()
		return
	}
	name := devName(ev)
	switch ev.Subsystem {
	case "nvme":
		if !sysfs.ValidControllerName(name) {
			return
		}
		switch ev.Action {
		case "remove":
			l.dropController(name, "controller "+name+" removed")
		case "add", "change":
			l.readController(name, ev.Action == "change" && ev.Env["NVME_EVENT"] == "connected")
		}
	case "block":
		if visibleDiskRE.MatchString(name) && (ev.Action == "add" || ev.Action == "remove") {
			l.blockChanged(ev.Action, ev.Env["MAJOR"], ev.Env["MINOR"])
		}
	}
	// nvme-subsystem events are counted only: every change they announce
	// also comes as a controller or block event.
}

// readController refreshes one controller from sysfs after an event.
func (l *Loop) readController(name string, connected bool) {
	c, err := l.cfg.Sysfs.Controller(name)
	if errors.Is(err, fs.ErrNotExist) {
		l.dropController(name, "controller "+name+" removed")
		return
	}
	if err != nil {
		l.scanFailed(err, "controller", name)
		return
	}
	if l.upsert(c, connected) {
		l.refreshNQN(c.SubsysNQN, true)
	}
}

// upsert records what sysfs shows of one controller in the table, adding it
// if it is new and managed; it reports whether the controller is managed.
// A controller found before its uevents arrived is observed as if it had
// just appeared, so that its pending NVME_EVENT=connected is not counted as
// a reconnect.
func (l *Loop) upsert(c sysfs.Controller, connected bool) bool {
	ctrl := l.ctrls[c.Name]
	if ctrl != nil && ctrl.nqn != c.SubsysNQN {
		// The instance number was reused for another subsystem.
		l.dropController(c.Name, "controller "+c.Name+" replaced")
		ctrl = nil
	}
	if !l.managed(c) {
		return false
	}
	if ctrl == nil {
		ctrl = &controller{name: c.Name, nqn: c.SubsysNQN}
		l.ctrls[c.Name] = ctrl
		klog.V(2).InfoS("Managed controller appeared", "controller", c.Name, "nqn", c.SubsysNQN, "state", c.State)
	}
	l.observe(ctrl, c.State, connected)
	return true
}

// observe feeds one fact about a controller's state into its state machine
// and counts reconnects. connected marks the kernel's NVME_EVENT=connected,
// sent after the first connect and every reconnect (kernel >= 5.18); older
// kernels send none, so a scan that sees the state turn live counts too.
func (l *Loop) observe(c *controller, state string, connected bool) {
	prev := c.state
	c.state = state
	if connected {
		switch {
		case c.expectConnected:
			c.expectConnected = false // the scan already counted this one
		case c.everLive:
			l.reconnected(c, "connected event")
		}
		c.everLive = true
		return
	}
	if state != sysfs.StateLive {
		c.expectConnected = false // a new connection cycle has begun
		return
	}
	if prev == sysfs.StateLive {
		return
	}
	if c.everLive {
		l.reconnected(c, "state "+prev+" to live")
	}
	c.everLive = true
	c.expectConnected = true
}

func (l *Loop) reconnected(c *controller, how string) {
	for _, v := range l.volumesOf(c.nqn) {
		l.metrics.reconnected(v.VolumeID)
	}
	klog.InfoS("Controller reconnected", "controller", c.name, "nqn", c.nqn, "seen", how)
}

func (l *Loop) dropController(name, cause string) {
	c, ok := l.ctrls[name]
	if !ok {
		return
	}
	delete(l.ctrls, name)
	klog.InfoS("Managed controller gone", "controller", name, "nqn", c.nqn, "cause", cause)
	l.refreshNQN(c.nqn, true)
}

// blockChanged re-resolves only the volumes the event can concern: on
// remove those whose device it was, on add those without a device. A
// renumbering is a remove then an add, so both halves are seen.
func (l *Loop) blockChanged(action, major, minor string) {
	dev := ""
	if major != "" && minor != "" {
		dev = major + ":" + minor
	}
	for _, v := range l.sortedVolumes() {
		concerned := !v.devPresent
		if action == "remove" {
			concerned = v.devPresent && (dev == "" || v.health.Device == dev)
		}
		if concerned {
			if action == "remove" {
				l.rereadControllersOf(v.NQN)
			}
			l.resolve(v)
			l.evaluate(v)
		}
	}
}

// rereadControllersOf makes the table agree with sysfs about one
// subsystem's controllers: their states, ones that vanished, and ones whose
// uevents the loop has not handled yet. It runs when a volume is tracked
// (NodeStage returns after the kernel made the controller, which may be
// before the loop saw its uevent: the volume must not be judged lost for
// that) and on a disk's remove event (the kernel removes a deleted
// controller's disks before the controller itself, so the table may still
// say live, and the volume would be blamed on a missing namespace). If the
// subsystem cannot be read, the table cannot be trusted: every volume reads
// unknown until the next scan rebuilds it, as after a failed rescan.
func (l *Loop) rereadControllersOf(nqn string) {
	if l.ctrls == nil {
		return
	}
	found, err := l.cfg.Sysfs.ControllersOf(nqn)
	if err != nil {
		l.scanFailed(err, "controllers of", nqn)
		l.ctrls = nil
		return
	}
	seen := map[string]bool{}
	for _, c := range found {
		if l.upsert(c, false) {
			seen[c.Name] = true
		}
	}
	for _, name := range l.sortedControllerNames() {
		if c := l.ctrls[name]; c.nqn == nqn && !seen[name] {
			delete(l.ctrls, name)
			klog.InfoS("Managed controller gone", "controller", name, "nqn", nqn, "cause", "no longer in sysfs")
		}
	}
}

// rescan rebuilds the controller table from sysfs: at start and after lost
// events. If sysfs cannot be listed, the table is marked invalid and every
// volume reads unknown: a read error must never look like a lost
// controller and start repairs.
func (l *Loop) rescan() {
	all, err := l.cfg.Sysfs.Controllers()
	if err != nil {
		l.scanFailed(err, "controllers", "")
		l.ctrls = nil
	} else {
		seen := map[string]bool{}
		for _, c := range all {
			if !l.managed(c) {
				continue
			}
			seen[c.Name] = true
			ctrl := l.ctrls[c.Name]
			if ctrl != nil && ctrl.nqn != c.SubsysNQN {
				ctrl = nil
			}
			if ctrl == nil {
				// Found, not seen arriving: whether it ever was live is
				// unknowable, so its current state is taken as the baseline.
				ctrl = &controller{name: c.Name, nqn: c.SubsysNQN, state: c.State, everLive: c.State == sysfs.StateLive}
				if l.ctrls == nil {
					l.ctrls = map[string]*controller{}
				}
				l.ctrls[c.Name] = ctrl
				continue
			}
			l.observe(ctrl, c.State, false)
		}
		for name := range l.ctrls {
			if !seen[name] {
				delete(l.ctrls, name)
			}
		}
		if l.ctrls == nil {
			l.ctrls = map[string]*controller{}
		}
	}
	for _, v := range l.sortedVolumes() {
		l.resolve(v)
		l.evaluate(v)
	}
	l.checkOrphans()
}

// scan reads the state of managed controllers only: the one fact that
// changes without a uevent. Volumes that are not live are re-resolved too,
// which costs little because healthy volumes are skipped.
func (l *Loop) scan() {
	if l.ctrls == nil {
		l.rescan()
		return
	}
	for _, name := range l.sortedControllerNames() {
		c := l.ctrls[name]
		state, err := l.cfg.Sysfs.ControllerState(name)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			l.dropController(name, "controller "+name+" vanished")
		case err != nil:
			l.scanFailed(err, "controller state", name)
		case state != c.state:
			l.observe(c, state, false)
		}
	}
	for _, v := range l.sortedVolumes() {
		if v.health.State != StateLive {
			l.resolve(v)
		}
		l.evaluate(v)
	}
	l.checkOrphans()
}

func (l *Loop) scanFailed(err error, what, name string) {
	l.metrics.scanError()
	key := what + "/" + name
	if l.lastScanErr[key] == err.Error() {
		klog.V(4).InfoS("Reading sysfs failed again", "what", what, "name", name, "err", err)
		return
	}
	if l.lastScanErr == nil {
		l.lastScanErr = map[string]string{}
	}
	l.lastScanErr[key] = err.Error()
	klog.ErrorS(err, "Reading sysfs failed", "what", what, "name", name)
}

// refreshNQN re-evaluates the volumes of one subsystem after one of its
// controllers changed.
func (l *Loop) refreshNQN(nqn string, resolve bool) {
	for _, v := range l.volumesOf(nqn) {
		if resolve {
			l.resolve(v)
		}
		l.evaluate(v)
	}
}

// resolve finds the volume's namespace device and counts a renumbering when
// it differs from the last one seen.
func (l *Loop) resolve(v *volume) {
	ns, err := l.cfg.Sysfs.ResolveNamespace(v.NQN, v.NSID)
	foreign := err == nil && !v.Identity.Same(ns.Identity())
	if !foreign {
		v.foreign = ""
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		v.devPresent, v.resolveErr = false, nil
	case err != nil:
		l.scanFailed(err, "namespace", v.VolumeID)
		v.resolveErr = err
	case foreign:
		// Another disk answers to the NQN and NSID: for the volume it is
		// as good as absent, and never live.
		v.resolveErr = nil
		v.devPresent = false
		cause := fmt.Sprintf("namespace %d is another disk: staged as %s, now %s", v.NSID, v.Identity, ns.Identity())
		if v.foreign != cause {
			klog.InfoS("Volume's namespace is another disk", "volume", v.VolumeID, "nqn", v.NQN, "staged", v.Identity.String(), "found", ns.Identity().String(), "device", ns.Dev.String())
		}
		v.foreign = cause
		return
	default:
		v.resolveErr = nil
		v.devPresent = true
		dev := ns.Dev.String()
		if v.health.Device != "" && v.health.Device != dev {
			l.metrics.renumbered(v.VolumeID)
			klog.InfoS("Volume's device renumbered", "volume", v.VolumeID, "nqn", v.NQN, "from", v.health.Device, "to", dev)
		}
		v.health.Device = dev
	}
}

// derive turns kernel facts into a state, a cause, and the controller to
// show. Multipath: one live controller is enough.
func (l *Loop) derive(v *volume) (State, string, string) {
	if l.ctrls == nil {
		return StateUnknown, "controllers could not be read", ""
	}
	if v.resolveErr != nil {
		return StateUnknown, "namespace could not be resolved: " + v.resolveErr.Error(), ""
	}
	var live, pending, dying *controller
	for _, c := range l.ctrls {
		if c.nqn != v.NQN {
			continue
		}
		switch c.state {
		case sysfs.StateLive:
			live = firstOf(live, c)
		case sysfs.StateDeleting, sysfs.StateDeletingNoIO, sysfs.StateDead:
			dying = firstOf(dying, c)
		default:
			// new, connecting, resetting, and states newer kernels add:
			// the kernel is still working, so no repair yet.
			pending = firstOf(pending, c)
		}
	}
	switch {
	case live != nil && v.devPresent:
		return StateLive, "", live.name
	case v.foreign != "":
		return StateLost, v.foreign, firstNonNil(live, pending, dying)
	case live != nil:
		return StateLost, fmt.Sprintf("namespace %d missing on live controller %s", v.NSID, live.name), live.name
	case pending != nil:
		return StateReconnecting, "controller " + pending.name + " " + pending.state, pending.name
	case dying != nil:
		// Lost, but not yet gone: its namespace still resolves, so a repair
		// started now would find it and take the dying device for healed.
		// The repair starts when the kernel has removed the controller.
		return StateReconnecting, "controller " + dying.name + " " + dying.state, dying.name
	case v.devPresent:
		return StateLost, "no controller left (namespace head kept)", ""
	default:
		return StateLost, "controller deleted", ""
	}
}

// firstNonNil names the first controller given, "" if none.
func firstNonNil(cs ...*controller) string {
	for _, c := range cs {
		if c != nil {
			return c.name
		}
	}
	return ""
}

// firstOf picks by name so the controller shown does not depend on map
// order; derive runs for every volume on every scan, so it does not sort.
func firstOf(cur, c *controller) *controller {
	if cur != nil && cur.name < c.name {
		return cur
	}
	return c
}

// evaluate moves a volume to the state its facts show. A running repair
// owns the state until it returns; a failed volume stays failed until the
// kernel shows progress on its own.
func (l *Loop) evaluate(v *volume) {
	next, cause, ctrl := l.derive(v)
	if ctrl != "" {
		v.health.Controller = ctrl
	}
	cur := v.health.State
	switch {
	case cur == StateHealing:
		l.publish(v.Volume, v.health)
		return
	case cur == StateFailed && (v.stuck || v.otherDisk || next == StateLost || next == StateUnknown):
		l.publish(v.Volume, v.health)
		return
	}
	l.transition(v, next, cause)
	if next == StateLost && cur != StateLost {
		l.metrics.lost(v.VolumeID)
		l.startRepair(v)
	}
}

// transition records a state change and publishes the volume's health.
func (l *Loop) transition(v *volume, next State, cause string) {
	from := v.health.State
	if next == from {
		l.publish(v.Volume, v.health)
		return
	}
	now := l.now()
	switch {
	case next == StateLive && !v.notLiveSince.IsZero():
		l.metrics.observeNotLive(now.Sub(v.notLiveSince))
		v.notLiveSince = time.Time{}
	case from == StateLive:
		v.notLiveSince = now
	}
	if next == StateLost && v.lostAt.IsZero() {
		v.lostAt = now
	}
	lostAt := v.lostAt
	if next == StateLive {
		v.lostAt = time.Time{}
	}
	v.health.State, v.health.Since = next, now
	if cause != "" {
		v.health.LastCause = cause
	}
	l.metrics.setState(v.VolumeID, v.NQN, next)
	klog.InfoS("Volume health changed", "volume", v.VolumeID, "nqn", v.NQN, "from", from, "to", next,
		"cause", cause, "controller", v.health.Controller, "device", v.health.Device)
	l.publish(v.Volume, v.health)
	if l.cfg.Notifier != nil {
		l.cfg.Notifier.Notify(Transition{Volume: v.Volume, From: from, Health: v.health, LostAt: lostAt, Stuck: next == StateFailed && v.stuck, OtherDisk: next == StateFailed && v.otherDisk})
	}
}

// startRepair hands a lost volume to the Repairer on its own goroutine; the
// outcome comes back through the inbox so the loop never waits for it.
func (l *Loop) startRepair(v *volume) {
	if l.cfg.Repairer == nil || l.draining.Load() || v.repairCancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(l.repairCtx)
	v.repairCancel = cancel
	l.transition(v, StateHealing, "")
	vol, h := v.Volume, v.health
	repairer := l.cfg.Repairer
	go func() {
		start := time.Now()
		err := repairer.Repair(ctx, vol, h)
		took := time.Since(start)
		l.toLoop(func() { l.repaired(v, err, took) })
	}()
}

func (l *Loop) repaired(v *volume, err error, took time.Duration) {
	l.metrics.ObserveHealAction(KindRepair, err, took)
	if l.vols[v.VolumeID] != v {
		return // untracked while repairing
	}
	v.repairCancel()
	v.repairCancel = nil
	v.health.LastHeal = l.now()
	if err != nil {
		klog.ErrorS(err, "Repair failed", "volume", v.VolumeID, "nqn", v.NQN, "took", took)
		v.stuck = errors.Is(err, ErrConsumersStuck)
		v.otherDisk = errors.Is(err, ErrIdentityChanged)
		l.transition(v, StateFailed, "repair failed: "+err.Error())
		return
	}
	// Trust the kernel, not the hook: re-read what the repair changed,
	// whose uevents the loop may not have handled yet.
	l.rereadControllersOf(v.NQN)
	l.resolve(v)
	next, cause, ctrl := l.derive(v)
	if ctrl != "" {
		v.health.Controller = ctrl
	}
	if next == StateLost || next == StateUnknown {
		// Reporting success without a result must not start the next
		// repair at once, or a broken repairer would spin.
		l.transition(v, StateFailed, "repair returned but "+cause)
		return
	}
	klog.InfoS("Repair done", "volume", v.VolumeID, "nqn", v.NQN, "took", took, "state", next)
	l.transition(v, next, cause)
}

// handleLink scans at once on a storage link going down, and on one coming
// up rereads all of sysfs and gives failed volumes another repair: a link
// coming back is the one event that makes a different outcome likely.
func (l *Loop) handleLink(le LinkEvent) {
	klog.InfoS("Storage link changed", "interface", le.Interface, "up", le.Up)
	if !le.Up {
		l.scan()
		return
	}
	l.rescan()
	for _, v := range l.sortedVolumes() {
		if v.health.State != StateFailed || v.otherDisk {
			continue // another disk does not become the volume's by a link
		}
		if next, _, _ := l.derive(v); next == StateLost {
			l.startRepair(v)
		}
	}
}

// applyTracking brings the loop's volumes in line with Track/Untrack calls.
func (l *Loop) applyTracking() {
	l.mu.RLock()
	want := make(map[string]Volume, len(l.wanted))
	for id, v := range l.wanted {
		want[id] = v
	}
	l.mu.RUnlock()
	changed := false
	for _, v := range l.sortedVolumes() {
		if w, ok := want[v.VolumeID]; !ok || w != v.Volume {
			l.forget(v)
			changed = true
		}
	}
	for _, id := range sortedKeys(want) {
		if _, ok := l.vols[id]; ok {
			continue
		}
		w := want[id]
		v := &volume{Volume: w, health: Health{VolumeID: w.VolumeID, NQN: w.NQN, State: StateUnknown, Since: l.now(), Device: w.Device}}
		l.vols[id] = v
		l.metrics.track(id)
		klog.InfoS("Tracking volume", "volume", id, "nqn", w.NQN, "nsid", w.NSID, "device", w.Device)
		l.rereadControllersOf(w.NQN)
		l.resolve(v)
		l.evaluate(v)
		changed = true
	}
	if changed {
		l.checkOrphans()
	}
}

func (l *Loop) forget(v *volume) {
	if v.repairCancel != nil {
		v.repairCancel()
	}
	delete(l.vols, v.VolumeID)
	l.metrics.forget(v.VolumeID)
	klog.InfoS("Stopped tracking volume", "volume", v.VolumeID, "nqn", v.NQN)
}

func (l *Loop) volumesOf(nqn string) []*volume {
	var out []*volume
	for _, v := range l.sortedVolumes() {
		if v.NQN == nqn {
			out = append(out, v)
		}
	}
	return out
}

// sortedVolumes and sortedControllerNames keep the loop's order, and so
// its logs and tests, deterministic.
func (l *Loop) sortedVolumes() []*volume {
	out := make([]*volume, 0, len(l.vols))
	for _, id := range sortedKeys(l.vols) {
		out = append(out, l.vols[id])
	}
	return out
}

func (l *Loop) sortedControllerNames() []string { return sortedKeys(l.ctrls) }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
