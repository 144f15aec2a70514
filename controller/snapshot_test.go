package controller

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"

	"github.com/rds-csi/rds-csi/controller/routeros"
	"github.com/rds-csi/rds-csi/test/harness"
	"github.com/rds-csi/rds-csi/test/rdssim"
	"github.com/rds-csi/rds-csi/volume"
)

// snapFixture is a driver over a simulator whose backing files the test can
// read and write (the "node's" writes).
type snapFixture struct {
	d     *Driver
	rds   *harness.RDS
	state string
}

func newSnapFixture(t *testing.T, copyDelay time.Duration) *snapFixture {
	t.Helper()
	state := t.TempDir()
	d, rds := newDriver(t, rdssim.Config{StateDir: state, CopyDelay: copyDelay})
	return &snapFixture{d: d, rds: rds, state: state}
}

// file is the real backing file of a RouterOS path.
func (f *snapFixture) file(routerPath string) string {
	return filepath.Join(f.state, "files", filepath.FromSlash(strings.TrimPrefix(routerPath, "/")))
}

func (f *snapFixture) disk(t *testing.T, slot string) routeros.Disk {
	t.Helper()
	disk, err := f.rds.Disks.Get(context.Background(), slot)
	if err != nil {
		t.Fatal(err)
	}
	return disk
}

// volumeWith creates a volume and writes payload at offset into it.
func (f *snapFixture) volumeWith(t *testing.T, name string, size int64, payload []byte, offset int64) {
	t.Helper()
	if _, err := f.d.CreateVolume(context.Background(), createReq(name, size, nil)); err != nil {
		t.Fatal(err)
	}
	f.write(t, name, payload, offset)
}

func (f *snapFixture) write(t *testing.T, slot string, payload []byte, offset int64) {
	t.Helper()
	fh, err := os.OpenFile(f.file(f.disk(t, slot).FilePath), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = fh.Close() }()
	if _, err := fh.WriteAt(payload, offset); err != nil {
		t.Fatal(err)
	}
}

func (f *snapFixture) read(t *testing.T, slot string, n int, offset int64) []byte {
	t.Helper()
	fh, err := os.Open(f.file(f.disk(t, slot).FilePath))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = fh.Close() }()
	buf := make([]byte, n)
	if _, err := fh.ReadAt(buf, offset); err != nil {
		t.Fatal(err)
	}
	return buf
}

func (f *snapFixture) snapshot(t *testing.T, name, source string) *csi.Snapshot {
	t.Helper()
	resp, err := f.d.CreateSnapshot(context.Background(), &csi.CreateSnapshotRequest{Name: name, SourceVolumeId: source})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetSnapshot()
}

func (f *snapFixture) waitReady(t *testing.T, name, source string) *csi.Snapshot {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s := f.snapshot(t, name, source)
		if s.GetReadyToUse() {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("snapshot %s never became ready", name)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func restoreReq(name string, bytes int64, snapID string) *csi.CreateVolumeRequest {
	r := createReq(name, bytes, nil)
	r.VolumeContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: snapID}}}
	return r
}

func cloneReq(name string, bytes int64, volID string) *csi.CreateVolumeRequest {
	r := createReq(name, bytes, nil)
	r.VolumeContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: volID}}}
	return r
}

func TestSnapshotIdentityIsInItsFileNameAndSurvivesRetries(t *testing.T) {
	f := newSnapFixture(t, 0)
	f.volumeWith(t, "pvc-src", gib, []byte("x"), 0)
	first := f.snapshot(t, "snapshot-1b4e28ba-2fa1-11d2-883f-0016d3cca427", "pvc-src")
	if !snapshotSlotRE.MatchString(first.GetSnapshotId()) || len(first.GetSnapshotId()) > volume.MaxSlotLen {
		t.Fatalf("snapshot ID %q is not a snapshot slot", first.GetSnapshotId())
	}
	if first.GetSourceVolumeId() != "pvc-src" || first.GetSizeBytes() != gib || !first.GetReadyToUse() || first.GetCreationTime().AsTime().IsZero() {
		t.Fatalf("snapshot %+v", first)
	}
	disk := f.disk(t, first.GetSnapshotId())
	if disk.Export || disk.NQN != "" {
		t.Fatalf("snapshot disk is exported (%v) or has an NQN (%q)", disk.Export, disk.NQN)
	}
	if want := "/storage-pool/csi/" + first.GetSnapshotId() + "."; !strings.HasPrefix(disk.FilePath, want) || !strings.HasSuffix(disk.FilePath, ".pvc-src.img") {
		t.Fatalf("snapshot file %s, want %s<time>.<size>.pvc-src.img", disk.FilePath, want)
	}
	time.Sleep(1100 * time.Millisecond) // a retry a second later keeps the first creation time
	again := f.snapshot(t, "snapshot-1b4e28ba-2fa1-11d2-883f-0016d3cca427", "pvc-src")
	if again.GetSnapshotId() != first.GetSnapshotId() || !again.GetCreationTime().AsTime().Equal(first.GetCreationTime().AsTime()) || again.GetSizeBytes() != first.GetSizeBytes() {
		t.Fatalf("retry returned %+v, first %+v", again, first)
	}
}

