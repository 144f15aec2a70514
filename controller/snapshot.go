package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	pathpkg "path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/klog/v2"

	"github.com/rds-csi/rds-csi/controller/routeros"
	"github.com/rds-csi/rds-csi/volume"
)

// A snapshot is a file disk copied from a volume with copy-from, never
// exported. Its slot is derived from the snapshot name alone, so a retried
// CreateSnapshot finds it; everything else that identifies it (the source
// volume, the creation time and the source's size) is written into the name
// of its backing file, the one place we control that RouterOS prints back
// (file-path=). Nothing depends on a field RouterOS might not print:
// docs/snapshots.md.
//
//	slot:  snap-<27 hex digits of SHA-256(snapshot name)>
//	file:  <directory of the source's file>/<slot>.<unix seconds>.<bytes>.<source volume ID>.img
const snapshotSlotPrefix = "snap-"

var snapshotSlotRE = regexp.MustCompile(`^snap-[0-9a-f]{27}$`)

// snapshotSlot derives the slot (and snapshot ID) of a snapshot name.
func snapshotSlot(name string) string {
	sum := sha256.Sum256([]byte(name))
	return snapshotSlotPrefix + hex.EncodeToString(sum[:])[:volume.MaxSlotLen-len(snapshotSlotPrefix)]
}

// snapshotMeta is a snapshot's identity, as its file name records it.
type snapshotMeta struct {
	slot    string
	created time.Time
	size    int64 // the source's size when the copy started: the copy's final size
	source  string
}

func (m snapshotMeta) fileName() string {
	return fmt.Sprintf("%s.%d.%d.%s.img", m.slot, m.created.Unix(), m.size, m.source)
}

// parseSnapshotFile reads the identity in a snapshot's file name; ok is false
// for any file that is not one.
func parseSnapshotFile(p string) (snapshotMeta, bool) {
	base, ok := strings.CutSuffix(pathpkg.Base(p), ".img")
	if !ok {
		return snapshotMeta{}, false
	}
	parts := strings.SplitN(base, ".", 4)
	if len(parts) != 4 || !snapshotSlotRE.MatchString(parts[0]) || !volume.ValidID(parts[3]) {
		return snapshotMeta{}, false
	}
	secs, err1 := strconv.ParseInt(parts[1], 10, 64)
	size, err2 := strconv.ParseInt(parts[2], 10, 64)
	if err1 != nil || err2 != nil || secs < 0 || size <= 0 || strconv.FormatInt(secs, 10) != parts[1] || strconv.FormatInt(size, 10) != parts[2] {
		return snapshotMeta{}, false
	}
	return snapshotMeta{slot: parts[0], created: time.Unix(secs, 0).UTC(), size: size, source: parts[3]}, true
}

// snapshot is a snapshot disk found on the RDS.
type snapshot struct {
	snapshotMeta
	// ready: the copy has reached the size the source had. RouterOS prints
	// no progress or origin of a copy; a copy in progress is assumed to show
	// a file that is still growing (docs/snapshots.md).
	ready bool
}

// snapshotOf recognises a snapshot disk: a snapshot slot, not exported and
// with no NQN (every volume has one), backed by a file whose name records
// this very slot. Anything else is not a snapshot, whatever its slot says.
func snapshotOf(disk routeros.Disk) (snapshot, bool) {
	if disk.Type != "file" || !snapshotSlotRE.MatchString(disk.Slot) || disk.Export || disk.NQN != "" {
		return snapshot{}, false
	}
	m, ok := parseSnapshotFile(disk.FilePath)
	if !ok || m.slot != disk.Slot {
		return snapshot{}, false
	}
	return snapshot{snapshotMeta: m, ready: disk.Size >= m.size}, true
}

func (s snapshot) csi() *csi.Snapshot {
	return &csi.Snapshot{
		SnapshotId:     s.slot,
		SourceVolumeId: s.source,
		SizeBytes:      s.size,
		CreationTime:   timestamppb.New(s.created),
		ReadyToUse:     s.ready,
	}
}

// checkSnapshotParams refuses VolumeSnapshotClass parameters: there are none
// yet, and a typo must not pass silently. The csi-snapshotter's own
// (--extra-create-metadata) are allowed.
func checkSnapshotParams(params map[string]string) error {
	var unknown []string
	for k := range params {
		if !strings.HasPrefix(k, reservedPrefix) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fmt.Errorf("unknown VolumeSnapshotClass parameter(s) %s: snapshots take none", strings.Join(unknown, ", "))
	}
	return nil
}

