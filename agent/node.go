package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/rds-csi/rds-csi/agent/heal"
	"github.com/rds-csi/rds-csi/internal/fault"
	"github.com/rds-csi/rds-csi/kernel/blockdev"
	"github.com/rds-csi/rds-csi/kernel/mount"
	"github.com/rds-csi/rds-csi/kernel/sysfs"
	"github.com/rds-csi/rds-csi/volume"
)

// Errors below the RPC boundary carry one of these; toStatus maps them.
var (
	errInvalid      = errors.New("invalid argument")
	errPrecondition = errors.New("failed precondition")
	errNotFound     = errors.New("not found")
	errUnavailable  = errors.New("unavailable")
)

const (
	mkfsTimeout = 5 * time.Minute
	growTimeout = 5 * time.Minute
	// statsTimeout bounds NodeGetVolumeStats: statfs on a filesystem whose
	// device hangs would block forever, and the kubelet calls it often.
	statsTimeout = 5 * time.Second
	// maxStackedUnmounts bounds the unmount loop of NodeUnpublish, which
	// also cleans mounts stacked by an earlier bug or a racing caller.
	maxStackedUnmounts = 16
)

var nodeCaps = []csi.NodeServiceCapability_RPC_Type{
	csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME,
	csi.NodeServiceCapability_RPC_EXPAND_VOLUME,
	csi.NodeServiceCapability_RPC_GET_VOLUME_STATS,
	csi.NodeServiceCapability_RPC_GET_VOLUME_HEALTH,
	csi.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
}

// NodeGetCapabilities lists what the node service implements.
func (n *Node) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	caps := make([]*csi.NodeServiceCapability, 0, len(nodeCaps))
	for _, c := range nodeCaps {
		caps = append(caps, &csi.NodeServiceCapability{Type: &csi.NodeServiceCapability_Rpc{Rpc: &csi.NodeServiceCapability_RPC{Type: c}}})
	}
	return &csi.NodeGetCapabilitiesResponse{Capabilities: caps}, nil
}

// NodeGetInfo returns the node ID: the Kubernetes node name, from which the
// host NQN is derived (volume.HostNQN).
func (n *Node) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: n.opts.NodeID}, nil
}

func (n *Node) acquire(id string) (func(), error) {
	release, ok := n.inFlight.TryAcquire(id)
	if !ok {
		return nil, status.Errorf(codes.Aborted, "an operation on volume %q is in progress", id)
	}
	return release, nil
}

func (n *Node) target(id string, c volume.Context) Target {
	return Target{VolumeID: id, Context: c, HostNQN: volume.HostNQN(n.opts.NodeID), HostID: volume.HostID(n.opts.NodeID), NSID: 1}
}

// recordTarget is the target of a staged volume, from its record alone.
func (n *Node) recordTarget(rec record) Target {
	c := volume.Context{NQN: rec.NQN, Address: rec.Address, Port: rec.Port, Connect: rec.Connect}
	return Target{VolumeID: rec.VolumeID, Context: c, HostNQN: volume.HostNQN(n.opts.NodeID), HostID: volume.HostID(n.opts.NodeID), NSID: rec.NSID, Identity: rec.Identity, MinSize: rec.Size}
}

// attach attaches the volume's disk and no other: an Attacher that does not
// check the identity itself (one without fronts or NVMe) is checked here.
func (n *Node) attach(ctx context.Context, t Target) (Device, error) {
	dev, err := n.attacher.Attach(ctx, t)
	if err != nil {
		return Device{}, err
	}
	return dev, checkIdentity(t, dev)
}

// NodeStageVolume attaches the volume and, for a filesystem volume, formats
// it if (and only if) it is provably blank and was created blank, then mounts
// it at the staging path.
func (n *Node) NodeStageVolume(ctx context.Context, req *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	id, staging, vc := req.GetVolumeId(), req.GetStagingTargetPath(), req.GetVolumeCapability()
	if err := checkRequest(id, staging, "staging target path", vc); err != nil {
		return nil, err
	}
	release, err := n.acquire(id)
	if err != nil {
		return nil, err
	}
	defer release()
	err = n.stage(ctx, id, staging, vc, req.GetVolumeContext())
	n.metrics.count("stage", err)
	if err != nil {
		return nil, toStatus(err)
	}
	return &csi.NodeStageVolumeResponse{}, nil
}