// RouterOS prints nothing about a copy's origin or progress: a retry while
// the copy runs must recognise its snapshot from what we wrote ourselves,
// never answer AlreadyExists (the earlier driver's failure on hardware).
func TestARetryWhileTheCopyRunsIsTheSameSnapshotNotAlreadyExists(t *testing.T) {
	f := newSnapFixture(t, 2*time.Second)
	f.volumeWith(t, "pvc-src", 64<<20, []byte("x"), 0)
	first := f.snapshot(t, "snap-a", "pvc-src")
	if first.GetReadyToUse() {
		t.Fatal("a snapshot whose copy has just started is ready")
	}
	if f.disk(t, first.GetSnapshotId()).Size >= 64<<20 {
		t.Fatal("the simulator did not show a copy in progress")
	}
	again := f.snapshot(t, "snap-a", "pvc-src")
	if again.GetSnapshotId() != first.GetSnapshotId() || again.GetSizeBytes() != 64<<20 {
		t.Fatalf("retry during the copy: %+v", again)
	}
	list, err := f.d.ListSnapshots(context.Background(), &csi.ListSnapshotsRequest{SnapshotId: first.GetSnapshotId()})
	if err != nil || len(list.GetEntries()) != 1 || list.GetEntries()[0].GetSnapshot().GetReadyToUse() {
		t.Fatalf("list during the copy: %v %v", list, err)
	}
	// Restoring it before it is ready is refused with a retryable code.
	_, err = f.d.CreateVolume(context.Background(), restoreReq("pvc-early", 64<<20, first.GetSnapshotId()))
	wantCode(t, err, codes.Unavailable, "still being copied")
	// Nor is its source deleted while the copy runs.
	_, err = f.d.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{VolumeId: "pvc-src"})
	wantCode(t, err, codes.FailedPrecondition, "still being copied")
	f.disk(t, "pvc-src")
	f.waitReady(t, "snap-a", "pvc-src")
	if _, err := f.d.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{VolumeId: "pvc-src"}); err != nil {
		t.Fatalf("deleting the source of a ready snapshot: %v", err)
	}
	if s := f.snapshot(t, "snap-a", "pvc-src"); !s.GetReadyToUse() {
		t.Fatal("the snapshot suffered from its source's deletion")
	}
}

func TestTheSameSnapshotNameForAnotherVolumeIsAlreadyExists(t *testing.T) {
	f := newSnapFixture(t, 0)
	f.volumeWith(t, "pvc-a", gib, nil, 0)
	f.volumeWith(t, "pvc-b", gib, nil, 0)
	f.snapshot(t, "snap-x", "pvc-a")
	_, err := f.d.CreateSnapshot(context.Background(), &csi.CreateSnapshotRequest{Name: "snap-x", SourceVolumeId: "pvc-b"})
	wantCode(t, err, codes.AlreadyExists, "pvc-a")
}

func TestCreateSnapshotRefusesWhatItCannotSnapshot(t *testing.T) {
	f := newSnapFixture(t, 0)
	ctx := context.Background()
	_, err := f.d.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "s", SourceVolumeId: "pvc-none"})
	wantCode(t, err, codes.NotFound, "pvc-none")
	_, err = f.d.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "s", SourceVolumeId: `a" ; /system reboot`})
	wantCode(t, err, codes.NotFound, "")
	_, err = f.d.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{SourceVolumeId: "pvc-a"})
	wantCode(t, err, codes.InvalidArgument, "name")
	_, err = f.d.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "s", SourceVolumeId: "pvc-a", Parameters: map[string]string{"basePath": "/x"}})
	wantCode(t, err, codes.InvalidArgument, "basePath")
	// A snapshot is not a volume: it cannot be snapshotted.
	f.volumeWith(t, "pvc-a", gib, nil, 0)
	s := f.snapshot(t, "s", "pvc-a")
	_, err = f.d.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "s2", SourceVolumeId: s.GetSnapshotId()})
	wantCode(t, err, codes.NotFound, "not a volume")
}

