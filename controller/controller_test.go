package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rds-csi/rds-csi/controller/routeros"
	"github.com/rds-csi/rds-csi/test/harness"
	"github.com/rds-csi/rds-csi/test/rdssim"
	"github.com/rds-csi/rds-csi/volume"
)

const gib = int64(1) << 30

func newDriver(t *testing.T, simCfg rdssim.Config) (*Driver, *harness.RDS) {
	t.Helper()
	rds := harness.StartRDS(t, simCfg, routeros.ClientConfig{CommandTimeout: 5 * time.Second})
	opts := Options{Version: "test", BasePath: "/storage-pool/csi", NVMeAddress: "10.0.0.5"}
	if err := opts.Validate(); err != nil {
		t.Fatal(err)
	}
	return New(opts, rds.Disks), rds
}

func mountCap(mode csi.VolumeCapability_AccessMode_Mode) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: "ext4"}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
	}
}

func blockCap(mode csi.VolumeCapability_AccessMode_Mode) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
	}
}

var rwo = mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)

func createReq(name string, bytes int64, params map[string]string) *csi.CreateVolumeRequest {
	return &csi.CreateVolumeRequest{
		Name:               name,
		CapacityRange:      &csi.CapacityRange{RequiredBytes: bytes},
		VolumeCapabilities: []*csi.VolumeCapability{rwo},
		Parameters:         params,
	}
}

func wantCode(t *testing.T, err error, code codes.Code, mention string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("got %v, want code %s", err, code)
	}
	if mention != "" && !strings.Contains(err.Error(), mention) {
		t.Fatalf("error %q does not mention %q", err, mention)
	}
}

func TestCreateVolumeKeepsExactBytesAndCarriesTheNodeContext(t *testing.T) {
	d, rds := newDriver(t, rdssim.Config{})
	ctx := context.Background()
	// 1.5 GiB: the earlier driver's unit rounding turned this into 1G.
	resp, err := d.CreateVolume(ctx, createReq("pvc-exact", 3*gib/2, map[string]string{volume.KeyCtrlLossTmo: "600", volume.KeyMigrationTimeout: "90",
		// What the csi-provisioner adds with --extra-create-metadata.
		ParamPVCNamespace: "team-a", ParamPVCName: "data", "csi.storage.k8s.io/pv/name": "pvc-exact"}))
	if err != nil {
		t.Fatal(err)
	}
	v := resp.GetVolume()
	if v.GetVolumeId() != "pvc-exact" || v.GetCapacityBytes() != 3*gib/2 {
		t.Fatalf("volume %s of %d bytes, want pvc-exact of %d", v.GetVolumeId(), v.GetCapacityBytes(), 3*gib/2)
	}
	disk, err := rds.Disks.Get(ctx, "pvc-exact")
	if err != nil {
		t.Fatal(err)
	}
	if disk.Size != 3*gib/2 || disk.FilePath != "/storage-pool/csi/pvc-exact.img" || disk.NQN != "nqn.2000-02.com.mikrotik:pvc-exact" || disk.Port != 4420 || !disk.Export {
		t.Fatalf("disk on the RDS: %+v", disk)
	}
	vctx, err := volume.ParseContext(v.GetVolumeContext())
	if err != nil {
		t.Fatal(err)
	}
	want := volume.Context{
		NQN: "nqn.2000-02.com.mikrotik:pvc-exact", Address: "10.0.0.5", Port: 4420,
		Connect:          volume.ConnectOptions{CtrlLossTmo: 600, ReconnectDelay: 5, KeepAliveTmo: 5, FastIOFailTmo: -1},
		MigrationTimeout: 90 * time.Second, CreatedBlank: true,
		PVCNamespace: "team-a", PVCName: "data",
	}
	if vctx != want {
		t.Fatalf("volume context %+v, want %+v", vctx, want)
	}
}