// CreateSnapshot copies a volume into a new, unexported snapshot disk, or
// returns the snapshot a previous call with the same name started.
func (d *Driver) CreateSnapshot(ctx context.Context, req *csi.CreateSnapshotRequest) (*csi.CreateSnapshotResponse, error) {
	name, source := req.GetName(), req.GetSourceVolumeId()
	if name == "" {
		return nil, status.Error(codes.InvalidArgument, "snapshot name is required")
	}
	if source == "" {
		return nil, status.Error(codes.InvalidArgument, "source volume ID is required")
	}
	if err := checkSnapshotParams(req.GetParameters()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if !volume.ValidID(source) {
		return nil, status.Errorf(codes.NotFound, "source volume %q does not exist", source)
	}
	slot := snapshotSlot(name)
	// The snapshot's slot excludes a concurrent create or delete of the
	// snapshot; the source's, a delete or an expansion of the source while
	// it is read.
	for _, key := range []string{slot, source} {
		release, ok := d.inFlight.TryAcquire(key)
		if !ok {
			return nil, status.Errorf(codes.Aborted, "an operation on %q is in progress", key)
		}
		defer release()
	}
	snap, err := d.ensureSnapshot(ctx, slot, source)
	if err != nil {
		return nil, toStatus(err)
	}
	klog.InfoS("Snapshot", "name", name, "snapshotID", slot, "sourceVolumeID", source, "bytes", snap.size, "readyToUse", snap.ready)
	return &csi.CreateSnapshotResponse{Snapshot: snap.csi()}, nil
}

// ensureSnapshot finds the snapshot in slot or starts its copy.
func (d *Driver) ensureSnapshot(ctx context.Context, slot, source string) (snapshot, error) {
	disk, err := d.rds.Get(ctx, slot)
	switch {
	case err == nil:
		return sameSnapshot(disk, source)
	case !routeros.IsKind(err, routeros.KindNotFound):
		return snapshot{}, err
	}
	src, err := d.rds.Get(ctx, source)
	if err != nil {
		return snapshot{}, err
	}
	if !d.ours(src) {
		return snapshot{}, &routeros.Error{Kind: routeros.KindNotFound, Command: "snapshot", Err: fmt.Errorf("disk %s is not a volume of this driver", source)}
	}
	// A copy that failed after its file appeared leaves the file behind,
	// and the next attempt has another creation time: clear what an
	// earlier attempt of this snapshot left, or it would keep its space.
	if err := d.removeSnapshotLeftovers(ctx, slot); err != nil {
		return snapshot{}, err
	}
	meta := snapshotMeta{slot: slot, created: time.Now().UTC().Truncate(time.Second), size: src.Size, source: source}
	spec := routeros.CopySpec{From: source, Slot: slot, FilePath: pathpkg.Dir(src.FilePath) + "/" + meta.fileName()}
	if err := d.rds.Copy(ctx, spec); err != nil && !routeros.IsKind(err, routeros.KindExists) {
		return snapshot{}, err
	}
	if disk, err = d.rds.Get(ctx, slot); err != nil {
		return snapshot{}, fmt.Errorf("reading back the new snapshot: %w", err)
	}
	return sameSnapshot(disk, source)
}

// sameSnapshot judges an existing disk in a snapshot's slot: the same
// snapshot (ready or not), or a conflict.
func sameSnapshot(disk routeros.Disk, source string) (snapshot, error) {
	snap, ok := snapshotOf(disk)
	if !ok {
		return snapshot{}, fmt.Errorf("%w: slot %s holds a disk that is not a snapshot (file %s, NQN %q)", errMismatch, disk.Slot, disk.FilePath, disk.NQN)
	}
	if snap.source != source {
		return snapshot{}, fmt.Errorf("%w: snapshot %s is of volume %s, not %s", errMismatch, disk.Slot, snap.source, source)
	}
	return snap, nil
}

// removeSnapshotLeftovers removes the files of snapshot slot that no disk
// uses. Only files whose names record this slot are candidates.
func (d *Driver) removeSnapshotLeftovers(ctx context.Context, slot string) error {
	files, err := d.rds.FilesWith(ctx, slot)
	if err != nil {
		return err
	}
	var left []string
	for _, f := range files {
		if m, ok := parseSnapshotFile(f.Name); ok && m.slot == slot {
			left = append(left, f.Name)
		}
	}
	if len(left) == 0 {
		return nil
	}
	disks, err := d.rds.List(ctx)
	if err != nil {
		return err
	}
	for _, p := range left {
		for _, disk := range disks {
			if disk.FilePath == p {
				return fmt.Errorf("%w: file %s of snapshot %s backs disk %s", errRefused, p, slot, disk.Slot)
			}
		}
		if err := d.removeFile(ctx, slot, p); err != nil {
			return err
		}
		klog.InfoS("Removed a snapshot file left by an earlier attempt", "snapshotID", slot, "file", p)
	}
	return nil
}

// refuseWhileSnapshotted refuses to delete a volume that a snapshot is
// still being copied from: if RouterOS copies in the background, removing
// the source could cut the copy short (docs/snapshots.md).
func (d *Driver) refuseWhileSnapshotted(ctx context.Context, id string) error {
	snaps, err := d.snapshots(ctx, "")
	if err != nil {
		return err
	}
	for _, s := range snaps {
		if s.source == id && !s.ready {
			return fmt.Errorf("%w: snapshot %s of volume %s is still being copied; retry when it is ready", errRefused, s.slot, id)
		}
	}
	return nil
}

// DeleteSnapshot removes the snapshot's disk and file. It is idempotent and
// never touches a disk that is not a snapshot.
func (d *Driver) DeleteSnapshot(ctx context.Context, req *csi.DeleteSnapshotRequest) (*csi.DeleteSnapshotResponse, error) {
	id := req.GetSnapshotId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "snapshot ID is required")
	}
	if !snapshotSlotRE.MatchString(id) {
		return &csi.DeleteSnapshotResponse{}, nil // no snapshot of ours has that ID
	}
	release, ok := d.inFlight.TryAcquire(id)
	if !ok {
		return nil, status.Errorf(codes.Aborted, "an operation on snapshot %q is in progress", id)
	}
	defer release()
	if err := d.deleteSnapshot(ctx, id); err != nil {
		return nil, toStatus(err)
	}
	klog.InfoS("Snapshot deleted", "snapshotID", id)
	return &csi.DeleteSnapshotResponse{}, nil
}