// Snapshot slots must never be taken for volumes, nor volumes for
// snapshots, by any listing or deletion.
func TestSnapshotsAndVolumesNeverPassForEachOther(t *testing.T) {
	f := newSnapFixture(t, 0)
	ctx := context.Background()
	f.volumeWith(t, "pvc-a", gib, nil, 0)
	s := f.snapshot(t, "snap-1", "pvc-a")
	// A volume whose name happens to look like a snapshot ID keeps it as
	// its slot: it must still be a volume.
	lookalike := snapshotSlot("some other snapshot")
	f.volumeWith(t, lookalike, gib, nil, 0)

	vols, err := f.d.ListVolumes(ctx, &csi.ListVolumesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range vols.GetEntries() {
		if e.GetVolume().GetVolumeId() == s.GetSnapshotId() {
			t.Fatal("ListVolumes lists a snapshot")
		}
	}
	if len(vols.GetEntries()) != 2 {
		t.Fatalf("ListVolumes: %v", vols)
	}
	snaps, err := f.d.ListSnapshots(ctx, &csi.ListSnapshotsRequest{})
	if err != nil || len(snaps.GetEntries()) != 1 || snaps.GetEntries()[0].GetSnapshot().GetSnapshotId() != s.GetSnapshotId() {
		t.Fatalf("ListSnapshots: %v %v", snaps, err)
	}
	// DeleteVolume of a snapshot's ID refuses; the snapshot stays.
	_, err = f.d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: s.GetSnapshotId()})
	wantCode(t, err, codes.FailedPrecondition, "not a volume")
	f.disk(t, s.GetSnapshotId())
	// DeleteSnapshot of a volume's ID refuses; the volume stays.
	_, err = f.d.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: lookalike})
	wantCode(t, err, codes.FailedPrecondition, "not a snapshot")
	if disk := f.disk(t, lookalike); !disk.Export {
		t.Fatal("the volume lost its export")
	}
	if _, err := os.Stat(f.file(f.disk(t, lookalike).FilePath)); err != nil {
		t.Fatal(err)
	}
	// A snapshot is no volume to restore a clone from, a volume no snapshot.
	_, err = f.d.CreateVolume(ctx, cloneReq("pvc-c", gib, s.GetSnapshotId()))
	wantCode(t, err, codes.NotFound, "not a volume")
	_, err = f.d.CreateVolume(ctx, restoreReq("pvc-d", gib, lookalike))
	wantCode(t, err, codes.NotFound, "not a snapshot")
}

func TestDeleteSnapshotRemovesDiskAndFileAndIsIdempotent(t *testing.T) {
	f := newSnapFixture(t, 0)
	ctx := context.Background()
	f.volumeWith(t, "pvc-a", gib, nil, 0)
	s := f.snapshot(t, "snap-1", "pvc-a")
	path := f.disk(t, s.GetSnapshotId()).FilePath
	for range 2 {
		if _, err := f.d.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: s.GetSnapshotId()}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.rds.Disks.Get(ctx, s.GetSnapshotId()); !routeros.IsKind(err, routeros.KindNotFound) {
		t.Fatalf("snapshot disk still there: %v", err)
	}
	if _, err := os.Stat(f.file(path)); !os.IsNotExist(err) {
		t.Fatalf("snapshot file still there: %v", err)
	}
	// The source is untouched.
	if disk := f.disk(t, "pvc-a"); !disk.Export || disk.Size != gib {
		t.Fatalf("source after the snapshot's deletion: %+v", disk)
	}
	if _, err := f.d.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: "not-ours"}); err != nil {
		t.Fatalf("deleting an ID that was never ours: %v", err)
	}
}