func (n *Node) stage(ctx context.Context, id, staging string, vc *csi.VolumeCapability, attrs map[string]string) error {
	c, err := volume.ParseContext(attrs)
	if err != nil {
		return fmt.Errorf("%w: %w", errInvalid, err)
	}
	if !n.managed(c.NQN) {
		return fmt.Errorf("%w: NQN %s is outside the managed prefix %s: the agent stages only volumes it may later disconnect", errInvalid, c.NQN, n.opts.ManagedNQNPrefix)
	}
	t := n.target(id, c)
	// From the connect until Track, the controller belongs to no tracked
	// volume: the hold keeps orphan removal away from it.
	defer n.tracker.Hold(c.NQN)()
	old, staged, err := loadRecord(staging, id)
	if err != nil {
		return fmt.Errorf("%w: reading the record of volume %s: %w", errPrecondition, id, err)
	}
	if staged {
		if old.NQN != c.NQN || old.NSID != t.NSID {
			return fmt.Errorf("%w: staging path %s holds volume %s as %s namespace %d, not %s: unstage it first", errPrecondition, staging, id, old.NQN, old.NSID, c.NQN)
		}
		// A NodeStage again (a retry, or after a restart) must find the
		// disk it staged before.
		t.Identity, t.MinSize = old.Identity, old.Size
	}
	rec := record{VolumeID: id, NQN: c.NQN, Address: c.Address, Port: c.Port, Connect: c.Connect, NSID: t.NSID, Block: vc.GetBlock() != nil, StagingPath: staging, PVCNamespace: c.PVCNamespace, PVCName: c.PVCName, Targets: old.Targets}
	if !rec.Block {
		rec.FSType = fsTypeOf(vc)
	}
	if !staged {
		// The intent goes down before anything changes on the host: an
		// agent killed from here on leaves a record, so that NodeUnstage
		// knows what to undo and a retry finds what it made.
		rec.Phase = phaseAttaching
		if err := rec.save(); err != nil {
			return fmt.Errorf("saving the volume record: %w", err)
		}
		n.rememberStaging(id, staging)
		fault.Crash(fault.StageIntent)
	}
	start := time.Now()
	actx, cancel := context.WithTimeout(ctx, n.opts.AttachTimeout)
	dev, err := n.attach(actx, t)
	cancel()
	if err != nil {
		return fmt.Errorf("attaching volume %s (%s at %s:%d): %w", id, c.NQN, c.Address, c.Port, err)
	}
	fault.Crash(fault.StageAttached)
	n.metrics.observeAttach(time.Since(start).Seconds())
	klog.V(2).InfoS("Volume attached", "volumeID", id, "device", dev.Path, "dev", dev.Dev, "identity", dev.Identity.String(), "duration", time.Since(start))

	rec.Phase, rec.Device = "", dev.Dev.String()
	if dev.Mapped {
		rec.Namespace = dev.Backing.String()
	}
	rec.Identity, rec.Size = old.Identity, max(old.Size, dev.Size)
	if rec.Identity.IsZero() {
		rec.Identity = dev.Identity
	}
	// The record goes down before any mount, so that an agent restarted in
	// the middle still knows what this staging path holds.
	if err := rec.save(); err != nil {
		return fmt.Errorf("saving the volume record: %w", err)
	}
	n.rememberStaging(id, staging)
	fault.Crash(fault.StageRecorded)
	if err := n.tracker.Track(rec.healVolume()); err != nil {
		return fmt.Errorf("tracking volume %s: %w", id, err)
	}
	if rec.Block {
		return nil // a block volume is only attached at stage
	}

	fsType := rec.FSType
	mounts, err := n.mounter.List()
	if err != nil {
		return err
	}
	if m, ok := mountedAt(mounts, staging); ok {
		if devOf(m) == dev.Dev {
			return nil // staged already, from the right device
		}
		return fmt.Errorf("%w: staging path %s is mounted from %s, not from the volume's device %s (%s)", errPrecondition, staging, m.Dev, dev.Dev, dev.Path)
	}
	if err := n.ensureFilesystem(ctx, id, dev, fsType, c.CreatedBlank); err != nil {
		return err
	}
	if err := os.MkdirAll(staging, 0o750); err != nil {
		return err
	}
	opts := append(mountOptions(vc), copyMountOptions(c, fsType)...)
	if readOnlyMode(vc) {
		opts = append(opts, "ro")
	}
	grow, err := n.copySmallerThanDevice(ctx, dev, c, vc)
	if err != nil {
		return err
	}
	if err := n.mounter.Mount(ctx, dev.Path, staging, fsType, opts); err != nil {
		return fmt.Errorf("mounting %s (%s) at %s: %w", dev.Path, fsType, staging, err)
	}
	fault.Crash(fault.StageMounted)
	if grow {
		return n.growAtStage(ctx, id, dev, staging, fsType)
	}
	return nil
}