func (d *Driver) deleteSnapshot(ctx context.Context, id string) error {
	disk, err := d.rds.Get(ctx, id)
	switch {
	case routeros.IsKind(err, routeros.KindNotFound):
		return d.removeSnapshotLeftovers(ctx, id)
	case err != nil:
		return err
	}
	if _, ok := snapshotOf(disk); !ok {
		return fmt.Errorf("%w: disk %s is not a snapshot of this driver (file %s, NQN %q)", errRefused, id, disk.FilePath, disk.NQN)
	}
	if err := d.removeDisk(ctx, id); err != nil {
		return err
	}
	return d.removeFile(ctx, id, disk.FilePath)
}

// ListSnapshots pages through snapshots in ID order, optionally only one
// snapshot or the snapshots of one volume. Tokens work as in ListVolumes.
func (d *Driver) ListSnapshots(ctx context.Context, req *csi.ListSnapshotsRequest) (*csi.ListSnapshotsResponse, error) {
	if req.GetMaxEntries() < 0 {
		return nil, status.Error(codes.InvalidArgument, "max_entries must not be negative")
	}
	after, err := parseListToken(req.GetStartingToken())
	if err != nil {
		return nil, status.Error(codes.Aborted, err.Error())
	}
	snaps, err := d.snapshots(ctx, req.GetSnapshotId())
	if err != nil {
		return nil, toStatus(err)
	}
	var page []snapshot
	for _, s := range snaps {
		if s.slot > after && (req.GetSourceVolumeId() == "" || s.source == req.GetSourceVolumeId()) {
			page = append(page, s)
		}
	}
	sort.Slice(page, func(i, j int) bool { return page[i].slot < page[j].slot })
	resp := &csi.ListSnapshotsResponse{}
	if n := int(req.GetMaxEntries()); n > 0 && len(page) > n {
		page = page[:n]
		resp.NextToken = listTokenPrefix + page[n-1].slot
	}
	for _, s := range page {
		resp.Entries = append(resp.Entries, &csi.ListSnapshotsResponse_Entry{Snapshot: s.csi()})
	}
	return resp, nil
}

// GetSnapshot reports one snapshot, ready or not.
func (d *Driver) GetSnapshot(ctx context.Context, req *csi.GetSnapshotRequest) (*csi.GetSnapshotResponse, error) {
	id := req.GetSnapshotId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "snapshot ID is required")
	}
	snaps, err := d.snapshots(ctx, id)
	if err != nil {
		return nil, toStatus(err)
	}
	if len(snaps) == 0 {
		return nil, status.Errorf(codes.NotFound, "snapshot %q does not exist", id)
	}
	return &csi.GetSnapshotResponse{Snapshot: snaps[0].csi()}, nil
}

// snapshots returns every snapshot, or only the one with id.
func (d *Driver) snapshots(ctx context.Context, id string) ([]snapshot, error) {
	if id != "" {
		if !snapshotSlotRE.MatchString(id) {
			return nil, nil
		}
		disk, err := d.rds.Get(ctx, id)
		if routeros.IsKind(err, routeros.KindNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		if s, ok := snapshotOf(disk); ok {
			return []snapshot{s}, nil
		}
		return nil, nil
	}
	disks, err := d.rds.List(ctx)
	if err != nil {
		return nil, err
	}
	var snaps []snapshot
	for _, disk := range disks {
		if s, ok := snapshotOf(disk); ok {
			snaps = append(snaps, s)
		}
	}
	return snaps, nil
}

// errNotReady marks a source whose copy has not finished: retry later.
var errNotReady = errors.New("not ready")