// A snapshot whose disk is gone but whose file stayed (a DeleteSnapshot
// interrupted after /disk remove, or a copy that failed after creating its
// file) is cleaned by DeleteSnapshot and by a retried CreateSnapshot.
func TestLeftoverSnapshotFilesAreCleaned(t *testing.T) {
	f := newSnapFixture(t, 0)
	ctx := context.Background()
	f.volumeWith(t, "pvc-a", gib, nil, 0)
	s := f.snapshot(t, "snap-1", "pvc-a")
	path := f.disk(t, s.GetSnapshotId()).FilePath
	if err := f.rds.Disks.Remove(ctx, s.GetSnapshotId()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // the retry's creation time differs
	again := f.snapshot(t, "snap-1", "pvc-a")
	if _, err := os.Stat(f.file(path)); !os.IsNotExist(err) {
		t.Fatalf("the earlier attempt's file is left: %v", err)
	}
	path = f.disk(t, again.GetSnapshotId()).FilePath
	if err := f.rds.Disks.Remove(ctx, again.GetSnapshotId()); err != nil {
		t.Fatal(err)
	}
	if _, err := f.d.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: again.GetSnapshotId()}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(f.file(path)); !os.IsNotExist(err) {
		t.Fatalf("DeleteSnapshot left the file of a removed disk: %v", err)
	}
}

