package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/rds-csi/rds-csi/agent/heal"
	"github.com/rds-csi/rds-csi/kernel/sysfs"
)

// Repair backoff: the first reconnect attempt is immediate (the loss may be
// a manual disconnect of a reachable target), then attempts space out, but
// only to 2 s: the heal-latency target (a lost controller's consumer
// repaired within 2 s of the target's return) rules out longer waits, and an attempt
// on an unreachable target is one refused or timed-out TCP connect.
const (
	repairBackoffInitial = 500 * time.Millisecond
	repairBackoffMax     = 2 * time.Second
)

// errConsumersNeedRestart marks a repair that reconnected the volume but
// could not move every consumer onto the new device.
var errConsumersNeedRestart = fmt.Errorf("reconnected, but %w", heal.ErrConsumersStuck)

// Repair brings a lost volume back: it reconnects from the
// volume's record, retrying with capped backoff until the target answers or
// ctx ends, finds the (possibly renumbered) device by NQN and namespace ID,
// and moves the volume's consumers onto it. With a multipath front
// (Multipath) the reattach reloads the front and every consumer goes on
// where it was. Without one, raw block publishes are moved onto the new
// device, and a mounted filesystem, which cannot be moved, makes the repair
// say so (the volume turns failed with that cause) instead of pretending.
func (n *Node) Repair(ctx context.Context, v heal.Volume, _ heal.Health) error {
	staging := n.stagingOf(v.VolumeID)
	if staging == "" {
		return fmt.Errorf("volume %s: no staging path known", v.VolumeID)
	}
	release, err := n.acquireWait(ctx, v.VolumeID)
	if err != nil {
		return err
	}
	defer release()
	rec, ok, err := loadRecord(staging, v.VolumeID)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("volume %s: no record at %s", v.VolumeID, staging)
	}
	if rec.Refused != "" {
		// Refused by an earlier run: nothing made the disk the volume's
		// since (a new staging clears it).
		return n.refuseOtherDisk(ctx, rec, fmt.Errorf("%w: %s", ErrIdentityChanged, rec.Refused))
	}
	t := n.recordTarget(rec)
	var dev Device
	for delay := repairBackoffInitial; ; delay = min(2*delay, repairBackoffMax) {
		actx, cancel := context.WithTimeout(ctx, n.opts.AttachTimeout)
		dev, err = n.attach(actx, t)
		cancel()
		if err == nil {
			break
		}
		if errors.Is(err, ErrIdentityChanged) {
			return n.refuseOtherDisk(ctx, rec, err)
		}
		klog.InfoS("Reconnect attempt failed; retrying", "volumeID", v.VolumeID, "nqn", rec.NQN, "err", err, "in", delay)
		select {
		case <-ctx.Done():
			return fmt.Errorf("reconnecting %s: %w (last attempt: %w)", rec.NQN, ctx.Err(), err)
		case <-time.After(delay):
		}
	}
	klog.InfoS("Volume reconnected", "volumeID", v.VolumeID, "device", dev.Path, "dev", dev.Dev, "namespace", dev.namespace(), "was", rec.Device)
	changed := rec.Identity.IsZero() && !dev.Identity.IsZero()
	if changed {
		rec.Identity = dev.Identity // staged by an older agent: first seen now
	}
	if dev.Mapped && rec.Namespace != dev.Backing.String() {
		rec.Namespace, changed = dev.Backing.String(), true
	}
	if changed {
		if err := rec.save(); err != nil {
			return err
		}
	}
	if rec.Device == dev.Dev.String() {
		return nil // the front moved onto the new namespace: consumers go on
	}
	if !rec.Block {
		// The record keeps the old device: it is what the mount still uses,
		// and a later repair must see the same mismatch.
		return fmt.Errorf("%w: the filesystem of volume %s stays mounted from its old device %s until the volume is staged again", errConsumersNeedRestart, v.VolumeID, rec.Device)
	}
	rec.Device = dev.Dev.String()
	if err := rec.save(); err != nil {
		return err
	}
	return n.repointBlockTargets(ctx, rec, dev)
}