// NodeUnstageVolume unmounts the staging path and disconnects the volume,
// refusing while anything else still uses the device.
func (n *Node) NodeUnstageVolume(ctx context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	id, staging := req.GetVolumeId(), req.GetStagingTargetPath()
	if id == "" || staging == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID and staging target path are required")
	}
	release, err := n.acquire(id)
	if err != nil {
		return nil, err
	}
	defer release()
	err = n.unstage(ctx, id, staging)
	n.metrics.count("unstage", err)
	if err != nil {
		return nil, toStatus(err)
	}
	return &csi.NodeUnstageVolumeResponse{}, nil
}

func (n *Node) unstage(ctx context.Context, id, staging string) error {
	rec, haveRecord, err := loadRecord(staging, id)
	if err != nil {
		return err
	}
	mounts, err := n.mounter.List()
	if err != nil {
		return err
	}
	stagedMount, mounted := mountedAt(mounts, staging)
	if !haveRecord && !mounted {
		return nil // never staged here, or unstaged already
	}
	if !haveRecord {
		// A mount without a record: unmount it, but without the record
		// nothing says which NQN to disconnect, so nothing is.
		klog.InfoS("Staging path mounted without a record; unmounting only", "volumeID", id, "staging", staging)
		return n.mounter.Unmount(ctx, staging)
	}
	t := n.recordTarget(rec)
	if err := n.removeHalfMadeFront(ctx, id); err != nil {
		return err
	}
	dev, err := n.attacher.Find(ctx, t)
	switch {
	case errors.Is(err, ErrNotAttached):
		// No device: disconnected already, or lost. What remains is the
		// mount of a dead filesystem, and perhaps a controller still
		// trying to reconnect, which must not outlive the volume. Mounts of
		// the recorded device elsewhere (pods not yet unpublished) still
		// refuse: a vanished device is no proof that nobody uses it.
		if old, perr := sysfs.ParseDevT(rec.Device); perr == nil {
			for _, m := range mounts {
				if devOf(m) == old && filepath.Clean(m.MountPoint) != filepath.Clean(staging) {
					return fmt.Errorf("%w: volume %s is still mounted at %s; unpublish it everywhere first", errPrecondition, id, m.MountPoint)
				}
			}
		}
		if mounted {
			if err := n.mounter.Unmount(ctx, staging); err != nil {
				return err
			}
		}
		return n.takeApart(ctx, t, rec)
	case err != nil:
		return err
	}

	if dev.Mapped && dev.Backing == (sysfs.DevT{}) && mounted {
		// The unmount would flush into a front that queues while it has
		// no path: it would wait for the target, and dropping the queue
		// instead would lose the writes.
		return fmt.Errorf("%w: volume %s has no path to its target and its front queues writes; the agent reconnects it when the target answers, and the unstage can then proceed", errUnavailable, id)
	}
	cctx, cancel := context.WithTimeout(ctx, n.opts.InUseTimeout)
	users, err := n.users(cctx, dev, mounts, staging)
	cancel()
	if err != nil {
		return fmt.Errorf("%w: cannot tell whether %s is still in use, so it stays connected: %w", errPrecondition, dev.Path, err)
	}
	if len(users) > 0 {
		return fmt.Errorf("%w: volume %s (%s) is still in use by %s; unpublish it everywhere first", errPrecondition, id, dev.Path, strings.Join(users, ", "))
	}
	if mounted {
		if devOf(stagedMount) != dev.Dev {
			klog.InfoS("Staging path is mounted from an older device of the volume", "volumeID", id, "mounted", stagedMount.Dev, "current", dev.Dev)
		}
		if err := n.mounter.Unmount(ctx, staging); err != nil {
			return err
		}
	}
	fault.Crash(fault.UnstageUnmounted)
	busy, err := blockdev.InUse(dev.Path)
	if err != nil {
		return fmt.Errorf("%w: exclusive-open check of %s: %w", errPrecondition, dev.Path, err)
	}
	if busy {
		return fmt.Errorf("%w: %s is still claimed by another user (exclusive open refused)", errPrecondition, dev.Path)
	}
	return n.takeApart(ctx, t, rec)
}

