package agent_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rds-csi/rds-csi/agent"
	"github.com/rds-csi/rds-csi/agent/heal"
	"github.com/rds-csi/rds-csi/kernel/loop"
	"github.com/rds-csi/rds-csi/kernel/mount"
	"github.com/rds-csi/rds-csi/test/looptransport"
	"github.com/rds-csi/rds-csi/test/rdssim"
	"github.com/rds-csi/rds-csi/volume"
)

const (
	prefix = "nqn.2000-02.com.mikrotik:"
	mib    = int64(1) << 20
)

// disks is the simulated RDS as the loop transport sees it: exported disks
// with their backing files.
type disks struct {
	mu   sync.Mutex
	list []rdssim.Disk
}

func (d *disks) Disks() []rdssim.Disk {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]rdssim.Disk(nil), d.list...)
}

type fixture struct {
	t     *testing.T
	node  *agent.Node
	disks *disks
	dir   string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: attaches loop devices and mounts filesystems")
	}
	f := &fixture{t: t, disks: &disks{}, dir: t.TempDir()}
	f.node = f.newNode(prefix)
	return f
}

func (f *fixture) newNode(managedPrefix string) *agent.Node {
	opts := agent.Options{NodeID: "node-1", ManagedNQNPrefix: managedPrefix, AttachTimeout: 10 * time.Second}
	if err := opts.Validate(); err != nil {
		f.t.Fatal(err)
	}
	return agent.New(opts, &looptransport.Attacher{Sim: f.disks}, agent.HostMounter{}, nil)
}

// volume creates a backing file of size bytes holding content at offset 0,
// and returns its ID and volume context.
func (f *fixture) volume(id string, size int64, content []byte, createdBlank bool) (string, map[string]string) {
	f.t.Helper()
	file := filepath.Join(f.dir, id+".img")
	if err := os.WriteFile(file, content, 0o600); err != nil {
		f.t.Fatal(err)
	}
	if err := os.Truncate(file, size); err != nil {
		f.t.Fatal(err)
	}
	nqn := prefix + id
	f.disks.mu.Lock()
	f.disks.list = append(f.disks.list, rdssim.Disk{Slot: id, BackingFile: file, Size: size, NQN: nqn, Port: 4420})
	f.disks.mu.Unlock()
	f.t.Cleanup(func() {
		devs, _ := loop.Find(file)
		for _, d := range devs {
			_ = loop.Detach(context.Background(), d)
		}
	})
	vc := volume.Context{NQN: nqn, Address: "127.0.0.1", Port: 4420, Connect: volume.DefaultConnectOptions(), MigrationTimeout: volume.DefaultMigrationTimeout, CreatedBlank: createdBlank}
	return id, vc.Map()
}

func (f *fixture) file(id string) string { return filepath.Join(f.dir, id+".img") }

func (f *fixture) paths(id string) (staging, target string) {
	base := filepath.Join(f.dir, "kubelet", id)
	if err := os.MkdirAll(base, 0o750); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { unmountAll(base) })
	return filepath.Join(base, "globalmount"), filepath.Join(base, "pod", "mount")
}

// unmountAll cleans up after a failed test so that later tests start clean.
func unmountAll(under string) {
	mounts, _ := mount.List()
	for i := len(mounts) - 1; i >= 0; i-- {
		if strings.HasPrefix(mounts[i].MountPoint, under) {
			_ = mount.Unmount(context.Background(), mounts[i].MountPoint)
		}
	}
}

func fsCap(fsType string) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: fsType}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
}

func blockCap() *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
}

func (f *fixture) stage(id, staging string, vc *csi.VolumeCapability, attrs map[string]string) error {
	_, err := f.node.NodeStageVolume(context.Background(), &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: vc, VolumeContext: attrs})
	return err
}

func (f *fixture) publish(id, staging, target string, vc *csi.VolumeCapability, attrs map[string]string) error {
	_, err := f.node.NodePublishVolume(context.Background(), &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging, TargetPath: target, VolumeCapability: vc, VolumeContext: attrs})
	return err
}