func TestCreateVolumeWithoutExtraMetadataCarriesNoPVC(t *testing.T) {
	d, _ := newDriver(t, rdssim.Config{})
	resp, err := d.CreateVolume(context.Background(), createReq("pvc-anonymous", gib, nil))
	if err != nil {
		t.Fatal(err)
	}
	attrs := resp.GetVolume().GetVolumeContext()
	for _, k := range []string{volume.KeyPVCNamespace, volume.KeyPVCName} {
		if _, ok := attrs[k]; ok {
			t.Errorf("volume context has %s without the provisioner's metadata: %v", k, attrs)
		}
	}
}

func TestCreateVolumeRoundsUpNeverDown(t *testing.T) {
	d, _ := newDriver(t, rdssim.Config{})
	// Block volumes: a filesystem would raise sizes this small to its
	// minimum (TestCreateVolumeRaisesSmallFilesystemsToTheirMinimum).
	block := []*csi.VolumeCapability{blockCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)}
	req := createReq("pvc-odd", 4097, nil)
	req.VolumeCapabilities = block
	resp, err := d.CreateVolume(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetVolume().GetCapacityBytes(); got != 8192 {
		t.Fatalf("4097 bytes became %d, want 8192", got)
	}
	req = createReq("pvc-nofit", 4097, nil)
	req.VolumeCapabilities = block
	req.CapacityRange.LimitBytes = 4100
	_, err = d.CreateVolume(context.Background(), req)
	wantCode(t, err, codes.OutOfRange, "4096")
}

const (
	mib      = int64(1) << 20
	xfsMin   = 300 * mib // the smallest device mkfs.xfs formats
	ext4Min  = mib
	xfsLimit = "314572800 bytes (300 MiB)"
)

// fsCap is a single-node mount capability of fsType ("" leaves it to the
// node's default).
func fsCap(fsType string) *csi.VolumeCapability {
	c := mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)
	c.GetMount().FsType = fsType
	return c
}