// takeApart disconnects a volume that nothing uses any more and forgets it.
// The record says so first, so that an agent restarted in the middle does
// not heal it back.
func (n *Node) takeApart(ctx context.Context, t Target, rec record) error {
	rec.Phase = phaseDetaching
	if err := rec.save(); err != nil {
		return err
	}
	if err := n.detach(ctx, t, rec); err != nil {
		// Still connected, and the CO may publish it again: staged as
		// before, healed after a restart too.
		rec.Phase = ""
		if serr := rec.save(); serr != nil {
			klog.ErrorS(serr, "Cannot mark the volume staged again after a failed disconnect", "volumeID", rec.VolumeID)
		}
		return err
	}
	fault.Crash(fault.UnstageDisconnected)
	n.forget(rec.VolumeID)
	return removeRecord(rec.StagingPath, rec.VolumeID)
}

// detach disconnects the volume if, and only if, its NQN is under the
// managed prefix. The health model stops tracking it first, so that a
// deliberate disconnect is not taken for a loss to heal. A failed disconnect
// is an error: the record stays and tracking resumes, so a retried unstage
// tries again.
func (n *Node) detach(ctx context.Context, t Target, rec record) error {
	nqn := rec.NQN
	if !n.managed(nqn) {
		klog.InfoS("NQN outside the managed prefix: left connected", "volumeID", t.VolumeID, "nqn", nqn, "prefix", n.opts.ManagedNQNPrefix)
		return nil
	}
	n.tracker.Untrack(t.VolumeID)
	if err := n.attacher.Detach(ctx, t); err != nil {
		if terr := n.tracker.Track(rec.healVolume()); terr != nil {
			klog.ErrorS(terr, "Cannot track the volume again", "volumeID", t.VolumeID)
		}
		return fmt.Errorf("disconnecting %s: %w", nqn, err)
	}
	return nil
}

// users lists what still uses dev apart from the staging mount: other mounts
// of it, bind mounts of its device node, stacked devices and processes with it
// open. Each is a kernel fact, read within ctx.
func (n *Node) users(ctx context.Context, dev Device, mounts []mount.Entry, staging string) ([]string, error) {
	var users []string
	name := filepath.Base(dev.Path)
	for _, m := range mounts {
		if filepath.Clean(m.MountPoint) == filepath.Clean(staging) {
			continue
		}
		if devOf(m) == dev.Dev || (m.Root == "/"+name && m.FSType == "devtmpfs") {
			users = append(users, "mount "+m.MountPoint)
		}
	}
	holders, err := blockdev.Holders(n.opts.SysRoot, name)
	if err != nil {
		return nil, err
	}
	for _, h := range holders {
		users = append(users, "holder "+h)
	}
	procs, err := blockdev.Openers(ctx, n.opts.ProcRoot, dev.Dev.Major, dev.Dev.Minor)
	if err != nil {
		return nil, err
	}
	for _, p := range procs {
		if p.PID == os.Getpid() {
			continue
		}
		users = append(users, fmt.Sprintf("process %d (%s)", p.PID, p.Comm))
	}
	return users, nil
}

// NodePublishVolume bind-mounts the staged filesystem, or the device node of
// a block volume, at the target path.
func (n *Node) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	id, target, staging, vc := req.GetVolumeId(), req.GetTargetPath(), req.GetStagingTargetPath(), req.GetVolumeCapability()
	if err := checkRequest(id, target, "target path", vc); err != nil {
		return nil, err
	}
	if staging == "" {
		return nil, status.Error(codes.FailedPrecondition, "staging target path is required: the volume must be staged first")
	}
	release, err := n.acquire(id)
	if err != nil {
		return nil, err
	}
	defer release()
	err = n.publish(ctx, id, target, staging, vc, req.GetReadonly() || readOnlyMode(vc), req.GetVolumeContext())
	n.metrics.count("publish", err)
	if err != nil {
		return nil, toStatus(err)
	}
	return &csi.NodePublishVolumeResponse{}, nil
}

