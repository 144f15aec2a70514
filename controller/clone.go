package controller

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/rds-csi/rds-csi/controller/routeros"
	"github.com/rds-csi/rds-csi/volume"
)

// How long CreateVolume waits for a copy that RouterOS runs in the
// background (if it ever does: docs/snapshots.md) before telling the
// provisioner to retry, when the request itself carries no deadline.
const (
	copyPollInterval = 500 * time.Millisecond
	copyWaitLimit    = 2 * time.Minute
)

// source is what a new volume is copied from.
type source struct {
	id   string
	size int64 // the size the copy reaches when complete
}

// createFromSource restores a snapshot or clones a volume into a new
// exported volume of at least the source's size. The volume is never
// marked blank: the node must not format it.
func (d *Driver) createFromSource(ctx context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	params, err := d.parseParams(req.GetParameters())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	slot := volume.SlotFor(req.GetName())
	srcID := req.GetVolumeContentSource().GetSnapshot().GetSnapshotId()
	if req.GetVolumeContentSource().GetVolume() != nil {
		srcID = req.GetVolumeContentSource().GetVolume().GetVolumeId()
	}
	if srcID == "" {
		return nil, status.Error(codes.InvalidArgument, "the volume content source names no snapshot or volume")
	}
	if srcID == slot {
		return nil, status.Errorf(codes.InvalidArgument, "volume %q cannot be its own source", req.GetName())
	}
	// The new volume's slot excludes a concurrent create or delete of it;
	// the source's, a delete (or expansion) of the source while it is copied.
	for _, key := range []string{slot, srcID} {
		release, ok := d.inFlight.TryAcquire(key)
		if !ok {
			return nil, status.Errorf(codes.Aborted, "an operation on %q is in progress", key)
		}
		defer release()
	}
	disk, err := d.ensureCopy(ctx, req, params, slot)
	if err != nil {
		return nil, copyStatus(err)
	}
	klog.InfoS("Volume created from a source", "name", req.GetName(), "volumeID", slot, "source", srcID, "bytes", disk.Size)
	vctx := params.volumeContext(volume.NQN(d.opts.NQNPrefix, slot), false)
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{
		VolumeId:      slot,
		CapacityBytes: disk.Size,
		VolumeContext: vctx.Map(),
		ContentSource: req.GetVolumeContentSource(),
	}}, nil
}

// ensureCopy finds or starts the copy, waits until it is complete, then grows
// it to the requested size. Each step is judged from what the RDS shows, so
// a retry resumes wherever an earlier attempt stopped.
func (d *Driver) ensureCopy(ctx context.Context, req *csi.CreateVolumeRequest, params classParams, slot string) (routeros.Disk, error) {
	src, err := d.sourceOf(ctx, req.GetVolumeContentSource())
	if err != nil {
		return routeros.Disk{}, err
	}
	capRange := req.GetCapacityRange()
	if capRange.GetLimitBytes() > 0 && capRange.GetLimitBytes() < src.size {
		return routeros.Disk{}, fmt.Errorf("%w: the limit of %d bytes is below the source's %d bytes", errOutOfRange, capRange.GetLimitBytes(), src.size)
	}
	if r := capRange.GetRequiredBytes(); r > 0 && r < src.size {
		return routeros.Disk{}, fmt.Errorf("%w: %d bytes requested, but the source %s has %d: a copy is never smaller than its source", errOutOfRange, r, src.id, src.size)
	}
	// No filesystem floor: the copy is never formatted, it holds the
	// source's filesystem.
	size, err := sizeFor(&csi.CapacityRange{RequiredBytes: max(capRange.GetRequiredBytes(), src.size), LimitBytes: capRange.GetLimitBytes()}, fsFloor{})
	if err != nil {
		return routeros.Disk{}, fmt.Errorf("%w: %w", errOutOfRange, err)
	}
	spec := routeros.DiskSpec{
		Slot:     slot,
		FilePath: params.basePath + "/" + slot + ".img",
		Size:     size,
		NQN:      volume.NQN(d.opts.NQNPrefix, slot),
		Port:     params.port,
	}
	disk, err := d.rds.Get(ctx, slot)
	if routeros.IsKind(err, routeros.KindNotFound) {
		err = d.rds.Copy(ctx, routeros.CopySpec{From: src.id, Slot: slot, FilePath: spec.FilePath, NQN: spec.NQN, Port: spec.Port})
		if err != nil && !routeros.IsKind(err, routeros.KindExists) {
			return routeros.Disk{}, err
		}
		disk, err = d.rds.Get(ctx, slot)
	}
	if err != nil {
		return routeros.Disk{}, err
	}
	// Everything but the size first: a disk of another identity is a
	// conflict whatever its size.
	if err := sameIdentity(disk, spec, nil); err != nil {
		return routeros.Disk{}, err
	}
	if disk, err = d.waitCopied(ctx, disk, src); err != nil {
		return routeros.Disk{}, err
	}
	if disk.Size < size {
		if err := d.rds.Resize(ctx, slot, size); err != nil {
			return routeros.Disk{}, err
		}
		if disk, err = d.rds.Get(ctx, slot); err != nil {
			return routeros.Disk{}, err
		}
	}
	return disk, sameIdentity(disk, spec, capRange)
}