func (f *fixture) unpublish(id, target string) error {
	_, err := f.node.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target})
	return err
}

func (f *fixture) unstage(id, staging string) error {
	_, err := f.node.NodeUnstageVolume(context.Background(), &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging})
	return err
}

func wantCode(t *testing.T, err error, code codes.Code, mention string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("got %v, want %s", err, code)
	}
	if !strings.Contains(err.Error(), mention) {
		t.Fatalf("error %q does not mention %q", err, mention)
	}
}

func mountsAt(t *testing.T, path string) []mount.Entry {
	t.Helper()
	all, err := mount.List()
	if err != nil {
		t.Fatal(err)
	}
	var at []mount.Entry
	for _, m := range all {
		if m.MountPoint == path {
			at = append(at, m)
		}
	}
	return at
}

func head(t *testing.T, file string, n int) []byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return b[:n]
}

func attached(t *testing.T, file string) bool {
	t.Helper()
	devs, err := loop.Find(file)
	if err != nil {
		t.Fatal(err)
	}
	return len(devs) > 0
}

func TestStageFormatsABlankCreatedBlankVolumeAndMountsIt(t *testing.T) {
	for _, fsType := range []string{"ext4", "xfs"} {
		t.Run(fsType, func(t *testing.T) {
			f := newFixture(t)
			id, attrs := f.volume("pvc-blank-"+fsType, 512*mib, nil, true)
			staging, _ := f.paths(id)
			if err := f.stage(id, staging, fsCap(fsType), attrs); err != nil {
				t.Fatal(err)
			}
			m := mountsAt(t, staging)
			if len(m) != 1 || m[0].FSType != fsType {
				t.Fatalf("staging mounts: %+v", m)
			}
			if err := f.unstage(id, staging); err != nil {
				t.Fatal(err)
			}
			if len(mountsAt(t, staging)) != 0 || attached(t, f.file(id)) {
				t.Fatal("unstage left a mount or an attached device")
			}
		})
	}
}

func TestStageNeverFormatsAVolumeThatHoldsData(t *testing.T) {
	f := newFixture(t)
	data := bytes.Repeat([]byte("precious "), 100)
	id, attrs := f.volume("pvc-data", 256*mib, data, true)
	staging, _ := f.paths(id)
	err := f.stage(id, staging, fsCap("ext4"), attrs)
	wantCode(t, err, codes.FailedPrecondition, "neither formatted nor mounted")
	if got := head(t, f.file(id), len(data)); !bytes.Equal(got, data) {
		t.Fatal("the volume's data was overwritten")
	}
}

func TestStageNeverFormatsWhenTheSignatureProbeFails(t *testing.T) {
	f := newFixture(t)
	f.node.SetProbe(func(context.Context, string) (bool, string, error) {
		return false, "", errors.New("blkid: exit status 4")
	})
	id, attrs := f.volume("pvc-probe-fails", 256*mib, nil, true)
	staging, _ := f.paths(id)
	err := f.stage(id, staging, fsCap("ext4"), attrs)
	wantCode(t, err, codes.FailedPrecondition, "cannot tell whether")
	if !bytes.Equal(head(t, f.file(id), 1<<20), make([]byte, 1<<20)) {
		t.Fatal("a device whose probe failed was formatted")
	}
}

func TestStageNeverFormatsAVolumeNotCreatedBlank(t *testing.T) {
	f := newFixture(t)
	id, attrs := f.volume("pvc-adopted", 256*mib, nil, false)
	staging, _ := f.paths(id)
	err := f.stage(id, staging, fsCap("ext4"), attrs)
	wantCode(t, err, codes.FailedPrecondition, "not created blank")
	if !bytes.Equal(head(t, f.file(id), 1<<20), make([]byte, 1<<20)) {
		t.Fatal("a volume not created blank was formatted")
	}
}