func (n *Node) publish(ctx context.Context, id, target, staging string, vc *csi.VolumeCapability, readOnly bool, attrs map[string]string) error {
	mounts, err := n.mounter.List()
	if err != nil {
		return err
	}
	// Checked before the target is created, so a refused publish leaves
	// nothing behind.
	if vc.GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER {
		if others := n.otherTargets(id, staging, target, mounts); len(others) > 0 {
			return fmt.Errorf("%w: volume %s is single-writer and already published at %s", errPrecondition, id, strings.Join(others, ", "))
		}
	}
	var source string
	var dev sysfs.DevT
	if vc.GetBlock() != nil {
		if _, err := volume.ParseContext(attrs); err != nil {
			return fmt.Errorf("%w: %w", errInvalid, err)
		}
		rec, ok, err := loadRecord(staging, id)
		if err != nil {
			return err
		}
		if !ok || !rec.attached() {
			return fmt.Errorf("%w: volume %s is not staged at %s", errPrecondition, id, staging)
		}
		t := n.recordTarget(rec)
		d, err := n.attacher.Find(ctx, t)
		if errors.Is(err, ErrNotAttached) {
			return fmt.Errorf("%w: volume %s is not staged on this node", errPrecondition, id)
		}
		if err != nil {
			return err
		}
		// The device handed out must be the staged disk: a namespace
		// present under the volume's NQN is checked (a front whose
		// namespace is away is the volume's all the same: it queues).
		if !d.Mapped || d.Backing != (sysfs.DevT{}) {
			if err := checkIdentity(t, d); err != nil {
				return err
			}
		}
		source, dev = d.Path, d.Dev
		if err := n.setBlockReadOnly(d, target, readOnly, mounts); err != nil {
			return err
		}
		if err := ensureFile(target); err != nil {
			return err
		}
	} else {
		m, ok := mountedAt(mounts, staging)
		if !ok {
			return fmt.Errorf("%w: volume %s is not staged at %s", errPrecondition, id, staging)
		}
		source, dev = staging, devOf(m)
		if err := os.MkdirAll(target, 0o750); err != nil {
			return err
		}
	}
	if m, ok := mountedAt(mounts, target); ok {
		if sameSource(m, dev, source) && m.ReadOnly == readOnly {
			return n.noteTarget(id, staging, target, true)
		}
		return fmt.Errorf("%w: target %s is already mounted from something else (%s, read-only %v)", errPrecondition, target, m.Dev, m.ReadOnly)
	}
	if err := n.mounter.BindMount(ctx, source, target, readOnly); err != nil {
		return fmt.Errorf("bind-mounting %s at %s: %w", source, target, err)
	}
	return n.noteTarget(id, staging, target, true)
}

// setBlockReadOnly makes the device's read-only flag match a block publish.
// A read-only bind mount does not stop writes through a device node, so a
// read-only publish sets the kernel's flag on the device itself; as the flag
// covers every opener, read-only and read-write publishes of one device on
// one node cannot be mixed.
func (n *Node) setBlockReadOnly(d Device, target string, readOnly bool, mounts []mount.Entry) error {
	var others []mount.Entry
	for _, m := range mounts {
		if filepath.Clean(m.MountPoint) != filepath.Clean(target) && m.FSType == "devtmpfs" && m.Root == "/"+filepath.Base(d.Path) {
			others = append(others, m)
		}
	}
	for _, m := range others {
		if m.ReadOnly != readOnly {
			return fmt.Errorf("%w: %s is published read-only=%v at %s; read-only and read-write publishes of a raw block volume cannot be mixed on one node", errPrecondition, d.Path, m.ReadOnly, m.MountPoint)
		}
	}
	current, err := blockdev.ReadOnly(d.Path)
	if err != nil {
		return err
	}
	if current == readOnly {
		return nil
	}
	return blockdev.SetReadOnly(d.Path, readOnly)
}

// sameSource tells whether mount m is the volume's: a filesystem mount of its
// device, or a bind mount of its device node (which shows devtmpfs).
func sameSource(m mount.Entry, dev sysfs.DevT, source string) bool {
	if devOf(m) == dev {
		return true
	}
	return m.FSType == "devtmpfs" && m.Root == "/"+filepath.Base(source)
}

