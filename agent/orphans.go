package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"

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
		dev, err := n.attacher.Find(ctx, Target{Context: volume.Context{NQN: c.SubsysNQN}, NSID: 1})
		switch {
		case errors.Is(err, ErrNotAttached):
			return disconnect(ctx, controller)
		case err != nil:
			return fmt.Errorf("refusing to disconnect orphan %s: cannot find its device: %w", controller, err)
		}
		mounts, err := n.mounter.List()
		if err != nil {
			return err
		}
		cctx, cancel := context.WithTimeout(ctx, n.opts.InUseTimeout)
		users, err := n.users(cctx, dev, mounts, "")
		cancel()
		if err != nil {
			return fmt.Errorf("refusing to disconnect orphan %s: cannot tell whether %s is in use: %w", controller, dev.Path, err)
		}
		if busy, err := blockdev.InUse(dev.Path); err != nil || busy {
			users = append(users, "an exclusive opener")
		}
		if len(users) > 0 {
			return fmt.Errorf("refusing to disconnect orphan %s: %s is in use by %s", controller, dev.Path, strings.Join(users, ", "))
		}
		return disconnect(ctx, controller)
	}
}