func TestListSnapshotsFiltersAndPages(t *testing.T) {
	f := newSnapFixture(t, 0)
	ctx := context.Background()
	f.volumeWith(t, "pvc-a", gib, nil, 0)
	f.volumeWith(t, "pvc-b", gib, nil, 0)
	ids := map[string]bool{}
	for _, n := range []string{"a1", "a2", "a3"} {
		ids[f.snapshot(t, n, "pvc-a").GetSnapshotId()] = true
	}
	b := f.snapshot(t, "b1", "pvc-b")

	resp, err := f.d.ListSnapshots(ctx, &csi.ListSnapshotsRequest{SourceVolumeId: "pvc-a"})
	if err != nil || len(resp.GetEntries()) != 3 {
		t.Fatalf("by source: %v %v", resp, err)
	}
	resp, err = f.d.ListSnapshots(ctx, &csi.ListSnapshotsRequest{SnapshotId: b.GetSnapshotId()})
	if err != nil || len(resp.GetEntries()) != 1 || resp.GetEntries()[0].GetSnapshot().GetSourceVolumeId() != "pvc-b" {
		t.Fatalf("by ID: %v %v", resp, err)
	}
	for _, req := range []*csi.ListSnapshotsRequest{
		{SnapshotId: b.GetSnapshotId(), SourceVolumeId: "pvc-a"},
		{SnapshotId: snapshotSlot("never made")},
		{SnapshotId: "pvc-a"},
		{SourceVolumeId: "pvc-none"},
	} {
		if resp, err := f.d.ListSnapshots(ctx, req); err != nil || len(resp.GetEntries()) != 0 {
			t.Errorf("%v: %v %v", req, resp, err)
		}
	}
	seen := map[string]bool{}
	token := ""
	for pages := 0; ; pages++ {
		resp, err := f.d.ListSnapshots(ctx, &csi.ListSnapshotsRequest{SourceVolumeId: "pvc-a", MaxEntries: 2, StartingToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range resp.GetEntries() {
			seen[e.GetSnapshot().GetSnapshotId()] = true
		}
		if token = resp.GetNextToken(); token == "" {
			break
		}
		if pages > 3 {
			t.Fatal("pagination does not end")
		}
	}
	if len(seen) != len(ids) || seen[b.GetSnapshotId()] {
		t.Fatalf("pages of pvc-a's snapshots: %v, want %v", seen, ids)
	}
	for id := range ids {
		if !seen[id] {
			t.Fatalf("pages missed %s: %v", id, seen)
		}
	}
	got, err := f.d.GetSnapshot(ctx, &csi.GetSnapshotRequest{SnapshotId: b.GetSnapshotId()})
	if err != nil || got.GetSnapshot().GetSourceVolumeId() != "pvc-b" {
		t.Fatalf("GetSnapshot: %v %v", got, err)
	}
	_, err = f.d.GetSnapshot(ctx, &csi.GetSnapshotRequest{SnapshotId: "pvc-a"})
	wantCode(t, err, codes.NotFound, "")
	_, err = f.d.ListSnapshots(ctx, &csi.ListSnapshotsRequest{StartingToken: "garbage"})
	wantCode(t, err, codes.Aborted, "")
	_, err = f.d.ListSnapshots(ctx, &csi.ListSnapshotsRequest{MaxEntries: -1})
	wantCode(t, err, codes.InvalidArgument, "")
}

// The restore is larger than the source; the data is the source's at the
// snapshot's time, not later writes; the node must not format it.
func TestRestoreCarriesTheSnapshotDataAtTheRequestedSize(t *testing.T) {
	for _, delay := range []time.Duration{0, time.Second} {
		t.Run(delay.String(), func(t *testing.T) {
			f := newSnapFixture(t, delay)
			ctx := context.Background()
			before, after := []byte("at snapshot time"), []byte("written afterward")
			f.volumeWith(t, "pvc-src", 64<<20, before, 48<<20)
			s := f.waitReady(t, "snap-1", "pvc-src")
			f.write(t, "pvc-src", after, 48<<20)

			resp, err := f.d.CreateVolume(ctx, restoreReq("pvc-restored", 128<<20, s.GetSnapshotId()))
			if err != nil {
				t.Fatal(err)
			}
			v := resp.GetVolume()
			if v.GetCapacityBytes() != 128<<20 || v.GetContentSource().GetSnapshot().GetSnapshotId() != s.GetSnapshotId() {
				t.Fatalf("restored volume %+v", v)
			}
			if _, blank := v.GetVolumeContext()[volume.KeyCreatedBlank]; blank {
				t.Fatal("a restored volume is marked blank: the node could format it")
			}
			if got := f.read(t, "pvc-restored", len(before), 48<<20); !bytes.Equal(got, before) {
				t.Fatalf("restored data %q, want %q", got, before)
			}
			disk := f.disk(t, "pvc-restored")
			if !disk.Export || disk.NQN != volume.NQN(volume.DefaultNQNPrefix, "pvc-restored") || disk.Size != 128<<20 {
				t.Fatalf("restored disk %+v", disk)
			}
			again, err := f.d.CreateVolume(ctx, restoreReq("pvc-restored", 128<<20, s.GetSnapshotId()))
			if err != nil || again.GetVolume().GetCapacityBytes() != 128<<20 {
				t.Fatalf("retry: %v %v", again, err)
			}
		})
	}
}

func TestRestoreAndCloneRefuseWhatTheyCannotDo(t *testing.T) {
	f := newSnapFixture(t, 0)
	ctx := context.Background()
	f.volumeWith(t, "pvc-src", 2*gib, nil, 0)
	s := f.snapshot(t, "snap-1", "pvc-src")
	_, err := f.d.CreateVolume(ctx, restoreReq("pvc-small", gib, s.GetSnapshotId()))
	wantCode(t, err, codes.OutOfRange, "never smaller")
	r := restoreReq("pvc-limit", 0, s.GetSnapshotId())
	r.CapacityRange = &csi.CapacityRange{LimitBytes: gib}
	_, err = f.d.CreateVolume(ctx, r)
	wantCode(t, err, codes.OutOfRange, "limit")
	_, err = f.d.CreateVolume(ctx, restoreReq("pvc-x", 2*gib, snapshotSlot("never made")))
	wantCode(t, err, codes.NotFound, "")
	_, err = f.d.CreateVolume(ctx, cloneReq("pvc-x", 2*gib, "pvc-none"))
	wantCode(t, err, codes.NotFound, "")
	// Source IDs come from the CO: hostile ones never reach RouterOS.
	for _, id := range []string{`a" ; /system reboot ; "`, `snap-0"] ; /system reboot`, "a\n/system reboot"} {
		_, err = f.d.CreateVolume(ctx, cloneReq("pvc-x", 2*gib, id))
		wantCode(t, err, codes.NotFound, "")
		_, err = f.d.CreateVolume(ctx, restoreReq("pvc-x", 2*gib, id))
		wantCode(t, err, codes.NotFound, "")
		_, err = f.d.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: id})
		if err != nil {
			t.Fatalf("DeleteSnapshot(%q): %v", id, err)
		}
	}
	for _, c := range f.rds.Sim.Commands() {
		if strings.Contains(c, "reboot") {
			t.Fatalf("a hostile source ID reached RouterOS: %s", c)
		}
	}
	// A volume of the same name made from another source, or none, is
	// judged by what the RDS shows: its export identity.
	if _, err := f.d.CreateVolume(ctx, createReq("pvc-plain", 2*gib, map[string]string{ParamNVMePort: "4421"})); err != nil {
		t.Fatal(err)
	}
	_, err = f.d.CreateVolume(ctx, restoreReq("pvc-plain", 2*gib, s.GetSnapshotId()))
	wantCode(t, err, codes.AlreadyExists, "port")
	for _, name := range []string{"pvc-x", "pvc-small", "pvc-limit"} {
		if _, err := f.rds.Disks.Get(ctx, name); !routeros.IsKind(err, routeros.KindNotFound) {
			t.Errorf("a refused request left disk %s: %v", name, err)
		}
	}
}