// refuseOtherDisk is the repair's answer to a namespace that is another
// disk: the volume is not put on it, and the consumers' way to the disk is
// cut rather than left to reach the other one. A front stops queueing, so
// that their I/O fails instead of waiting for a disk that is gone (it holds
// the old namespace, whose device number therefore cannot be reused).
// Without a front, a block publish is a device node of the old number, which
// the kernel may give to the new namespace: those publishes are unmounted.
// The error keeps the volume failed until it is staged again.
func (n *Node) refuseOtherDisk(ctx context.Context, rec record, cause error) error {
	klog.ErrorS(cause, "Refusing to heal the volume onto another disk", "volumeID", rec.VolumeID, "nqn", rec.NQN)
	var errs []error
	if rec.Refused == "" {
		rec.Refused = cause.Error()
		if err := rec.save(); err != nil {
			errs = append(errs, fmt.Errorf("recording the refusal: %w", err))
		}
	}
	if qs, ok := n.attacher.(frontQueueing); ok && rec.Namespace != "" {
		if err := qs.StopQueueing(ctx, n.recordTarget(rec)); err != nil {
			errs = append(errs, fmt.Errorf("making its front fail I/O: %w", err))
		}
	} else if rec.Block {
		if err := n.withdrawBlockTargets(ctx, rec); err != nil {
			errs = append(errs, fmt.Errorf("unmounting its block publishes: %w", err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w (and %w)", cause, errors.Join(errs...))
	}
	return cause
}

// withdrawBlockTargets unmounts the volume's block publishes.
func (n *Node) withdrawBlockTargets(ctx context.Context, rec record) error {
	mounts, err := n.mounter.List()
	if err != nil {
		return err
	}
	var errs []error
	for _, target := range rec.Targets {
		if _, ok := mountedAt(mounts, target); !ok {
			continue
		}
		if err := n.mounter.Unmount(ctx, target); err != nil {
			errs = append(errs, err)
			continue
		}
		klog.InfoS("Unmounted a block publish whose device may now be another disk", "volumeID", rec.VolumeID, "target", target)
	}
	return errors.Join(errs...)
}

// repointBlockTargets replaces each block publish, a bind mount of the old
// device node, with one of the new node. New opens reach the volume again;
// a process that kept the old device open does not (that needs the
// device-mapper indirection).
func (n *Node) repointBlockTargets(ctx context.Context, rec record, dev Device) error {
	mounts, err := n.mounter.List()
	if err != nil {
		return err
	}
	var errs []error
	for _, target := range rec.Targets {
		m, ok := mountedAt(mounts, target)
		if !ok {
			continue
		}
		// The node a bind mount shows keeps its device number even when a
		// new node of the same name replaced it, so ask the target itself.
		var st unix.Stat_t
		if err := unix.Stat(target, &st); err == nil && unix.Major(st.Rdev) == dev.Dev.Major && unix.Minor(st.Rdev) == dev.Dev.Minor {
			continue
		}
		if err := n.mounter.Unmount(ctx, target); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := n.mounter.BindMount(ctx, dev.Path, target, m.ReadOnly); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// acquireWait takes the volume's in-flight slot, waiting for a CSI call on
// it to finish: a repair must not race a stage or unstage of the volume.
func (n *Node) acquireWait(ctx context.Context, id string) (func(), error) {
	for {
		if release, ok := n.inFlight.TryAcquire(id); ok {
			return release, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// reconcileTimeout bounds the check of a volume's front after a reconnect.
const reconcileTimeout = time.Minute

// Notify is told of the health model's transitions (a heal.Notifier, on
// the loop's goroutine, so it only starts work). When a
// volume is live again after its controller reconnected by itself, the
// front over it may have failed its path meanwhile (I/O that erred while
// the controller was down, with fastIoFailTmo set): without a reload it
// would queue forever. The check runs on its own goroutine, after any CSI
// call or repair of the volume.
func (n *Node) Notify(tr heal.Transition) {
	h := tr.Health
	if h.State != heal.StateLive || tr.From != heal.StateReconnecting {
		return
	}
	if _, ok := n.attacher.(frontQueueing); !ok {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), reconcileTimeout)
		defer cancel()
		if err := n.reconcile(ctx, h.VolumeID); err != nil {
			klog.ErrorS(err, "Checking the volume's front after a reconnect failed", "volumeID", h.VolumeID)
		}
	}()
}

// reconcile re-attaches a staged volume whose namespace is present: no
// connect is made, and the front is reloaded if it no longer leads to the
// namespace with its path active.
func (n *Node) reconcile(ctx context.Context, id string) error {
	staging := n.stagingOf(id)
	if staging == "" {
		return nil // unstaged meanwhile
	}
	release, err := n.acquireWait(ctx, id)
	if err != nil {
		return err
	}
	defer release()
	rec, ok, err := loadRecord(staging, id)
	if err != nil || !ok {
		return err
	}
	t := n.recordTarget(rec)
	d, err := n.attacher.Find(ctx, t)
	if errors.Is(err, ErrNotAttached) || (err == nil && (!d.Mapped || d.Backing == sysfs.DevT{})) {
		return nil // no front, or no namespace below it: a repair's business
	}
	if err != nil {
		return err
	}
	_, err = n.attacher.Attach(ctx, t)
	return err
}
