package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"k8s.io/klog/v2"

	"github.com/rds-csi/rds-csi/internal/fault"
	"github.com/rds-csi/rds-csi/kernel/blockdev"
	"github.com/rds-csi/rds-csi/kernel/command"
	"github.com/rds-csi/rds-csi/kernel/sysfs"
)

// formatMarker says that a format of a volume began and has not been seen
// to finish. It is written (synced) before mkfs starts and removed once
// mkfs has succeeded, in a directory of the agent's own (Options.StateDir)
// that outlives the staging: an mkfs killed half-way (agent restart, OOM
// kill, power loss, a timeout) leaves bytes in the first MiB and no
// filesystem, which the format gate would otherwise refuse for ever as
// "holds data". The marker is the proof that those bytes are mkfs's own, on
// a volume that was created blank and never handed to anyone.
type formatMarker struct {
	VolumeID string         `json:"volumeID"`
	FSType   string         `json:"fsType"`
	Identity sysfs.Identity `json:"identity"`
	Started  time.Time      `json:"started"`
}

func (n *Node) markerPath(volumeID string) string {
	return filepath.Join(n.opts.StateDir, "format-"+volumeID+".json")
}

// loadFormatMarker returns the volume's marker if there is one for this
// disk: a marker written for another identity (a disk since re-created) or
// another filesystem vouches for nothing here.
func (n *Node) loadFormatMarker(volumeID string, dev Device, fsType string) (bool, error) {
	if n.opts.StateDir == "" {
		return false, nil
	}
	var m formatMarker
	ok, err := readJSON(n.markerPath(volumeID), &m)
	if err != nil || !ok {
		return false, err
	}
	if m.VolumeID != volumeID || m.FSType != fsType || m.Identity.IsZero() || m.Identity != dev.Identity {
		klog.InfoS("Ignoring a format marker of another disk or filesystem", "volumeID", volumeID, "marker", m, "identity", dev.Identity.String(), "fsType", fsType)
		return false, nil
	}
	return true, nil
}

func (n *Node) saveFormatMarker(volumeID string, dev Device, fsType string) error {
	if n.opts.StateDir == "" {
		return nil
	}
	if err := os.MkdirAll(n.opts.StateDir, 0o700); err != nil {
		return err
	}
	return writeFileSynced(n.markerPath(volumeID), formatMarker{VolumeID: volumeID, FSType: fsType, Identity: dev.Identity, Started: time.Now().UTC()})
}

func (n *Node) removeFormatMarker(volumeID string) error {
	if n.opts.StateDir == "" {
		return nil
	}
	err := os.Remove(n.markerPath(volumeID))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// ensureFilesystem formats dev only when the controller created the volume
// blank AND the device proves blank now (its first MiB reads back as zeros
// and blkid finds no signature), or when this node's format marker proves
// that what is there is an interrupted format of this very disk and blkid
// finds no whole filesystem. Every other doubt refuses: formatting a volume
// that holds data destroys it, while refusing costs a retry.
func (n *Node) ensureFilesystem(ctx context.Context, id string, dev Device, fsType string, createdBlank bool) error {
	found, what, err := n.probe(ctx, dev.Path)
	if err != nil {
		return fmt.Errorf("%w: cannot tell whether %s is blank, so it is neither formatted nor mounted: %w", errPrecondition, dev.Path, err)
	}
	interrupted, err := n.loadFormatMarker(id, dev, fsType)
	if err != nil {
		return fmt.Errorf("%w: reading the format marker of volume %s: %w", errPrecondition, id, err)
	}
	if found && interrupted {
		// Only a whole filesystem counts: blkid checks the superblock
		// (and its checksum), where the quick probe reads magic bytes.
		whole, err := n.filesystemType(ctx, dev.Path)
		switch {
		case err != nil:
			return fmt.Errorf("%w: cannot tell whether the interrupted format of %s finished: %w", errPrecondition, dev.Path, err)
		case sameFilesystem(whole, fsType):
			klog.InfoS("An interrupted format of the volume had finished; mounting it", "volumeID", id, "device", dev.Path, "found", whole)
			return n.removeFormatMarker(id)
		case whole != "" || what != blockdev.UnknownData:
			// A whole filesystem of another kind, or the magic of one
			// without a whole superblock: not what an interrupted mkfs of
			// this volume leaves before its superblock. Someone wrote it.
			return fmt.Errorf("%w: %s holds %s, though this node's format of it was interrupted (%s): it is neither formatted nor mounted; find out what wrote it", errPrecondition, dev.Path, cmp.Or(whole, what), n.markerPath(id))
		}
		klog.InfoS("Formatting again after an interrupted format", "volumeID", id, "device", dev.Path, "found", what)
		found = false
	}
	if found {
		if !sameFilesystem(what, fsType) {
			return fmt.Errorf("%w: %s holds %s, not an %s filesystem: it is neither formatted nor mounted", errPrecondition, dev.Path, what, fsType)
		}
		klog.V(2).InfoS("Volume holds a filesystem; mounting without formatting", "device", dev.Path, "found", what)
		return nil
	}
	if !createdBlank {
		return fmt.Errorf("%w: %s holds no filesystem, and the volume was not created blank by this driver's controller: refusing to format it", errPrecondition, dev.Path)
	}
	var args []string
	switch fsType {
	case "ext4":
		// nodiscard: the fresh RDS disk is a sparse file that reads zeros.
		args = []string{"-F", "-q", "-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1", dev.Path}
	case "xfs":
		args = []string{"-q", "-K", dev.Path}
	default:
		return fmt.Errorf("%w: filesystem %q is not supported", errInvalid, fsType)
	}
	if err := n.saveFormatMarker(id, dev, fsType); err != nil {
		return fmt.Errorf("writing the format marker of volume %s before mkfs: %w", id, err)
	}
	fault.Crash(fault.FormatMarked)
	fault.CrashAfterPartialWrite(fault.MkfsPartial, dev.Path)
	fault.CrashWhileRunning(fault.MkfsRunning, "mkfs."+fsType, args...)
	_, _, err = command.Run(ctx, mkfsTimeout, "mkfs."+fsType, args...)
	n.metrics.count("format", err)
	if err != nil {
		return fmt.Errorf("formatting %s as %s: %w", dev.Path, fsType, err)
	}
	fault.Crash(fault.StageFormatted)
	klog.InfoS("Formatted blank volume", "device", dev.Path, "fsType", fsType)
	return n.removeFormatMarker(id)
}

// sameFilesystem tells whether a signature found on a device (a blkid TYPE
// or the name of a recognised magic) is a filesystem mountable as fsType.
// ext4 mounts ext2 and ext3 too.
func sameFilesystem(found, fsType string) bool {
	switch fsType {
	case "ext4":
		return found == "ext4" || found == "ext3" || found == "ext2" || found == "ext2/3/4"
	default:
		return found == fsType
	}
}