func TestCloneCopiesAVolumeInUseWithoutChangingIt(t *testing.T) {
	f := newSnapFixture(t, 0)
	ctx := context.Background()
	payload := []byte("clone me")
	f.volumeWith(t, "pvc-src", gib, payload, 4096)
	srcBefore := f.disk(t, "pvc-src")
	resp, err := f.d.CreateVolume(ctx, cloneReq("pvc-clone", 0, "pvc-src"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetVolume().GetCapacityBytes() != gib || resp.GetVolume().GetContentSource().GetVolume().GetVolumeId() != "pvc-src" {
		t.Fatalf("clone %+v", resp.GetVolume())
	}
	if got := f.read(t, "pvc-clone", len(payload), 4096); !bytes.Equal(got, payload) {
		t.Fatalf("clone data %q", got)
	}
	if srcAfter := f.disk(t, "pvc-src"); srcAfter != srcBefore {
		t.Fatalf("the source changed: %+v, was %+v", srcAfter, srcBefore)
	}
	if got := f.read(t, "pvc-src", len(payload), 4096); !bytes.Equal(got, payload) {
		t.Fatalf("source data %q after the clone", got)
	}
}

func TestOperationsOnASnapshotOrItsSourceInProgressAreAborted(t *testing.T) {
	f := newSnapFixture(t, 0)
	ctx := context.Background()
	f.volumeWith(t, "pvc-src", gib, nil, 0)
	release, _ := f.d.inFlight.TryAcquire("pvc-src")
	_, err := f.d.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "s", SourceVolumeId: "pvc-src"})
	wantCode(t, err, codes.Aborted, "pvc-src")
	release()
	s := f.snapshot(t, "s", "pvc-src")
	release, _ = f.d.inFlight.TryAcquire(s.GetSnapshotId())
	_, err = f.d.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: s.GetSnapshotId()})
	wantCode(t, err, codes.Aborted, "")
	_, err = f.d.CreateVolume(ctx, restoreReq("pvc-r", gib, s.GetSnapshotId()))
	wantCode(t, err, codes.Aborted, "")
	release()
}

func TestParseSnapshotFileAcceptsOnlyWhatItWrote(t *testing.T) {
	slot := snapshotSlot("x")
	m := snapshotMeta{slot: slot, created: time.Unix(1700000000, 0).UTC(), size: 4096, source: "pvc-a.b_c"}
	got, ok := parseSnapshotFile("/storage-pool/csi/" + m.fileName())
	if !ok || got != m {
		t.Fatalf("round trip: %+v %v, want %+v", got, ok, m)
	}
	for _, name := range []string{
		slot + ".img",
		slot + ".1700000000.4096.img",
		slot + ".1700000000.0.pvc-a.img",
		slot + ".01700000000.4096.pvc-a.img",
		slot + ".-1.4096.pvc-a.img",
		slot + ".1700000000.4096.pvc-a",
		"snap-x.1700000000.4096.pvc-a.img",
		"pvc-a.img",
	} {
		if m, ok := parseSnapshotFile("/storage-pool/csi/" + name); ok {
			t.Errorf("%s parsed as %+v", name, m)
		}
	}
}

// FuzzParseSnapshotFile: whatever RouterOS prints as a file path, the parser
// never panics, and what it accepts is exactly a name this driver writes.
func FuzzParseSnapshotFile(f *testing.F) {
	f.Add("/storage-pool/csi/" + snapshotSlot("x") + ".1700000000.4096.pvc-a.img")
	f.Add("/storage-pool/csi/pvc-a.img")
	f.Add(snapshotSlot("y") + ".0.1.a.b.c.img")
	f.Fuzz(func(t *testing.T, p string) {
		m, ok := parseSnapshotFile(p)
		if !ok {
			return
		}
		if got := m.fileName(); got != filepath.Base(p) {
			t.Fatalf("%q parsed as %+v, which names %q", p, m, got)
		}
		if !snapshotSlotRE.MatchString(m.slot) || !volume.ValidID(m.source) || m.size <= 0 {
			t.Fatalf("%q parsed as %+v", p, m)
		}
	})
}
