package controller

import (
	"context"
	"errors"
	"fmt"
	pathpkg "path"
	"sort"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/rds-csi/rds-csi/controller/routeros"
	"github.com/rds-csi/rds-csi/volume"
)

const (
	// allocationUnit: sizes are rounded up to it so that a 4 KiB-sector
	// filesystem and the 512-byte LBAs of the namespace cover every byte asked
	// for; a size is never rounded down.
	allocationUnit = 4096
	// defaultSize is used when a request names no capacity.
	defaultSize = 1 << 30
)

var controllerCaps = []csi.ControllerServiceCapability_RPC_Type{
	csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
	csi.ControllerServiceCapability_RPC_LIST_VOLUMES,
	csi.ControllerServiceCapability_RPC_GET_CAPACITY,
	csi.ControllerServiceCapability_RPC_EXPAND_VOLUME,
	csi.ControllerServiceCapability_RPC_PUBLISH_UNPUBLISH_VOLUME,
	csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT,
	csi.ControllerServiceCapability_RPC_LIST_SNAPSHOTS,
	csi.ControllerServiceCapability_RPC_GET_SNAPSHOT,
	csi.ControllerServiceCapability_RPC_CLONE_VOLUME,
}

// ControllerGetCapabilities lists what the controller implements.
func (d *Driver) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	caps := make([]*csi.ControllerServiceCapability, 0, len(controllerCaps))
	for _, c := range controllerCaps {
		caps = append(caps, &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{Rpc: &csi.ControllerServiceCapability_RPC{Type: c}}})
	}
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: caps}, nil
}

// CreateVolume creates an exported file disk, or returns the one a previous
// call created when its whole identity matches.
func (d *Driver) CreateVolume(ctx context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume name is required")
	}
	if err := checkCapabilities(req.GetVolumeCapabilities()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if req.GetVolumeContentSource() != nil {
		return d.createFromSource(ctx, req)
	}
	floor := filesystemFloor(req.GetVolumeCapabilities())
	size, err := sizeFor(req.GetCapacityRange(), floor)
	if err != nil {
		return nil, status.Error(codes.OutOfRange, err.Error())
	}
	params, err := d.parseParams(req.GetParameters())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	// Keyed by the slot, which is also the volume ID, so that a CreateVolume
	// and a DeleteVolume of the same volume exclude each other.
	slot := volume.SlotFor(req.GetName())
	release, ok := d.inFlight.TryAcquire(slot)
	if !ok {
		return nil, status.Errorf(codes.Aborted, "an operation on volume %q is in progress", req.GetName())
	}
	defer release()

	spec := routeros.DiskSpec{
		Slot:     slot,
		FilePath: params.basePath + "/" + slot + ".img",
		Size:     size,
		NQN:      volume.NQN(d.opts.NQNPrefix, slot),
		Port:     params.port,
	}
	// An existing disk is judged against the raised range: one below the
	// filesystem's minimum (made before the minimum was enforced) could
	// never be staged, so it is not the volume asked for.
	disk, err := d.ensureDisk(ctx, spec, floor.raise(req.GetCapacityRange()))
	if err != nil {
		return nil, toStatus(err)
	}
	vctx := params.volumeContext(spec.NQN, true)
	klog.InfoS("Volume created", "name", req.GetName(), "volumeID", slot, "bytes", disk.Size, "requiredBytes", req.GetCapacityRange().GetRequiredBytes())
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{
		VolumeId:      slot,
		CapacityBytes: disk.Size,
		VolumeContext: vctx.Map(),
	}}, nil
}

// ensureDisk finds or creates the disk of spec: at most three round trips
// (look, add, read back).
func (d *Driver) ensureDisk(ctx context.Context, spec routeros.DiskSpec, capRange *csi.CapacityRange) (routeros.Disk, error) {
	disk, err := d.rds.Get(ctx, spec.Slot)
	switch {
	case err == nil:
		return disk, sameIdentity(disk, spec, capRange)
	case !routeros.IsKind(err, routeros.KindNotFound):
		return routeros.Disk{}, err
	}
	if err := d.rds.Create(ctx, spec); err != nil {
		if !routeros.IsKind(err, routeros.KindExists) {
			return routeros.Disk{}, err
		}
		// Someone created it between our look and our add: judge it like any
		// existing disk.
	}
	disk, err = d.rds.Get(ctx, spec.Slot)
	if err != nil {
		return routeros.Disk{}, fmt.Errorf("reading back the new disk: %w", err)
	}
	return disk, sameIdentity(disk, spec, capRange)
}