// NodeUnpublishVolume unmounts the target (every stacked mount of it) and
// removes the target, never recursively.
func (n *Node) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	id, target := req.GetVolumeId(), req.GetTargetPath()
	if id == "" || target == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID and target path are required")
	}
	release, err := n.acquire(id)
	if err != nil {
		return nil, err
	}
	defer release()
	err = n.unpublish(ctx, id, target)
	n.metrics.count("unpublish", err)
	if err != nil {
		return nil, toStatus(err)
	}
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

func (n *Node) unpublish(ctx context.Context, id, target string) error {
	for range maxStackedUnmounts {
		mounts, err := n.mounter.List()
		if err != nil {
			return err
		}
		if _, ok := mountedAt(mounts, target); !ok {
			// os.Remove never recurses: a directory that still holds
			// something is an error, not something to delete.
			if err := os.Remove(target); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("removing target %s: %w", target, err)
			}
			return n.noteTarget(id, "", target, false)
		}
		if err := n.mounter.Unmount(ctx, target); err != nil {
			return err
		}
	}
	return fmt.Errorf("target %s is still mounted after %d unmounts", target, maxStackedUnmounts)
}

// NodeExpandVolume makes the device show its new size and grows the
// filesystem on it, reporting the size measured on the device.
func (n *Node) NodeExpandVolume(ctx context.Context, req *csi.NodeExpandVolumeRequest) (*csi.NodeExpandVolumeResponse, error) {
	id, path := req.GetVolumeId(), req.GetVolumePath()
	if id == "" || path == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID and volume path are required")
	}
	release, err := n.acquire(id)
	if err != nil {
		return nil, err
	}
	defer release()
	size, err := n.expand(ctx, id, path, req.GetStagingTargetPath(), req.GetCapacityRange().GetRequiredBytes(), req.GetVolumeCapability())
	n.metrics.count("expand", err)
	if err != nil {
		return nil, toStatus(err)
	}
	return &csi.NodeExpandVolumeResponse{CapacityBytes: size}, nil
}

func (n *Node) expand(ctx context.Context, id, path, staging string, required int64, vc *csi.VolumeCapability) (int64, error) {
	if staging == "" {
		staging = n.stagingOf(id)
	}
	if staging == "" {
		return 0, fmt.Errorf("%w: volume %s is not staged on this node", errNotFound, id)
	}
	rec, ok, err := loadRecord(staging, id)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, fmt.Errorf("%w: volume %s has no record at %s", errNotFound, id, staging)
	}
	t := n.recordTarget(rec)
	if err := n.attacher.Refresh(ctx, t, required); err != nil {
		return 0, fmt.Errorf("refreshing the size of volume %s: %w", id, err)
	}
	dev, err := n.attacher.Find(ctx, t)
	if err != nil {
		return 0, err
	}
	size, err := blockdev.Size(ctx, dev.Path)
	if err != nil {
		return 0, err
	}
	if size < required {
		return 0, fmt.Errorf("device %s shows %d bytes after the refresh, %d required", dev.Path, size, required)
	}
	if dev.Size > rec.Size {
		// The grown namespace is the volume's size now: a smaller one
		// later is not this disk.
		rec.Size = dev.Size
		if err := rec.save(); err != nil {
			return 0, err
		}
	}
	if rec.Block || vc.GetBlock() != nil {
		return size, nil
	}
	if err := growFilesystem(ctx, rec.FSType, dev.Path, staging); err != nil {
		return 0, err
	}
	klog.InfoS("Volume expanded on the node", "volumeID", id, "bytes", size)
	return size, nil
}

// NodeGetVolumeStats reports usage from statfs (filesystems) or the device
// size (block), bounded so that hung I/O becomes an error instead of a hung
// kubelet call.
func (n *Node) NodeGetVolumeStats(ctx context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	id, path := req.GetVolumeId(), req.GetVolumePath()
	if id == "" || path == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID and volume path are required")
	}
	usage, err := n.boundedUsage(ctx, path)
	if err != nil {
		return nil, toStatus(err)
	}
	return &csi.NodeGetVolumeStatsResponse{Usage: usage}, nil
}