func TestCreateVolumeRaisesSmallFilesystemsToTheirMinimum(t *testing.T) {
	block := blockCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)
	tests := []struct {
		name            string
		caps            []*csi.VolumeCapability
		required, limit int64
		want            int64  // the disk's size, when created
		refused         string // else the OutOfRange error mentions this
	}{
		{name: "xfs far below", caps: []*csi.VolumeCapability{fsCap("xfs")}, required: 100 * mib, want: xfsMin},
		{name: "xfs one byte", caps: []*csi.VolumeCapability{fsCap("xfs")}, required: 1, want: xfsMin},
		{name: "xfs one byte below", caps: []*csi.VolumeCapability{fsCap("xfs")}, required: xfsMin - 1, want: xfsMin},
		{name: "xfs at", caps: []*csi.VolumeCapability{fsCap("xfs")}, required: xfsMin, want: xfsMin},
		{name: "xfs just above", caps: []*csi.VolumeCapability{fsCap("xfs")}, required: xfsMin + 1, want: xfsMin + 4096},
		{name: "xfs above", caps: []*csi.VolumeCapability{fsCap("xfs")}, required: gib, want: gib},
		{name: "xfs default size", caps: []*csi.VolumeCapability{fsCap("xfs")}, want: gib},
		{name: "xfs below, limit above", caps: []*csi.VolumeCapability{fsCap("xfs")}, required: 100 * mib, limit: gib, want: xfsMin},
		{name: "xfs below, limit at", caps: []*csi.VolumeCapability{fsCap("xfs")}, required: 100 * mib, limit: xfsMin, want: xfsMin},
		{name: "xfs default size, limit at", caps: []*csi.VolumeCapability{fsCap("xfs")}, limit: xfsMin, want: xfsMin},
		{name: "xfs below, limit below", caps: []*csi.VolumeCapability{fsCap("xfs")}, required: 100 * mib, limit: 200 * mib, refused: xfsLimit},
		{name: "xfs limit one byte below", caps: []*csi.VolumeCapability{fsCap("xfs")}, required: 100 * mib, limit: xfsMin - 1, refused: "an xfs filesystem"},
		{name: "xfs default size, limit below", caps: []*csi.VolumeCapability{fsCap("xfs")}, limit: 200 * mib, refused: xfsLimit},
		// One xfs capability among others decides: the node may format xfs.
		{name: "block and xfs", caps: []*csi.VolumeCapability{block, fsCap("xfs")}, required: 100 * mib, want: xfsMin},
		{name: "ext4 and xfs", caps: []*csi.VolumeCapability{fsCap("ext4"), fsCap("xfs")}, required: 100 * mib, want: xfsMin},
		// Untouched: block at any size, ext4 (named or the node's default)
		// at a size xfs would raise.
		{name: "block small", caps: []*csi.VolumeCapability{block}, required: 100 * mib, want: 100 * mib},
		{name: "block tiny", caps: []*csi.VolumeCapability{block}, required: 4097, limit: 8192, want: 8192},
		{name: "ext4 small", caps: []*csi.VolumeCapability{fsCap("ext4")}, required: 100 * mib, limit: 200 * mib, want: 100 * mib},
		{name: "default fs small", caps: []*csi.VolumeCapability{fsCap("")}, required: 100 * mib, want: 100 * mib},
		{name: "ext4 at", caps: []*csi.VolumeCapability{fsCap("ext4")}, required: ext4Min, want: ext4Min},
		// ext4 has a minimum too, far below any real claim: mkfs.ext4
		// fails on devices of some hundred KiB.
		{name: "ext4 tiny", caps: []*csi.VolumeCapability{fsCap("ext4")}, required: 64 << 10, want: ext4Min},
		{name: "default fs tiny", caps: []*csi.VolumeCapability{fsCap("")}, required: 64 << 10, want: ext4Min},
		{name: "ext4 tiny, limit below", caps: []*csi.VolumeCapability{fsCap("ext4")}, required: 64 << 10, limit: 512 << 10, refused: "1048576 bytes (1 MiB)"},
	}
	d, rds := newDriver(t, rdssim.Config{})
	ctx := context.Background()
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := fmt.Sprintf("pvc-floor-%d", i)
			req := createReq(name, tt.required, nil)
			req.CapacityRange.LimitBytes = tt.limit
			req.VolumeCapabilities = tt.caps
			before := len(rds.Sim.Commands())
			resp, err := d.CreateVolume(ctx, req)
			if tt.refused != "" {
				wantCode(t, err, codes.OutOfRange, tt.refused)
				if sent := rds.Sim.Commands()[before:]; len(sent) != 0 {
					t.Fatalf("a refused size reached RouterOS: %q", sent)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			disk, err := rds.Disks.Get(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			if got := resp.GetVolume().GetCapacityBytes(); got != tt.want || disk.Size != tt.want {
				t.Fatalf("required %d, limit %d: capacity %d, disk %d bytes, want %d", tt.required, tt.limit, got, disk.Size, tt.want)
			}
		})
	}
}

