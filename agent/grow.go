package agent

import (
	"context"
	"errors"
	"fmt"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"k8s.io/klog/v2"

	"github.com/rds-csi/rds-csi/kernel/blockdev"
	"github.com/rds-csi/rds-csi/kernel/command"
	"github.com/rds-csi/rds-csi/volume"
)

// growSlack is how far a filesystem may fall short of its device and still
// count as covering it. Small, so that a copy a few MiB larger than its
// source grows too; where mkfs.xfs left a tail too small for an allocation
// group, the growth it costs at each stage is a no-op xfs_growfs.
const growSlack = 1 << 20

// copyMountOptions are the mount options a copy needs: XFS refuses to mount
// a second filesystem with the UUID of one already mounted, which a restored
// snapshot or a clone staged beside its source has.
func copyMountOptions(c volume.Context, fsType string) []string {
	if !c.CreatedBlank && fsType == "xfs" {
		return []string{"nouuid"}
	}
	return nil
}

// copySmallerThanDevice tells, before the mount, whether the filesystem of a
// volume holding a copy (not created blank) is smaller than its device: a
// snapshot restored, or a volume cloned, into a larger volume carries its
// source's filesystem, and Kubernetes asks for no node expansion then
// (docs/snapshots.md). The superblock is read while nothing has the
// filesystem mounted: a mounted XFS writes its new size back lazily.
// Read-only stages are never grown.
func (n *Node) copySmallerThanDevice(ctx context.Context, dev Device, c volume.Context, vc *csi.VolumeCapability) (bool, error) {
	if c.CreatedBlank || readOnlyMode(vc) {
		return false, nil
	}
	devSize, err := blockdev.Size(ctx, dev.Path)
	if err != nil {
		return false, err
	}
	fsSize, err := blockdev.FilesystemSize(ctx, dev.Path)
	if err != nil {
		return false, err
	}
	return fsSize+growSlack < devSize, nil
}

// growAtStage grows the just mounted filesystem to its device. On failure it
// unmounts again, so that the retried stage mounts and grows anew instead of
// finding the volume staged.
func (n *Node) growAtStage(ctx context.Context, id string, dev Device, staging, fsType string) error {
	err := growFilesystem(ctx, fsType, dev.Path, staging)
	n.metrics.count("expand", err)
	if err != nil {
		if uerr := n.mounter.Unmount(ctx, staging); uerr != nil {
			return errors.Join(err, fmt.Errorf("unmounting %s after the failed growth: %w", staging, uerr))
		}
		return err
	}
	klog.InfoS("Filesystem grown to its device at stage", "volumeID", id, "device", dev.Path)
	return nil
}

// growFilesystem grows the mounted ext4 or xfs filesystem on devPath
// (mounted at mountPath) to the size of its device.
func growFilesystem(ctx context.Context, fsType, devPath, mountPath string) error {
	var err error
	switch fsType {
	case "ext4":
		_, _, err = command.Run(ctx, growTimeout, "resize2fs", devPath)
	case "xfs":
		_, _, err = command.Run(ctx, growTimeout, "xfs_growfs", mountPath)
	default:
		err = fmt.Errorf("%w: unknown filesystem %q", errPrecondition, fsType)
	}
	if err != nil {
		return fmt.Errorf("growing the %s filesystem on %s: %w", fsType, devPath, err)
	}
	return nil
}