// errMismatch marks an existing volume that differs from the request.
var errMismatch = errors.New("volume exists with a different identity")

// sameIdentity compares the whole identity of an existing disk with a
// request, not only its size: a retry must not adopt a disk exported under
// another NQN or port, or backed by another file.
func sameIdentity(disk routeros.Disk, spec routeros.DiskSpec, capRange *csi.CapacityRange) error {
	var diffs []string
	if disk.Size < capRange.GetRequiredBytes() || (capRange.GetLimitBytes() > 0 && disk.Size > capRange.GetLimitBytes()) {
		diffs = append(diffs, fmt.Sprintf("size %d is outside the requested range", disk.Size))
	}
	if disk.FilePath != spec.FilePath {
		diffs = append(diffs, fmt.Sprintf("file %s, want %s", disk.FilePath, spec.FilePath))
	}
	if disk.NQN != spec.NQN {
		diffs = append(diffs, fmt.Sprintf("NQN %s, want %s", disk.NQN, spec.NQN))
	}
	if disk.Port != spec.Port {
		diffs = append(diffs, fmt.Sprintf("port %d, want %d", disk.Port, spec.Port))
	}
	if !disk.Export {
		diffs = append(diffs, "not exported over NVMe/TCP")
	}
	if len(diffs) > 0 {
		return fmt.Errorf("%w: slot %s: %s", errMismatch, spec.Slot, strings.Join(diffs, "; "))
	}
	return nil
}

// DeleteVolume removes the disk and its backing file. It is idempotent, and
// also cleans a backing file whose disk is already gone.
func (d *Driver) DeleteVolume(ctx context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID is required")
	}
	if !volume.ValidID(id) {
		// Nothing this driver created can have that ID: already deleted.
		return &csi.DeleteVolumeResponse{}, nil
	}
	release, err := d.acquire(id)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := d.deleteVolume(ctx, id); err != nil {
		return nil, toStatus(err)
	}
	klog.InfoS("Volume deleted", "volumeID", id)
	return &csi.DeleteVolumeResponse{}, nil
}

// errRefused marks a destructive step refused because it is not certain to
// touch only this volume.
var errRefused = errors.New("refused")

func (d *Driver) deleteVolume(ctx context.Context, id string) error {
	disk, err := d.rds.Get(ctx, id)
	switch {
	case err == nil:
		if !d.ours(disk) {
			return fmt.Errorf("%w: disk %s is exported as %q, not %q: not a volume of this driver", errRefused, id, disk.NQN, volume.NQN(d.opts.NQNPrefix, id))
		}
		if err := d.refuseWhileSnapshotted(ctx, id); err != nil {
			return err
		}
		if err := d.removeDisk(ctx, id); err != nil {
			return err
		}
		return d.removeFile(ctx, id, disk.FilePath)
	case routeros.IsKind(err, routeros.KindNotFound):
		return d.removeLeftFile(ctx, id)
	default:
		return err
	}
}

// removeDisk removes the disk in slot id and checks it is gone: a remove
// that printed nothing may still have matched nothing, so success is what the
// RDS shows afterwards, not the lack of an error.
func (d *Driver) removeDisk(ctx context.Context, id string) error {
	if err := d.rds.Remove(ctx, id); err != nil {
		return err
	}
	if _, err := d.rds.Get(ctx, id); !routeros.IsKind(err, routeros.KindNotFound) {
		if err == nil {
			err = fmt.Errorf("disk %s is still there after /disk remove", id)
		}
		return err
	}
	return nil
}

// removeLeftFile removes the backing file of a disk that is already gone
// (a DeleteVolume interrupted between its two steps). It acts only when
// exactly one file has the volume's name and no disk uses it.
func (d *Driver) removeLeftFile(ctx context.Context, id string) error {
	files, err := d.rds.FilesNamed(ctx, id, id+".img")
	if err != nil || len(files) == 0 {
		return err
	}
	if len(files) > 1 {
		names := make([]string, len(files))
		for i, f := range files {
			names[i] = f.Name
		}
		return fmt.Errorf("%w: %d files are named %s.img (%s); remove the right one by hand", errRefused, len(files), id, strings.Join(names, ", "))
	}
	disks, err := d.rds.List(ctx)
	if err != nil {
		return err
	}
	for _, disk := range disks {
		if disk.FilePath == files[0].Name {
			return fmt.Errorf("%w: file %s backs disk %s", errRefused, files[0].Name, disk.Slot)
		}
	}
	return d.removeFile(ctx, id, files[0].Name)
}