func TestStageAndPublishAreIdempotentWithoutStackingMounts(t *testing.T) {
	f := newFixture(t)
	id, attrs := f.volume("pvc-idem", 256*mib, nil, true)
	staging, target := f.paths(id)
	for range 3 {
		if err := f.stage(id, staging, fsCap("ext4"), attrs); err != nil {
			t.Fatal(err)
		}
		if err := f.publish(id, staging, target, fsCap("ext4"), attrs); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(mountsAt(t, staging)); n != 1 {
		t.Fatalf("%d mounts at the staging path, want 1", n)
	}
	if n := len(mountsAt(t, target)); n != 1 {
		t.Fatalf("%d mounts at the target, want 1", n)
	}
	// Data written through the target lands on the staged filesystem.
	if err := os.WriteFile(filepath.Join(target, "hello"), []byte("world"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(staging, "hello")); err != nil || string(b) != "world" {
		t.Fatalf("bind mount does not show the staged filesystem: %q %v", b, err)
	}
}

func TestUnstageRefusesWhileTheVolumeIsPublished(t *testing.T) {
	f := newFixture(t)
	id, attrs := f.volume("pvc-busy", 256*mib, nil, true)
	staging, target := f.paths(id)
	if err := f.stage(id, staging, fsCap("ext4"), attrs); err != nil {
		t.Fatal(err)
	}
	if err := f.publish(id, staging, target, fsCap("ext4"), attrs); err != nil {
		t.Fatal(err)
	}
	err := f.unstage(id, staging)
	wantCode(t, err, codes.FailedPrecondition, "mount "+target)
	if len(mountsAt(t, staging)) != 1 || !attached(t, f.file(id)) {
		t.Fatal("a refused unstage still unmounted or detached the volume")
	}
	if err := f.unpublish(id, target); err != nil {
		t.Fatal(err)
	}
	if err := f.unstage(id, staging); err != nil {
		t.Fatal(err)
	}
	if attached(t, f.file(id)) {
		t.Fatal("volume still attached after unstage")
	}
}

func TestUnstageRefusesWhileAProcessHoldsTheBlockDevice(t *testing.T) {
	f := newFixture(t)
	id, attrs := f.volume("pvc-held", 64*mib, nil, true)
	staging, target := f.paths(id)
	if err := f.stage(id, staging, blockCap(), attrs); err != nil {
		t.Fatal(err)
	}
	devs, err := loop.Find(f.file(id))
	if err != nil || len(devs) != 1 {
		t.Fatalf("devices %v %v", devs, err)
	}
	dev, err := os.OpenFile(devs[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	holder := exec.Command("sleep", "60")
	holder.ExtraFiles = []*os.File{dev}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	_ = dev.Close()
	t.Cleanup(func() { _ = holder.Process.Kill(); _ = holder.Wait() })

	err = f.unstage(id, staging)
	wantCode(t, err, codes.FailedPrecondition, "(sleep)")
	if !attached(t, f.file(id)) {
		t.Fatal("a refused unstage detached the volume")
	}
	_ = holder.Process.Kill()
	_ = holder.Wait()
	if err := f.unstage(id, staging); err != nil {
		t.Fatal(err)
	}
	_ = target
}

func TestBlockPublishBindsTheDeviceNode(t *testing.T) {
	f := newFixture(t)
	id, attrs := f.volume("pvc-block", 64*mib, nil, true)
	staging, target := f.paths(id)
	if err := f.stage(id, staging, blockCap(), attrs); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o750); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := f.publish(id, staging, target, blockCap(), attrs); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(mountsAt(t, target)); n != 1 {
		t.Fatalf("%d mounts at the block target, want 1", n)
	}
	w, err := os.OpenFile(target, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt([]byte("raw block"), 4096); err != nil {
		t.Fatal(err)
	}
	_ = w.Sync()
	_ = w.Close()
	if got := head(t, f.file(id), 4096+9)[4096:]; string(got) != "raw block" {
		t.Fatalf("write through the block target reached the backing file as %q", got)
	}
	// Read-only and read-write publishes of one device cannot be mixed.
	err = f.publish(id, staging, target+"-ro", roBlockCap(), attrs)
	wantCode(t, err, codes.FailedPrecondition, "cannot be mixed")
	if err := f.unpublish(id, target); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("block target left behind: %v", err)
	}
	if err := f.unstage(id, staging); err != nil {
		t.Fatal(err)
	}
}

func TestForeignNQNsAreNeverStagedNorDisconnected(t *testing.T) {
	f := newFixture(t)
	id, attrs := f.volume("pvc-foreign", 64*mib, nil, true)
	staging, _ := f.paths(id)
	// A node managing another prefix refuses to stage it at all...
	other := f.newNode("nqn.2014-08.org.example:")
	err := func() error {
		_, err := other.NodeStageVolume(context.Background(), &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: blockCap(), VolumeContext: attrs})
		return err
	}()
	wantCode(t, err, codes.InvalidArgument, "outside the managed prefix")
	if attached(t, f.file(id)) {
		t.Fatal("a refused stage attached the volume")
	}
	// ...and when the prefix changed after a volume was staged, unstage
	// leaves the connection alone.
	if err := f.stage(id, staging, blockCap(), attrs); err != nil {
		t.Fatal(err)
	}
	if _, err := other.NodeUnstageVolume(context.Background(), &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging}); err != nil {
		t.Fatal(err)
	}
	if !attached(t, f.file(id)) {
		t.Fatal("an NQN outside the managed prefix was disconnected")
	}
}

func TestUnpublishNeverRemovesAnythingRecursively(t *testing.T) {
	f := newFixture(t)
	_, target := f.paths("pvc-norecurse")
	if err := os.MkdirAll(target, 0o750); err != nil {
		t.Fatal(err)
	}
	keep := filepath.Join(target, "data")
	if err := os.WriteFile(keep, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.unpublish("pvc-norecurse", target); err == nil {
		t.Fatal("unpublish of a non-empty, unmounted target succeeded")
	}
	if b, err := os.ReadFile(keep); err != nil || string(b) != "keep" {
		t.Fatalf("unpublish removed data: %v", err)
	}
}

func TestExpandGrowsTheFilesystemToTheNewSize(t *testing.T) {
	for _, fsType := range []string{"ext4", "xfs"} {
		t.Run(fsType, func(t *testing.T) {
			if fsType == "ext4" && !hasCapSysResource(t) {
				// ext4's online resize ioctl needs CAP_SYS_RESOURCE, which
				// some sandboxes withhold even from root.
				t.Skip("SKIPPING ext4 online growth: this process lacks CAP_SYS_RESOURCE (this sandbox withholds it from root); it runs wherever the capability exists")
			}
			f := newFixture(t)
			id, attrs := f.volume("pvc-grow-"+fsType, 512*mib, nil, true)
			staging, target := f.paths(id)
			// Staged twice: a repeated stage must keep what expansion needs.
			for range 2 {
				if err := f.stage(id, staging, fsCap(fsType), attrs); err != nil {
					t.Fatal(err)
				}
			}
			if err := f.publish(id, staging, target, fsCap(fsType), attrs); err != nil {
				t.Fatal(err)
			}
			// The controller grew the disk on the RDS.
			if err := os.Truncate(f.file(id), 1024*mib); err != nil {
				t.Fatal(err)
			}
			resp, err := f.node.NodeExpandVolume(context.Background(), &csi.NodeExpandVolumeRequest{
				VolumeId: id, VolumePath: target, StagingTargetPath: staging,
				CapacityRange: &csi.CapacityRange{RequiredBytes: 1024 * mib}, VolumeCapability: fsCap(fsType),
			})
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetCapacityBytes() != 1024*mib {
				t.Fatalf("reported %d bytes", resp.GetCapacityBytes())
			}
			stats, err := f.node.NodeGetVolumeStats(context.Background(), &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: target})
			if err != nil {
				t.Fatal(err)
			}
			if total := stats.GetUsage()[0].GetTotal(); total < 900*mib {
				t.Fatalf("filesystem is %d bytes after growing to 1 GiB", total)
			}
		})
	}
}

// blockingAttacher holds Attach until released, to catch a second caller.
type blockingAttacher struct {
	agent.Attacher
	entered chan struct{}
	release chan struct{}
}

func (b *blockingAttacher) Attach(ctx context.Context, _ agent.Target) (agent.Device, error) {
	close(b.entered)
	select {
	case <-b.release:
	case <-ctx.Done():
	}
	return agent.Device{}, errors.New("released")
}

func TestConcurrentCallsOnOneVolumeAreAborted(t *testing.T) {
	opts := agent.Options{NodeID: "node-1"}
	if err := opts.Validate(); err != nil {
		t.Fatal(err)
	}
	b := &blockingAttacher{entered: make(chan struct{}), release: make(chan struct{})}
	n := agent.New(opts, b, agent.HostMounter{}, nil)
	attrs := volume.Context{NQN: prefix + "pvc-x", Address: "127.0.0.1", Port: 4420, Connect: volume.DefaultConnectOptions(), MigrationTimeout: volume.DefaultMigrationTimeout}.Map()
	staging := filepath.Join(t.TempDir(), "globalmount")
	done := make(chan error, 1)
	go func() {
		_, err := n.NodeStageVolume(context.Background(), &csi.NodeStageVolumeRequest{VolumeId: "pvc-x", StagingTargetPath: staging, VolumeCapability: blockCap(), VolumeContext: attrs})
		done <- err
	}()
	<-b.entered
	_, err := n.NodeUnstageVolume(context.Background(), &csi.NodeUnstageVolumeRequest{VolumeId: "pvc-x", StagingTargetPath: staging})
	wantCode(t, err, codes.Aborted, "in progress")
	close(b.release)
	if err := <-done; err == nil {
		t.Fatal("the held stage reported success")
	}
}

func hasCapSysResource(t *testing.T) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			const capSysResource = 24
			return caps&(1<<capSysResource) != 0
		}
	}
	t.Fatal("no CapEff in /proc/self/status")
	return false
}