func TestCreateVolumeRaisedToTheMinimumIsIdempotent(t *testing.T) {
	d, rds := newDriver(t, rdssim.Config{})
	ctx := context.Background()
	small := func(name string, limit int64) *csi.CreateVolumeRequest {
		req := createReq(name, 100*mib, nil)
		req.CapacityRange.LimitBytes = limit
		req.VolumeCapabilities = []*csi.VolumeCapability{fsCap("xfs")}
		return req
	}
	for _, limit := range []int64{0, gib} {
		name := fmt.Sprintf("pvc-raised-%d", limit)
		first, err := d.CreateVolume(ctx, small(name, limit))
		if err != nil {
			t.Fatal(err)
		}
		before := len(rds.Sim.Commands())
		again, err := d.CreateVolume(ctx, small(name, limit))
		if err != nil {
			t.Fatalf("limit %d: retry: %v", limit, err)
		}
		if again.GetVolume().GetVolumeId() != first.GetVolume().GetVolumeId() || again.GetVolume().GetCapacityBytes() != xfsMin || first.GetVolume().GetCapacityBytes() != xfsMin {
			t.Fatalf("limit %d: created %+v, retry returned %+v", limit, first.GetVolume(), again.GetVolume())
		}
		// The retry found the disk: one look, no add, no resize.
		if sent := rds.Sim.Commands()[before:]; len(sent) != 1 {
			t.Fatalf("limit %d: the retry sent %q, want one look", limit, sent)
		}
	}
	// A disk below the minimum (made before it was enforced) can never be
	// staged as xfs: it is not the volume asked for.
	if err := rds.Disks.Create(ctx, routeros.DiskSpec{Slot: "pvc-old-small", FilePath: "/storage-pool/csi/pvc-old-small.img", Size: 100 * mib, NQN: "nqn.2000-02.com.mikrotik:pvc-old-small", Port: 4420}); err != nil {
		t.Fatal(err)
	}
	_, err := d.CreateVolume(ctx, small("pvc-old-small", 0))
	wantCode(t, err, codes.AlreadyExists, "size 104857600 is outside the requested range")
}

func TestCreateVolumeIsIdempotentByWholeIdentity(t *testing.T) {
	d, rds := newDriver(t, rdssim.Config{})
	ctx := context.Background()
	first, err := d.CreateVolume(ctx, createReq("pvc-idem", gib, nil))
	if err != nil {
		t.Fatal(err)
	}
	again, err := d.CreateVolume(ctx, createReq("pvc-idem", gib, nil))
	if err != nil {
		t.Fatal(err)
	}
	if again.GetVolume().GetVolumeId() != first.GetVolume().GetVolumeId() || again.GetVolume().GetCapacityBytes() != gib {
		t.Fatalf("retry returned %+v", again.GetVolume())
	}
	_, err = d.CreateVolume(ctx, createReq("pvc-idem", 2*gib, nil))
	wantCode(t, err, codes.AlreadyExists, "size")
	_, err = d.CreateVolume(ctx, createReq("pvc-idem", gib, map[string]string{ParamNVMePort: "4421"}))
	wantCode(t, err, codes.AlreadyExists, "port 4420, want 4421")
	_, err = d.CreateVolume(ctx, createReq("pvc-idem", gib, map[string]string{ParamBasePath: "/storage-pool/other"}))
	wantCode(t, err, codes.AlreadyExists, "/storage-pool/other/pvc-idem.img")

	// A disk in the slot exported under another NQN is not ours to return.
	if err := rds.Disks.Create(ctx, routeros.DiskSpec{Slot: "pvc-foreign", FilePath: "/storage-pool/csi/pvc-foreign.img", Size: gib, NQN: "nqn.2000-02.com.example:pvc-foreign", Port: 4420}); err != nil {
		t.Fatal(err)
	}
	_, err = d.CreateVolume(ctx, createReq("pvc-foreign", gib, nil))
	wantCode(t, err, codes.AlreadyExists, "NQN")
}

func TestCreateVolumeTakesAtMostThreeRoundTrips(t *testing.T) {
	d, rds := newDriver(t, rdssim.Config{})
	before := len(rds.Sim.Commands())
	if _, err := d.CreateVolume(context.Background(), createReq("pvc-trips", gib, nil)); err != nil {
		t.Fatal(err)
	}
	if n := len(rds.Sim.Commands()) - before; n > 3 {
		t.Fatalf("CreateVolume sent %d RouterOS commands, want at most 3: %q", n, rds.Sim.Commands()[before:])
	}
}

func TestCreateVolumeWithoutSpaceIsResourceExhausted(t *testing.T) {
	d, _ := newDriver(t, rdssim.Config{PoolSize: 10 * gib})
	_, err := d.CreateVolume(context.Background(), createReq("pvc-huge", 20*gib, nil))
	wantCode(t, err, codes.ResourceExhausted, "")
}