// removeFile removes the backing file of volume id and checks it is gone.
func (d *Driver) removeFile(ctx context.Context, id, path string) error {
	if err := d.rds.RemoveFile(ctx, path); err != nil && !routeros.IsKind(err, routeros.KindNotFound) {
		return err
	}
	files, err := d.rds.FilesNamed(ctx, id, pathpkg.Base(path))
	if err != nil {
		return err
	}
	for _, f := range files {
		if f.Name == path {
			return fmt.Errorf("backing file %s is still there after /file remove", path)
		}
	}
	return nil
}

// ControllerExpandVolume grows the disk; it never shrinks one.
func (d *Driver) ControllerExpandVolume(ctx context.Context, req *csi.ControllerExpandVolumeRequest) (*csi.ControllerExpandVolumeResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID is required")
	}
	if req.GetCapacityRange() == nil {
		return nil, status.Error(codes.InvalidArgument, "capacity range is required")
	}
	if !volume.ValidID(id) {
		return nil, status.Errorf(codes.NotFound, "volume %q does not exist", id)
	}
	// An existing volume already has its filesystem: no floor applies.
	size, err := sizeFor(req.GetCapacityRange(), fsFloor{})
	if err != nil {
		return nil, status.Error(codes.OutOfRange, err.Error())
	}
	release, err := d.acquire(id)
	if err != nil {
		return nil, err
	}
	defer release()

	disk, err := d.rds.Get(ctx, id)
	if err != nil {
		return nil, toStatus(err)
	}
	if disk.Size < size {
		if err := d.rds.Resize(ctx, id, size); err != nil {
			return nil, toStatus(err)
		}
		if disk, err = d.rds.Get(ctx, id); err != nil {
			return nil, toStatus(err)
		}
		if disk.Size < size {
			return nil, status.Errorf(codes.Internal, "disk %s reports %d bytes after growing to %d", id, disk.Size, size)
		}
		klog.InfoS("Volume expanded", "volumeID", id, "bytes", disk.Size)
	}
	// A raw block volume needs nothing from the node; a filesystem must grow.
	block := req.GetVolumeCapability().GetBlock() != nil
	return &csi.ControllerExpandVolumeResponse{CapacityBytes: disk.Size, NodeExpansionRequired: !block}, nil
}

// ValidateVolumeCapabilities confirms the capabilities this driver supports.
func (d *Driver) ValidateVolumeCapabilities(ctx context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID is required")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "volume capabilities are required")
	}
	if !volume.ValidID(id) {
		return nil, status.Errorf(codes.NotFound, "volume %q does not exist", id)
	}
	if _, err := d.rds.Get(ctx, id); err != nil {
		return nil, toStatus(err)
	}
	if err := checkCapabilities(req.GetVolumeCapabilities()); err != nil {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: err.Error()}, nil
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext:      req.GetVolumeContext(),
		VolumeCapabilities: req.GetVolumeCapabilities(),
		Parameters:         req.GetParameters(),
	}}, nil
}