// failingDetach is the loop transport with a disconnect that fails.
type failingDetach struct{ *looptransport.Attacher }

func (failingDetach) Detach(context.Context, agent.Target) error {
	return errors.New("delete_controller: device or resource busy")
}

func TestUnstageNeverReportsSuccessWhenTheDisconnectFailed(t *testing.T) {
	f := newFixture(t)
	id, attrs := f.volume("pvc-nodisconnect", 64*mib, nil, true)
	staging, _ := f.paths(id)
	opts := agent.Options{NodeID: "node-1", AttachTimeout: 10 * time.Second}
	if err := opts.Validate(); err != nil {
		t.Fatal(err)
	}
	n := agent.New(opts, failingDetach{&looptransport.Attacher{Sim: f.disks}}, agent.HostMounter{}, nil)
	tr := &fakeTracker{tracked: map[string]heal.Volume{}, health: map[string]heal.Health{}}
	n.SetTracker(tr)
	if _, err := n.NodeStageVolume(context.Background(), &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: fsCap("ext4"), VolumeContext: attrs}); err != nil {
		t.Fatal(err)
	}
	staged := tr.tracked[id]
	_, err := n.NodeUnstageVolume(context.Background(), &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging})
	if err == nil || !strings.Contains(err.Error(), "device or resource busy") {
		t.Fatalf("unstage with a failing disconnect returned %v", err)
	}
	// Still connected, so still watched, as it was staged (device included).
	if again, ok := tr.tracked[id]; !ok || again != staged {
		t.Fatalf("after the failed disconnect the volume is tracked as %+v (%v), staged as %+v", again, ok, staged)
	}
	// The record stays, so the retry still knows what to disconnect.
	if _, err := os.Stat(filepath.Join(filepath.Dir(staging), "rds-csi-"+id+".json")); err != nil {
		t.Fatalf("volume record gone after a failed disconnect: %v", err)
	}
	// An agent restarted now does not heal back what the unstage had
	// begun to take apart (nothing uses it), and the retried unstage
	// still finds what to disconnect.
	n2 := agent.New(opts, &looptransport.Attacher{Sim: f.disks}, agent.HostMounter{}, nil)
	tr2 := &fakeTracker{tracked: map[string]heal.Volume{}, health: map[string]heal.Health{}}
	n2.SetTracker(tr2)
	if vols, err := n2.Resume(filepath.Join(f.dir, "kubelet")); err != nil || len(vols) != 0 || len(tr2.tracked) != 0 {
		t.Fatalf("a volume being unstaged was resumed: %+v %+v %v", vols, tr2.tracked, err)
	}
	if _, err := n2.NodeUnstageVolume(context.Background(), &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging}); err != nil {
		t.Fatal(err)
	}
	if attached(t, f.file(id)) {
		t.Fatal("the retried unstage left the volume attached")
	}
}