// sourceOf resolves a content source to a disk to copy from: a snapshot that
// is ready, or a volume of this driver.
func (d *Driver) sourceOf(ctx context.Context, cs *csi.VolumeContentSource) (source, error) {
	if snap := cs.GetSnapshot(); snap != nil {
		id := snap.GetSnapshotId()
		if !snapshotSlotRE.MatchString(id) {
			return source{}, notFound("snapshot %q does not exist", id)
		}
		disk, err := d.rds.Get(ctx, id)
		if err != nil {
			return source{}, err
		}
		s, ok := snapshotOf(disk)
		switch {
		case !ok:
			return source{}, notFound("disk %s is not a snapshot of this driver", id)
		case !s.ready:
			return source{}, fmt.Errorf("%w: snapshot %s is still being copied (%d of %d bytes)", errNotReady, id, disk.Size, s.size)
		}
		return source{id: id, size: s.size}, nil
	}
	id := cs.GetVolume().GetVolumeId()
	if !volume.ValidID(id) {
		return source{}, notFound("volume %q does not exist", id)
	}
	disk, err := d.rds.Get(ctx, id)
	if err != nil {
		return source{}, err
	}
	if !d.ours(disk) {
		return source{}, notFound("disk %s is not a volume of this driver", id)
	}
	return source{id: id, size: disk.Size}, nil
}

// waitCopied polls until the copy has reached the source's size, bounded by
// the request's deadline (or copyWaitLimit).
func (d *Driver) waitCopied(ctx context.Context, disk routeros.Disk, src source) (routeros.Disk, error) {
	if disk.Size >= src.size {
		return disk, nil
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, copyWaitLimit)
		defer cancel()
	}
	t := time.NewTicker(copyPollInterval)
	defer t.Stop()
	for disk.Size < src.size {
		select {
		case <-ctx.Done():
			return disk, fmt.Errorf("%w: the copy of %s into %s is still running (%d of %d bytes)", errNotReady, src.id, disk.Slot, disk.Size, src.size)
		case <-t.C:
		}
		var err error
		if disk, err = d.rds.Get(ctx, disk.Slot); err != nil {
			return disk, err
		}
	}
	return disk, nil
}

// errOutOfRange marks a requested size a copy cannot have.
var errOutOfRange = errors.New("size out of range")

func notFound(format string, a ...any) error {
	return &routeros.Error{Kind: routeros.KindNotFound, Command: "source", Err: fmt.Errorf(format, a...)}
}

// copyStatus maps the errors of a copy at the RPC boundary: a source still
// being copied is Unavailable (the provisioner retries), a size below the
// source's is OutOfRange.
func copyStatus(err error) error {
	switch {
	case errors.Is(err, errNotReady):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, errOutOfRange):
		return status.Error(codes.OutOfRange, err.Error())
	}
	return toStatus(err)
}