func TestCreateVolumeRefusesBadParametersNamingThem(t *testing.T) {
	d, rds := newDriver(t, rdssim.Config{})
	tests := []struct {
		params  map[string]string
		mention string
	}{
		{map[string]string{"ctrlLossTimeout": "5"}, "ctrlLossTimeout"},
		{map[string]string{volume.KeyCtrlLossTmo: "forever"}, volume.KeyCtrlLossTmo},
		{map[string]string{volume.KeyReconnectDelay: "0"}, volume.KeyReconnectDelay},
		{map[string]string{ParamNVMePort: "99999"}, ParamNVMePort},
		{map[string]string{ParamNVMeAddress: "rds.example.com"}, ParamNVMeAddress},
		{map[string]string{volume.KeyMigrationTimeout: "5m"}, volume.KeyMigrationTimeout},
		// Injection through a parameter must be refused before RouterOS hears of it.
		{map[string]string{ParamBasePath: `/storage-pool/x" ; /system reboot ; "`}, ParamBasePath},
		{map[string]string{ParamBasePath: "/storage-pool/$(x)"}, ParamBasePath},
		{map[string]string{ParamBasePath: "/storage-pool/../etc"}, ParamBasePath},
		{map[string]string{ParamPVCNamespace: "team-a", ParamPVCName: "Data"}, ParamPVCName},
		{map[string]string{ParamPVCNamespace: "team_a", ParamPVCName: "data"}, ParamPVCNamespace},
		{map[string]string{ParamPVCName: "data"}, ParamPVCNamespace},
	}
	before := len(rds.Sim.Commands())
	for _, tt := range tests {
		_, err := d.CreateVolume(context.Background(), createReq("pvc-params", gib, tt.params))
		wantCode(t, err, codes.InvalidArgument, tt.mention)
	}
	if sent := rds.Sim.Commands()[before:]; len(sent) != 0 {
		t.Fatalf("invalid requests reached RouterOS: %q", sent)
	}
	// The provisioner's own keys are not ours to refuse.
	if _, err := d.CreateVolume(context.Background(), createReq("pvc-params", gib, map[string]string{ParamPVCName: "data", ParamPVCNamespace: "default", "csi.storage.k8s.io/pv/name": "pvc-params", "csi.storage.k8s.io/fstype": "xfs"})); err != nil {
		t.Fatal(err)
	}
}

func TestHostileVolumeNamesBecomeSafeSlots(t *testing.T) {
	d, rds := newDriver(t, rdssim.Config{})
	for _, name := range []string{`x" ; /system reboot ; "`, "a\n/disk remove [find]", "$(reboot)", "pvc-" + strings.Repeat("a", 60)} {
		resp, err := d.CreateVolume(context.Background(), createReq(name, gib, nil))
		if err != nil {
			t.Fatalf("%q: %v", name, err)
		}
		id := resp.GetVolume().GetVolumeId()
		if len(id) > 32 || !volume.ValidID(id) {
			t.Fatalf("%q got slot %q", name, id)
		}
		if _, err := rds.Disks.Get(context.Background(), id); err != nil {
			t.Fatalf("%q: slot %q not on the RDS: %v", name, id, err)
		}
	}
	for _, cmd := range rds.Sim.Commands() {
		// The words survive inside a sanitised slot name; what must not
		// survive is anything that ends the command or starts another.
		if strings.ContainsAny(cmd, ";\n$") || strings.Contains(cmd, "/system") || strings.Count(cmd, "[") > 1 {
			t.Fatalf("a hostile name reached RouterOS: %q", cmd)
		}
	}
}