func roBlockCap() *csi.VolumeCapability {
	return &csi.VolumeCapability{AccessType: blockCap().AccessType, AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY}}
}

func TestReadOnlyBlockPublishRefusesWrites(t *testing.T) {
	f := newFixture(t)
	id, attrs := f.volume("pvc-roblock", 64*mib, []byte("original"), true)
	staging, target := f.paths(id)
	if err := f.stage(id, staging, blockCap(), attrs); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := f.publish(id, staging, target, roBlockCap(), attrs); err != nil {
		t.Fatal(err)
	}
	// A read-only bind mount alone would let this write through.
	if w, err := os.OpenFile(target, os.O_WRONLY, 0); err == nil {
		_, werr := w.WriteAt([]byte("changed!"), 0)
		serr := w.Sync()
		_ = w.Close()
		if werr == nil && serr == nil {
			t.Fatal("a write through a read-only block publish succeeded")
		}
	}
	if got := head(t, f.file(id), 8); string(got) != "original" {
		t.Fatalf("read-only volume changed to %q", got)
	}
	r, err := os.Open(target)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	_, err = r.ReadAt(buf, 0)
	_ = r.Close()
	if err != nil || string(buf) != "original" {
		t.Fatalf("read through the read-only target: %q %v", buf, err)
	}
	// After the read-only publish is gone, a read-write one works again.
	if err := f.unpublish(id, target); err != nil {
		t.Fatal(err)
	}
	if err := f.publish(id, staging, target, blockCap(), attrs); err != nil {
		t.Fatal(err)
	}
	w, err := os.OpenFile(target, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = w.WriteAt([]byte("rewritten"), 0)
	_ = w.Close()
	if err != nil {
		t.Fatalf("write after returning to read-write: %v", err)
	}
	if err := f.unpublish(id, target); err != nil {
		t.Fatal(err)
	}
	if err := f.unstage(id, staging); err != nil {
		t.Fatal(err)
	}
}

// fakeTracker records what the node service registers and answers health
// from a fixed table.
type fakeTracker struct {
	mu      sync.Mutex
	tracked map[string]heal.Volume
	held    []string
	health  map[string]heal.Health
}

func (f *fakeTracker) Hold(nqn string) func() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.held = append(f.held, nqn)
	return func() {}
}

