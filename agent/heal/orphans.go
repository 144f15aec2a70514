package heal

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"k8s.io/klog/v2"
)

// Hold protects a subsystem from orphan removal while the node service
// connects it and before it calls Track, the one moment a controller of ours
// legitimately belongs to no tracked volume. Call release when Track is done
// or staging failed.
func (l *Loop) Hold(nqn string) (release func()) {
	l.mu.Lock()
	if l.held == nil {
		l.held = map[string]int{}
	}
	l.held[nqn]++
	l.mu.Unlock()
	done := false
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if done {
			return
		}
		done = true
		if l.held[nqn]--; l.held[nqn] <= 0 {
			delete(l.held, nqn)
		}
	}
}

// owned reports whether a volume (tracked, being tracked, or being staged)
// uses the subsystem. It reads the shared view rather than the loop's, so a
// Track that the loop has not applied yet already counts.
func (l *Loop) owned(nqn string) bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.held[nqn] > 0 {
		return true
	}
	for _, v := range l.wanted {
		if v.NQN == nqn {
			return true
		}
	}
	return false
}

// checkOrphans disconnects managed controllers no volume has owned for the
// grace period. The table holds only controllers that passed
// managed(), so foreign and local controllers are never candidates. The
// grace runs from when the loop first saw the controller unowned, so every
// controller present at start gets the full grace from the loop's start:
// the node service re-registers its volumes only after the loop is up, and
// a live controller must not be disconnected on start.
func (l *Loop) checkOrphans() {
	if l.cfg.Disconnect == nil || l.ctrls == nil {
		return
	}
	now := l.now()
	for _, name := range l.sortedControllerNames() {
		c := l.ctrls[name]
		if l.owned(c.nqn) || l.volumesOf(c.nqn) != nil {
			c.orphanSince = time.Time{}
			continue
		}
		if c.disconnecting {
			continue
		}
		if c.orphanSince.IsZero() {
			c.orphanSince = now
			klog.V(2).InfoS("Managed controller has no volume", "controller", name, "nqn", c.nqn, "grace", l.cfg.OrphanGrace)
		}
		if now.Sub(c.orphanSince) < l.cfg.OrphanGrace {
			continue
		}
		c.disconnecting = true
		go l.disconnectOrphan(name, c.nqn, now.Sub(c.orphanSince))
	}
}

// errNoLongerOrphan means the re-check just before disconnecting found the
// controller owned, replaced or gone; nothing was done.
var errNoLongerOrphan = errors.New("no longer an orphan")

// disconnectOrphan re-reads the controller right before acting on it: the
// instance number may have been reused by another subsystem since the loop
// decided, and a volume may have been staged on it meanwhile.
func (l *Loop) disconnectOrphan(name, nqn string, unowned time.Duration) {
	start := time.Now()
	err := l.verifyOrphan(name, nqn)
	attempted := err == nil
	if attempted {
		ctx, cancel := context.WithTimeout(context.Background(), disconnectTimeout)
		err = l.cfg.Disconnect(ctx, name)
		cancel()
		l.metrics.ObserveHealAction(KindOrphanDisconnect, err, time.Since(start))
	}
	switch {
	case !attempted:
		klog.InfoS("Orphan disconnect skipped", "controller", name, "nqn", nqn, "reason", err)
	case err != nil:
		klog.ErrorS(err, "Disconnecting orphan controller failed", "controller", name, "nqn", nqn)
	default:
		klog.InfoS("Disconnected orphan controller", "controller", name, "nqn", nqn, "unowned", unowned)
	}
	l.toLoop(func() {
		c := l.ctrls[name]
		if c == nil || c.nqn != nqn {
			return
		}
		c.disconnecting = false
		if err != nil {
			// Retry after another full grace rather than hammering a
			// controller the kernel refuses to delete.
			c.orphanSince = l.now()
		}
	})
}

func (l *Loop) verifyOrphan(name, nqn string) error {
	c, err := l.cfg.Sysfs.Controller(name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: controller gone", errNoLongerOrphan)
	case err != nil:
		return fmt.Errorf("re-read before disconnect: %w", err)
	case c.SubsysNQN != nqn || !l.managed(c):
		return fmt.Errorf("%w: controller now belongs to %s", errNoLongerOrphan, c.SubsysNQN)
	case l.owned(nqn):
		return fmt.Errorf("%w: a volume was staged on it", errNoLongerOrphan)
	}
	return nil
}