func TestReadWriteManyIsForBlockOnly(t *testing.T) {
	d, _ := newDriver(t, rdssim.Config{})
	req := createReq("pvc-rwx-fs", gib, nil)
	req.VolumeCapabilities = []*csi.VolumeCapability{mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)}
	_, err := d.CreateVolume(context.Background(), req)
	wantCode(t, err, codes.InvalidArgument, "block")

	req = createReq("pvc-rwx-block", gib, nil)
	req.VolumeCapabilities = []*csi.VolumeCapability{blockCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)}
	if _, err := d.CreateVolume(context.Background(), req); err != nil {
		t.Fatal(err)
	}
}

func TestDeleteVolumeRemovesDiskAndFile(t *testing.T) {
	d, rds := newDriver(t, rdssim.Config{})
	ctx := context.Background()
	if _, err := d.CreateVolume(ctx, createReq("pvc-del", gib, nil)); err != nil {
		t.Fatal(err)
	}
	for range 2 { // idempotent
		if _, err := d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: "pvc-del"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := rds.Disks.Get(ctx, "pvc-del"); !routeros.IsKind(err, routeros.KindNotFound) {
		t.Fatalf("disk still there: %v", err)
	}
	if files, err := rds.Disks.FilesNamed(ctx, "pvc-del", "pvc-del.img"); err != nil || len(files) != 0 {
		t.Fatalf("backing file left: %v %v", files, err)
	}
}

func TestDeleteVolumeCleansAFileWhoseDiskIsGone(t *testing.T) {
	d, rds := newDriver(t, rdssim.Config{})
	ctx := context.Background()
	if _, err := d.CreateVolume(ctx, createReq("pvc-half", gib, nil)); err != nil {
		t.Fatal(err)
	}
	// An earlier DeleteVolume that stopped after /disk remove.
	if err := rds.Disks.Remove(ctx, "pvc-half"); err != nil {
		t.Fatal(err)
	}
	if files, _ := rds.Disks.FilesNamed(ctx, "pvc-half", "pvc-half.img"); len(files) != 1 {
		t.Fatalf("the simulator should keep the file after /disk remove, has %v", files)
	}
	if _, err := d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: "pvc-half"}); err != nil {
		t.Fatal(err)
	}
	if files, err := rds.Disks.FilesNamed(ctx, "pvc-half", "pvc-half.img"); err != nil || len(files) != 0 {
		t.Fatalf("left file not cleaned: %v %v", files, err)
	}
}

func TestDeleteVolumeFailsWhenARemoveSilentlyDoesNothing(t *testing.T) {
	d, rds := newDriver(t, rdssim.Config{})
	ctx := context.Background()
	if _, err := d.CreateVolume(ctx, createReq("pvc-stuck", gib, nil)); err != nil {
		t.Fatal(err)
	}
	// Command 1 reads the disk, command 2 lists the disks (for snapshots
	// still copied from it); command 3, /disk remove, prints nothing and
	// does nothing.
	rds.Sim.FailNth(3, "")
	if _, err := d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: "pvc-stuck"}); err == nil {
		t.Fatal("DeleteVolume reported success while the disk stayed")
	}
	// Same for the file: 1 read, 2 list, 3 remove, 4 read back, 5 /file
	// remove.
	rds.Sim.FailNth(5, "")
	if _, err := d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: "pvc-stuck"}); err == nil {
		t.Fatal("DeleteVolume reported success while the backing file stayed")
	}
	if files, _ := rds.Disks.FilesNamed(ctx, "pvc-stuck", "pvc-stuck.img"); len(files) != 1 {
		t.Fatalf("file state: %v", files)
	}
	if _, err := d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: "pvc-stuck"}); err != nil {
		t.Fatalf("a clean retry: %v", err)
	}
}