func (f *fakeTracker) Track(v heal.Volume) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tracked[v.VolumeID] = v
	return nil
}

func (f *fakeTracker) Untrack(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.tracked, id)
}

func (f *fakeTracker) Health(id string) (heal.Health, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	h, ok := f.health[id]
	return h, ok
}

func TestStagedVolumesAreTrackedAndTheirHealthComesFromTheModel(t *testing.T) {
	f := newFixture(t)
	tr := &fakeTracker{tracked: map[string]heal.Volume{}, health: map[string]heal.Health{}}
	f.node.SetTracker(tr)
	id, attrs := f.volume("pvc-tracked", 64*mib, nil, true)
	staging, _ := f.paths(id)
	if err := f.stage(id, staging, blockCap(), attrs); err != nil {
		t.Fatal(err)
	}
	v, ok := tr.tracked[id]
	if !ok || v.NQN != prefix+id || v.NSID != 1 || v.Device == "" || len(tr.held) != 1 {
		t.Fatalf("tracked %+v, held %v", tr.tracked, tr.held)
	}
	health := func() *csi.VolumeHealth {
		resp, err := f.node.NodeGetVolumeHealth(context.Background(), &csi.NodeGetVolumeHealthRequest{VolumeId: id})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetVolumeHealth()
	}
	if h := health(); len(h.GetHealthStatuses()) != 0 {
		t.Fatalf("healthy volume reported %+v", h)
	}
	tr.health[id] = heal.Health{VolumeID: id, State: heal.StateReconnecting, Since: time.Now(), LastCause: "controller connecting"}
	if h := health(); len(h.GetHealthStatuses()) != 1 || h.GetHealthStatuses()[0].GetStatus() != csi.VolumeHealthErrorType_DEGRADED || !strings.Contains(h.GetHealthStatuses()[0].GetMessage(), "controller connecting") {
		t.Fatalf("reconnecting volume reported %+v", h)
	}
	tr.health[id] = heal.Health{VolumeID: id, State: heal.StateLost, Since: time.Now()}
	if h := health(); len(h.GetHealthStatuses()) != 1 || h.GetHealthStatuses()[0].GetStatus() != csi.VolumeHealthErrorType_INACCESSIBLE {
		t.Fatalf("lost volume reported %+v", h)
	}
	if err := f.unstage(id, staging); err != nil {
		t.Fatal(err)
	}
	if _, ok := tr.tracked[id]; ok {
		t.Fatal("unstaged volume still tracked")
	}
}