// ListVolumes pages through this driver's volumes in slot order. The token is
// the last volume ID of the previous page, so volumes created or deleted
// between pages neither repeat nor shift the rest.
func (d *Driver) ListVolumes(ctx context.Context, req *csi.ListVolumesRequest) (*csi.ListVolumesResponse, error) {
	if req.GetMaxEntries() < 0 {
		return nil, status.Error(codes.InvalidArgument, "max_entries must not be negative")
	}
	after, err := parseListToken(req.GetStartingToken())
	if err != nil {
		return nil, status.Error(codes.Aborted, err.Error())
	}
	disks, err := d.rds.List(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	var mine []routeros.Disk
	for _, disk := range disks {
		if d.ours(disk) && disk.Slot > after {
			mine = append(mine, disk)
		}
	}
	sort.Slice(mine, func(i, j int) bool { return mine[i].Slot < mine[j].Slot })
	resp := &csi.ListVolumesResponse{}
	if n := int(req.GetMaxEntries()); n > 0 && len(mine) > n {
		mine = mine[:n]
		resp.NextToken = listTokenPrefix + mine[n-1].Slot
	}
	for _, disk := range mine {
		resp.Entries = append(resp.Entries, &csi.ListVolumesResponse_Entry{Volume: &csi.Volume{VolumeId: disk.Slot, CapacityBytes: disk.Size}})
	}
	return resp, nil
}

// listTokenPrefix marks the ListVolumes tokens this driver issues, so that a
// token from elsewhere is refused instead of silently starting mid-list.
const listTokenPrefix = "after:"

// parseListToken returns the volume ID a starting token continues after.
func parseListToken(token string) (string, error) {
	if token == "" {
		return "", nil
	}
	after, ok := strings.CutPrefix(token, listTokenPrefix)
	if !ok || !volume.ValidID(after) {
		return "", fmt.Errorf("starting token %q is not one this driver issued", token)
	}
	return after, nil
}

// GetCapacity reports the pool's free space less the configured reserve.
func (d *Driver) GetCapacity(ctx context.Context, req *csi.GetCapacityRequest) (*csi.GetCapacityResponse, error) {
	if caps := req.GetVolumeCapabilities(); len(caps) > 0 {
		if err := checkCapabilities(caps); err != nil {
			return &csi.GetCapacityResponse{}, nil
		}
	}
	params, err := d.parseParams(req.GetParameters())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	pool, err := d.rds.Pool(ctx, poolOf(params.basePath))
	if err != nil {
		return nil, toStatus(err)
	}
	return &csi.GetCapacityResponse{AvailableCapacity: max(pool.Free-d.opts.CapacityReserve, 0)}, nil
}

// minFilesystemBytes is, per filesystem, the smallest device its mkfs
// formats with the options the agent runs it with (agent ensureFilesystem).
// A blank volume below it could be created but never staged: every
// NodeStageVolume would fail in mkfs, leaving the pod in ContainerCreating.
//
// xfs, exact: measured with mkfs.xfs -q -K from Debian's xfsprogs 6.1.0 on
// sparse regular files (truncate -s SIZE f.img; mkfs.xfs -q -K f.img),
// bisected to the byte. 314572800 bytes (300 MiB) is the smallest size that
// formats; 314572799 bytes and every smaller size tried (16, 64, 256, 299
// MiB) fail with "Filesystem must be larger than 300MB." (the check counts
// data blocks below 300 MiB, so the threshold is a whole MiB, and a 4096-byte
// sector size gives the same). Every size from 300 MiB to 340 MiB in 64 KiB
// steps formats, and the 300 MiB filesystem mounts. (The image installs
// Debian trixie's newer xfsprogs, not measured here; the 300 MiB check has
// been in mkfs.xfs since xfsprogs 5.19.)
//
// ext4, with margin: measured the same way with mkfs.ext4 -F -q -E
// nodiscard,lazy_itable_init=1,lazy_journal_init=1 from Debian's e2fsprogs
// 1.47.0. The smallest size that formats depends on mke2fs.conf: 104 KiB with
// Debian's (1 KiB blocks for small filesystems), 224 KiB with 4 KiB blocks,
// 232 KiB with 4 KiB blocks and the "small" type's inode ratio; every size
// from 224 KiB to 4 MiB in 4 KiB steps formats with 1 and 4 KiB blocks.
// 1 MiB covers those with room for another release's defaults.
var minFilesystemBytes = map[string]int64{
	"xfs":  300 << 20,
	"ext4": 1 << 20,
}

// fsFloor is the smallest size a new volume may have because of the
// filesystem the node will make on it; the zero value is no floor.
type fsFloor struct {
	fsType string
	bytes  int64
}

// filesystemFloor is the largest filesystem minimum among the mount
// capabilities (an empty fsType is the node's default); block capabilities
// have none.
func filesystemFloor(caps []*csi.VolumeCapability) fsFloor {
	var f fsFloor
	for _, c := range caps {
		m := c.GetMount()
		if m == nil {
			continue
		}
		fsType := m.GetFsType()
		if fsType == "" {
			fsType = volume.DefaultFSType
		}
		if b := minFilesystemBytes[fsType]; b > f.bytes {
			f = fsFloor{fsType: fsType, bytes: b}
		}
	}
	return f
}

// raise returns r with its required bytes raised to the floor: the range a
// disk made for r must be in.
func (f fsFloor) raise(r *csi.CapacityRange) *csi.CapacityRange {
	if r.GetRequiredBytes() >= f.bytes {
		return r
	}
	return &csi.CapacityRange{RequiredBytes: f.bytes, LimitBytes: r.GetLimitBytes()}
}

// sizeFor picks the disk size for a capacity range: the required bytes (or a
// default), raised to the floor, rounded up to the allocation unit, within
// the limit.
func sizeFor(r *csi.CapacityRange, floor fsFloor) (int64, error) {
	required, limit := r.GetRequiredBytes(), r.GetLimitBytes()
	if required < 0 || limit < 0 {
		return 0, errors.New("capacity must not be negative")
	}
	if limit > 0 && required > limit {
		return 0, fmt.Errorf("required bytes %d exceed the limit %d", required, limit)
	}
	size := required
	if size == 0 {
		size = defaultSize
		if limit > 0 {
			size = min(size, limit)
		}
	}
	if size < floor.bytes {
		if limit > 0 && limit < floor.bytes {
			return 0, fmt.Errorf("an %s filesystem needs at least %d bytes (%d MiB), above the limit of %d bytes: mkfs.%s refuses a smaller device",
				floor.fsType, floor.bytes, floor.bytes>>20, limit, floor.fsType)
		}
		size = floor.bytes
	}
	if size > routeros.MaxSize {
		return 0, fmt.Errorf("%d bytes exceed the largest disk of %d bytes", size, routeros.MaxSize)
	}
	size = (size + allocationUnit - 1) / allocationUnit * allocationUnit
	if limit > 0 && size > limit {
		return 0, fmt.Errorf("no size in [%d, %d] is a multiple of %d bytes", required, limit, allocationUnit)
	}
	return size, nil
}

// checkCapabilities accepts single-node access of either type, and
// multi-node multi-writer for raw block only (KubeVirt live migration).
func checkCapabilities(caps []*csi.VolumeCapability) error {
	if len(caps) == 0 {
		return errors.New("volume capabilities are required")
	}
	for _, c := range caps {
		block := c.GetBlock() != nil
		if !block && c.GetMount() == nil {
			return errors.New("access type must be block or mount")
		}
		if m := c.GetMount(); m != nil {
			switch m.GetFsType() {
			case "", "ext4", "xfs":
			default:
				return fmt.Errorf("filesystem %q is not supported: use ext4 or xfs", m.GetFsType())
			}
		}
		switch mode := c.GetAccessMode().GetMode(); mode {
		case csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER,
			csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY,
			csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER,
			csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER:
		case csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER:
			if !block {
				return errors.New("ReadWriteMany is supported for raw block volumes only: two nodes mounting one ext4 or xfs filesystem corrupt it. " +
					"Use volumeMode: Block (KubeVirt live migration coordinates I/O through QEMU)")
			}
		default:
			return fmt.Errorf("access mode %s is not supported", mode)
		}
	}
	return nil
}

// toStatus maps an error to its gRPC status at the RPC boundary.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, errMismatch) || errors.Is(err, errIncompatible) {
		return status.Error(codes.AlreadyExists, err.Error())
	}
	if errors.Is(err, errRefused) || errors.Is(err, errConflict) {
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	if errors.Is(err, errBadContext) {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if errors.Is(err, errClusterUnknown) {
		return status.Error(codes.Unavailable, err.Error())
	}
	if errors.Is(err, errHandOff) {
		return status.Error(codes.Aborted, err.Error())
	}
	if errors.Is(err, errFenceMismatch) {
		return status.Error(codes.Internal, err.Error())
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	if errors.Is(err, context.Canceled) {
		return status.Error(codes.Canceled, err.Error())
	}
	code := codes.Internal
	switch routeros.KindOf(err) {
	case routeros.KindUnavailable:
		code = codes.Unavailable
	case routeros.KindTimeout:
		code = codes.DeadlineExceeded
	case routeros.KindNotFound:
		code = codes.NotFound
	case routeros.KindNoSpace:
		code = codes.ResourceExhausted
	case routeros.KindInvalid:
		code = codes.InvalidArgument
	case routeros.KindExists:
		code = codes.AlreadyExists
	}
	return status.Error(code, err.Error())
}