func TestDeleteVolumeNeverTouchesADiskThatIsNotOurs(t *testing.T) {
	d, rds := newDriver(t, rdssim.Config{})
	ctx := context.Background()
	foreign := routeros.DiskSpec{Slot: "vm-data", FilePath: "/storage-pool/vms/vm-data.img", Size: gib, NQN: "nqn.2000-02.com.example:vm-data", Port: 4420}
	if err := rds.Disks.Create(ctx, foreign); err != nil {
		t.Fatal(err)
	}
	_, err := d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: "vm-data"})
	wantCode(t, err, codes.FailedPrecondition, "not a volume of this driver")
	if _, err := rds.Disks.Get(ctx, "vm-data"); err != nil {
		t.Fatalf("foreign disk was removed: %v", err)
	}
}

func TestDeleteVolumeLeavesAFileAnotherDiskUses(t *testing.T) {
	d, rds := newDriver(t, rdssim.Config{})
	ctx := context.Background()
	// Another disk (not in slot "pvc-shared") is backed by a file named
	// pvc-shared.img: deleting the volume pvc-shared, whose disk is gone,
	// must not take that file.
	other := routeros.DiskSpec{Slot: "other", FilePath: "/storage-pool/elsewhere/pvc-shared.img", Size: gib, NQN: "nqn.2000-02.com.example:other", Port: 4420}
	if err := rds.Disks.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	_, err := d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: "pvc-shared"})
	wantCode(t, err, codes.FailedPrecondition, "backs disk other")
	if files, _ := rds.Disks.FilesNamed(ctx, "pvc-shared", "pvc-shared.img"); len(files) != 1 {
		t.Fatalf("file of another disk removed: %v", files)
	}
}

func TestConcurrentOperationsOnOneVolumeAreAborted(t *testing.T) {
	const longName = "pvc-1b4e28ba-2fa1-11d2-883f-0016d3cca427"
	d, rds := newDriver(t, rdssim.Config{})
	ctx := context.Background()
	rds.Sim.SetLatency(time.Second)
	before := len(rds.Sim.Commands())
	first := make(chan error, 1)
	go func() {
		_, err := d.CreateVolume(ctx, createReq(longName, gib, nil))
		first <- err
	}()
	// Once the simulator has the first call's first command, that call holds
	// the volume for at least the rest of its latency.
	for deadline := time.Now().Add(5 * time.Second); len(rds.Sim.Commands()) == before; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first CreateVolume sent no command")
		}
	}
	_, err := d.CreateVolume(ctx, createReq(longName, gib, nil))
	wantCode(t, err, codes.Aborted, "in progress")
	// A name longer than a slot: CreateVolume and DeleteVolume must still
	// meet on the same key, the volume ID.
	_, err = d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: volume.SlotFor(longName)})
	wantCode(t, err, codes.Aborted, "in progress")
	if err := <-first; err != nil {
		t.Fatalf("first call: %v", err)
	}
}

func TestUnreachableRDSIsUnavailable(t *testing.T) {
	d, rds := newDriver(t, rdssim.Config{})
	if err := rds.Sim.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := d.CreateVolume(context.Background(), createReq("pvc-down", gib, nil))
	wantCode(t, err, codes.Unavailable, "")
	// Liveness: a controller restarted for an RDS outage would not bring
	// the RDS back, so Probe stays ready.
	resp, err := d.Probe(context.Background(), &csi.ProbeRequest{})
	if err != nil || !resp.GetReady().GetValue() {
		t.Fatalf("Probe with the RDS down: ready=%v err=%v, want ready", resp.GetReady().GetValue(), err)
	}
}