// vanished is the loop transport after the volume's device went away: Find
// says not attached.
type vanished struct{ *looptransport.Attacher }

func (vanished) Find(context.Context, agent.Target) (agent.Device, error) {
	return agent.Device{}, agent.ErrNotAttached
}

func TestUnstageOfAVanishedDeviceStillRefusesWhilePublished(t *testing.T) {
	f := newFixture(t)
	id, attrs := f.volume("pvc-vanished", 64*mib, nil, true)
	staging, target := f.paths(id)
	if err := f.stage(id, staging, fsCap("ext4"), attrs); err != nil {
		t.Fatal(err)
	}
	if err := f.publish(id, staging, target, fsCap("ext4"), attrs); err != nil {
		t.Fatal(err)
	}
	opts := agent.Options{NodeID: "node-1"}
	if err := opts.Validate(); err != nil {
		t.Fatal(err)
	}
	n := agent.New(opts, vanished{&looptransport.Attacher{Sim: f.disks}}, agent.HostMounter{}, nil)
	_, err := n.NodeUnstageVolume(context.Background(), &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging})
	wantCode(t, err, codes.FailedPrecondition, target)
	if len(mountsAt(t, staging)) != 1 {
		t.Fatal("a refused unstage unmounted the staging path")
	}
}

// pathless is the loop transport seen through a multipath front whose
// namespace is gone: the front is there, with nothing below it.
type pathless struct{ *looptransport.Attacher }

func (p pathless) Find(ctx context.Context, t agent.Target) (agent.Device, error) {
	d, err := p.Attacher.Find(ctx, t)
	if err != nil {
		return d, err
	}
	return agent.Device{Path: d.Path, Dev: d.Dev, Mapped: true}, nil
}

func TestUnstageOfAMountedFrontWithoutAPathWaitsForTheTarget(t *testing.T) {
	f := newFixture(t)
	id, attrs := f.volume("pvc-pathless", 64*mib, nil, true)
	staging, _ := f.paths(id)
	if err := f.stage(id, staging, fsCap("ext4"), attrs); err != nil {
		t.Fatal(err)
	}
	opts := agent.Options{NodeID: "node-1"}
	if err := opts.Validate(); err != nil {
		t.Fatal(err)
	}
	n := agent.New(opts, pathless{&looptransport.Attacher{Sim: f.disks}}, agent.HostMounter{}, nil)
	_, err := n.NodeUnstageVolume(context.Background(), &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging})
	wantCode(t, err, codes.Unavailable, "no path to its target")
	if len(mountsAt(t, staging)) != 1 || !attached(t, f.file(id)) {
		t.Fatal("an unstage of a pathless front unmounted or disconnected the volume")
	}
	if err := f.unstage(id, staging); err != nil {
		t.Fatalf("the unstage once the path is back: %v", err)
	}
}