// NodeGetVolumeHealth reports whether the volume can be read: its device
// is present and a bounded probe (statfs of the mount, or the size of the
// device) answers. CSI 1.13 moved the volume condition of NodeGetVolumeStats
// here.
func (n *Node) NodeGetVolumeHealth(ctx context.Context, req *csi.NodeGetVolumeHealthRequest) (*csi.NodeGetVolumeHealthResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID is required")
	}
	staging := req.GetStagingTargetPath()
	if staging == "" {
		staging = n.stagingOf(id)
	}
	if staging == "" {
		return nil, status.Errorf(codes.NotFound, "volume %s is not staged on this node", id)
	}
	rec, ok, err := loadRecord(staging, id)
	if err != nil {
		return nil, toStatus(err)
	}
	if !ok {
		return nil, status.Errorf(codes.NotFound, "volume %s has no record at %s", id, staging)
	}
	health := &csi.VolumeHealth{VolumeId: id}
	inaccessible := func(reason string, err error) (*csi.NodeGetVolumeHealthResponse, error) {
		health.HealthStatuses = []*csi.VolumeHealth_VolumeHealthEntry{{Status: csi.VolumeHealthErrorType_INACCESSIBLE, Reason: reason, Message: err.Error()}}
		return &csi.NodeGetVolumeHealthResponse{VolumeHealth: health}, nil
	}
	// The health model answers from memory: it never touches a device
	// whose I/O may hang.
	if h, ok := n.tracker.Health(id); ok && h.State != heal.StateUnknown && h.State != heal.StateLive {
		status := csi.VolumeHealthErrorType_INACCESSIBLE
		if h.State == heal.StateReconnecting || h.State == heal.StateHealing {
			status = csi.VolumeHealthErrorType_DEGRADED
		}
		msg := fmt.Sprintf("%s since %s", h.State, h.Since.UTC().Format(time.RFC3339))
		if h.LastCause != "" {
			msg += ": " + h.LastCause
		}
		health.HealthStatuses = []*csi.VolumeHealth_VolumeHealthEntry{{Status: status, Reason: healthReason(h.State), Message: msg}}
		return &csi.NodeGetVolumeHealthResponse{VolumeHealth: health}, nil
	}
	probe := req.GetVolumePublishPath()
	if rec.Block || probe == "" {
		dev, err := n.attacher.Find(ctx, n.recordTarget(rec))
		if err != nil {
			return inaccessible("DeviceMissing", err)
		}
		if rec.Block {
			probe = dev.Path
		} else {
			probe = staging
		}
	}
	if _, err := n.boundedUsage(ctx, probe); err != nil {
		return inaccessible("ReadFailed", err)
	}
	return &csi.NodeGetVolumeHealthResponse{VolumeHealth: health}, nil
}

// healthReason is the CamelCase reason CSI asks for.
func healthReason(s heal.State) string {
	switch s {
	case heal.StateReconnecting:
		return "Reconnecting"
	case heal.StateHealing:
		return "Healing"
	case heal.StateLost:
		return "ControllerLost"
	case heal.StateFailed:
		return "HealFailed"
	}
	return "Unknown"
}

// errHung marks a probe of a volume that did not answer in time.
var errHung = errors.New("volume did not answer in time: I/O to it may be hung")

func (n *Node) boundedUsage(ctx context.Context, path string) ([]*csi.VolumeUsage, error) {
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: volume path %s does not exist", errNotFound, path)
	}
	type result struct {
		usage []*csi.VolumeUsage
		err   error
	}
	// The probe may block in the kernel for as long as the device hangs;
	// the buffered channel lets it finish on its own after we gave up.
	done := make(chan result, 1)
	go func() {
		u, err := n.usage(ctx, path)
		done <- result{u, err}
	}()
	timer := time.NewTimer(statsTimeout)
	defer timer.Stop()
	select {
	case r := <-done:
		return r.usage, r.err
	case <-timer.C:
		return nil, fmt.Errorf("%w (%s, %s)", errHung, path, statsTimeout)
	}
}

func (n *Node) usage(ctx context.Context, path string) ([]*csi.VolumeUsage, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		size, err := blockdev.Size(ctx, path)
		if err != nil {
			return nil, err
		}
		return []*csi.VolumeUsage{{Unit: csi.VolumeUsage_BYTES, Total: size}}, nil
	}
	mounts, err := n.mounter.List()
	if err != nil {
		return nil, err
	}
	if _, ok := mountedAt(mounts, path); !ok {
		return nil, fmt.Errorf("%w: %s is not a mounted volume", errNotFound, path)
	}
	st2, err := mount.Statfs(ctx, path)
	if err != nil {
		return nil, err
	}
	return []*csi.VolumeUsage{
		{Unit: csi.VolumeUsage_BYTES, Total: st2.TotalBytes, Available: st2.AvailableBytes, Used: st2.UsedBytes},
		{Unit: csi.VolumeUsage_INODES, Total: st2.TotalInodes, Available: st2.FreeInodes, Used: st2.UsedInodes},
	}, nil
}