func TestExpandGrowsNeverShrinks(t *testing.T) {
	d, rds := newDriver(t, rdssim.Config{})
	ctx := context.Background()
	if _, err := d.CreateVolume(ctx, createReq("pvc-grow", gib, nil)); err != nil {
		t.Fatal(err)
	}
	resp, err := d.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: "pvc-grow", CapacityRange: &csi.CapacityRange{RequiredBytes: 5 * gib / 2}, VolumeCapability: rwo})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetCapacityBytes() != 5*gib/2 || !resp.GetNodeExpansionRequired() {
		t.Fatalf("expand: %+v", resp)
	}
	if disk, _ := rds.Disks.Get(ctx, "pvc-grow"); disk.Size != 5*gib/2 {
		t.Fatalf("disk is %d bytes after expansion", disk.Size)
	}
	resp, err = d.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: "pvc-grow", CapacityRange: &csi.CapacityRange{RequiredBytes: gib}, VolumeCapability: blockCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetCapacityBytes() != 5*gib/2 || resp.GetNodeExpansionRequired() {
		t.Fatalf("shrink request: %+v", resp)
	}
	_, err = d.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: "pvc-missing", CapacityRange: &csi.CapacityRange{RequiredBytes: gib}})
	wantCode(t, err, codes.NotFound, "")
}

func TestListVolumesPagesOnlyOurVolumes(t *testing.T) {
	d, rds := newDriver(t, rdssim.Config{})
	ctx := context.Background()
	for _, name := range []string{"pvc-c", "pvc-a", "pvc-b"} {
		if _, err := d.CreateVolume(ctx, createReq(name, gib, nil)); err != nil {
			t.Fatal(err)
		}
	}
	if err := rds.Disks.Create(ctx, routeros.DiskSpec{Slot: "pvc-0foreign", FilePath: "/storage-pool/x/f.img", Size: gib, NQN: "nqn.2000-02.com.example:f", Port: 4420}); err != nil {
		t.Fatal(err)
	}
	var got []string
	token := ""
	for {
		resp, err := d.ListVolumes(ctx, &csi.ListVolumesRequest{MaxEntries: 2, StartingToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range resp.GetEntries() {
			got = append(got, e.GetVolume().GetVolumeId())
		}
		if token = resp.GetNextToken(); token == "" {
			break
		}
	}
	if strings.Join(got, ",") != "pvc-a,pvc-b,pvc-c" {
		t.Fatalf("listed %v", got)
	}
	_, err := d.ListVolumes(ctx, &csi.ListVolumesRequest{StartingToken: "not a token!"})
	wantCode(t, err, codes.Aborted, "")
	_, err = d.ListVolumes(ctx, &csi.ListVolumesRequest{StartingToken: "pvc-a"}) // a volume ID is not a token
	wantCode(t, err, codes.Aborted, "")
}

func TestGetCapacityIsPoolFreeLessReserve(t *testing.T) {
	d, rds := newDriver(t, rdssim.Config{PoolSize: 100 * gib})
	d.opts.CapacityReserve = 10 * gib
	ctx := context.Background()
	if _, err := d.CreateVolume(ctx, createReq("pvc-cap", 30*gib, nil)); err != nil {
		t.Fatal(err)
	}
	pool, err := rds.Disks.Pool(ctx, "storage-pool")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := d.GetCapacity(ctx, &csi.GetCapacityRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetAvailableCapacity() != pool.Free-10*gib || pool.Free > 70*gib {
		t.Fatalf("capacity %d with pool free %d", resp.GetAvailableCapacity(), pool.Free)
	}
}

func TestToStatusMapsEveryKind(t *testing.T) {
	for kind, code := range map[routeros.Kind]codes.Code{
		routeros.KindUnavailable: codes.Unavailable,
		routeros.KindTimeout:     codes.DeadlineExceeded,
		routeros.KindNotFound:    codes.NotFound,
		routeros.KindNoSpace:     codes.ResourceExhausted,
		routeros.KindInvalid:     codes.InvalidArgument,
		routeros.KindExists:      codes.AlreadyExists,
		routeros.KindInternal:    codes.Internal,
	} {
		err := toStatus(&routeros.Error{Kind: kind, Command: "x"})
		if status.Code(err) != code {
			t.Errorf("%s -> %s, want %s", kind, status.Code(err), code)
		}
	}
	if status.Code(toStatus(errors.New("plain"))) != codes.Internal {
		t.Error("unclassified error is not Internal")
	}
}
