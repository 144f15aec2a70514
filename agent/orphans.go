package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"k8s.io/klog/v2"

	"github.com/rds-csi/rds-csi/kernel/blockdev"
	"github.com/rds-csi/rds-csi/kernel/sysfs"
	"github.com/rds-csi/rds-csi/volume"
)

// OrphanDisconnect wraps the disconnect the health model uses for orphans
// (managed controllers no staged volume claims). Before a controller goes,
// its namespace must be unused on this node: a volume whose record was lost
// is still never cut from under a mount or a process. Any doubt refuses.
func (n *Node) OrphanDisconnect(tree sysfs.Tree, disconnect func(ctx context.Context, controller string) error) func(ctx context.Context, controller string) error {
	return func(ctx context.Context, controller string) error {
		c, err := tree.Controller(controller)
		if err != nil {
			return err
		}
		if !n.managed(c.SubsysNQN) {
			return fmt.Errorf("refusing to disconnect %s: NQN %s is outside the managed prefix", controller, c.SubsysNQN)
		}
		// A volume of ours is named by its NQN: while a CSI call or a
		// repair works on it, it is not an orphan to sweep.
		id := strings.TrimPrefix(c.SubsysNQN, n.opts.ManagedNQNPrefix)
		if volume.ValidID(id) {
			release, ok := n.inFlight.TryAcquire(id)
			if !ok {
				return fmt.Errorf("refusing to disconnect orphan %s: an operation on volume %s is in progress", controller, id)
			}
			defer release()
			// A whole NodeStage may have run since the loop judged the
			// controller an orphan: a staged volume is nobody's orphan.
			if staging := n.stagingOf(id); staging != "" {
				rec, ok, err := loadRecord(staging, id)
				if err != nil {
					return fmt.Errorf("refusing to disconnect orphan %s: reading the record of volume %s: %w", controller, id, err)
				}
				if ok && rec.attached() {
					return fmt.Errorf("refusing to disconnect orphan %s: volume %s is staged at %s", controller, id, staging)
				}
			}
			if err := n.removeLeakedFront(ctx, id); err != nil {
				return fmt.Errorf("refusing to disconnect orphan %s: %w", controller, err)
			}
		}
		dev, err := n.attacher.Find(ctx, Target{Context: volume.Context{NQN: c.SubsysNQN}, NSID: 1})
		switch {
		case errors.Is(err, ErrNotAttached):
			return disconnect(ctx, controller)
		case err != nil:
			return fmt.Errorf("refusing to disconnect orphan %s: cannot find its device: %w", controller, err)
		}
		users, err := n.usersOf(ctx, dev)
		if err != nil {
			return fmt.Errorf("refusing to disconnect orphan %s: cannot tell whether %s is in use: %w", controller, dev.Path, err)
		}
		if len(users) > 0 {
			return fmt.Errorf("refusing to disconnect orphan %s: %s is in use by %s", controller, dev.Path, strings.Join(users, ", "))
		}
		return disconnect(ctx, controller)
	}
}

// frontRemover is an Attacher with fronts of its own (Multipath).
type frontRemover interface {
	// Front finds the volume's front; ok is false when it has none. A
	// front whose making was interrupted (no live table) has no Path.
	Front(ctx context.Context, volumeID string) (d Device, ok bool, err error)
	// RemoveFront removes it; the kernel refuses while it is open.
	RemoveFront(ctx context.Context, volumeID string) error
}

// removeLeakedFront removes the front of a volume whose controller is an
// orphan: an agent killed inside a NodeStage that was never retried nor
// unstaged leaves one, and as a holder of the namespace it would make the
// orphan's removal refuse for ever. The front is this agent's own (its name
// is the volume's; only this agent makes rds-csi- devices) and is removed
// only when nothing uses it: no mount or bind mount, no holder, no process,
// no exclusive opener. Anything else refuses, naming what uses it.
func (n *Node) removeLeakedFront(ctx context.Context, id string) error {
	fr, ok := n.attacher.(frontRemover)
	if !ok {
		return nil
	}
	d, exists, err := fr.Front(ctx, id)
	if err != nil || !exists {
		return err
	}
	if d.Path != "" {
		users, err := n.usersOf(ctx, d)
		if err != nil {
			return fmt.Errorf("cannot tell whether the front %s of volume %s is in use: %w", d.Path, id, err)
		}
		if len(users) > 0 {
			return fmt.Errorf("the front %s of volume %s is in use by %s", d.Path, id, strings.Join(users, ", "))
		}
	}
	if err := fr.RemoveFront(ctx, id); err != nil {
		return fmt.Errorf("removing the leaked front of volume %s: %w", id, err)
	}
	klog.InfoS("Removed the front of a volume no staging claims", "volumeID", id, "front", MapperName(id))
	return nil
}

// removeHalfMadeFront removes the volume's front if its making was
// interrupted (no live table): it maps nothing, so nothing can use it, but
// once its table is loaded it holds the namespace, and the unstage's in-use
// check would take it for a user. The kernel refuses while it is open.
func (n *Node) removeHalfMadeFront(ctx context.Context, id string) error {
	fr, ok := n.attacher.(frontRemover)
	if !ok {
		return nil
	}
	d, exists, err := fr.Front(ctx, id)
	if err != nil || !exists || d.Path != "" {
		return err
	}
	if err := fr.RemoveFront(ctx, id); err != nil {
		return fmt.Errorf("%w: removing the half-made front of volume %s: %w", errPrecondition, id, err)
	}
	klog.InfoS("Removed a front whose making was interrupted", "volumeID", id, "front", MapperName(id))
	return nil
}

// usersOf lists everything that uses dev, within the in-use bound: mounts
// and bind mounts of it, holders, processes, and an exclusive opener (a
// failed exclusive-open probe counts as one: doubt is a user).
func (n *Node) usersOf(ctx context.Context, dev Device) ([]string, error) {
	mounts, err := n.mounter.List()
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, n.opts.InUseTimeout)
	users, err := n.users(cctx, dev, mounts, "")
	cancel()
	if err != nil {
		return nil, err
	}
	if busy, err := blockdev.InUse(dev.Path); err != nil || busy {
		users = append(users, "an exclusive opener")
	}
	return users, nil
}