// checkRequest validates the fields every stage and publish call carries.
func checkRequest(id, path, pathName string, vc *csi.VolumeCapability) error {
	switch {
	case id == "":
		return status.Error(codes.InvalidArgument, "volume ID is required")
	case !volume.ValidID(id):
		return status.Errorf(codes.InvalidArgument, "volume ID %q is not one this driver issues", id)
	case path == "":
		return status.Errorf(codes.InvalidArgument, "%s is required", pathName)
	case vc == nil:
		return status.Error(codes.InvalidArgument, "volume capability is required")
	case vc.GetBlock() == nil && vc.GetMount() == nil:
		return status.Error(codes.InvalidArgument, "access type must be block or mount")
	}
	if m := vc.GetMount(); m != nil && m.GetFsType() != "" && m.GetFsType() != "ext4" && m.GetFsType() != "xfs" {
		return status.Errorf(codes.InvalidArgument, "filesystem %q is not supported: use ext4 or xfs", m.GetFsType())
	}
	return nil
}

func fsTypeOf(vc *csi.VolumeCapability) string {
	if t := vc.GetMount().GetFsType(); t != "" {
		return t
	}
	return volume.DefaultFSType
}

func mountOptions(vc *csi.VolumeCapability) []string {
	return slices.Clone(vc.GetMount().GetMountFlags())
}

func readOnlyMode(vc *csi.VolumeCapability) bool {
	switch vc.GetAccessMode().GetMode() {
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY, csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY:
		return true
	}
	return false
}

// ensureFile creates the empty file a block device node is bind-mounted on.
func ensureFile(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDONLY, 0o640)
	if err != nil {
		return fmt.Errorf("creating block target %s: %w", path, err)
	}
	return f.Close()
}

func (n *Node) rememberStaging(id, staging string) {
	n.mu.Lock()
	n.staging[id] = staging
	n.mu.Unlock()
}

// forget drops a volume that is no longer staged here.
func (n *Node) forget(id string) {
	n.tracker.Untrack(id)
	n.mu.Lock()
	delete(n.staging, id)
	n.mu.Unlock()
}

func (n *Node) stagingOf(id string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.staging[id]
}

// otherTargets lists the publish targets of the volume, other than target,
// that are still mounted: a record can keep a target whose unpublish it did
// not see (the agent was restarted), and a stale entry must not block.
func (n *Node) otherTargets(id, staging, target string, mounts []mount.Entry) []string {
	rec, ok, err := loadRecord(staging, id)
	if err != nil || !ok {
		return nil
	}
	var others []string
	for _, t := range rec.Targets {
		if _, mounted := mountedAt(mounts, t); t != target && mounted {
			others = append(others, t)
		}
	}
	return others
}

// noteTarget records (or forgets) a publish target in the volume record. A
// volume staged before an agent restart may have no known staging path yet;
// its record is then left for the restart scan to reconcile.
func (n *Node) noteTarget(id, staging, target string, add bool) error {
	if staging == "" {
		staging = n.stagingOf(id)
	}
	if staging == "" {
		return nil
	}
	rec, ok, err := loadRecord(staging, id)
	if err != nil || !ok {
		return err
	}
	var changed bool
	if add {
		changed = rec.addTarget(target)
	} else {
		changed = rec.removeTarget(target)
	}
	if !changed {
		return nil
	}
	return rec.save()
}

// toStatus maps an error to its gRPC status at the RPC boundary.
func toStatus(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Internal
	switch {
	case errors.Is(err, errInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, errPrecondition), errors.Is(err, ErrIdentityChanged):
		code = codes.FailedPrecondition
	case errors.Is(err, errNotFound), errors.Is(err, ErrNotAttached):
		code = codes.NotFound
	case errors.Is(err, errUnavailable):
		code = codes.Unavailable
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	}
	return status.Error(code, err.Error())
}
