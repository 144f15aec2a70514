//go:build e2eguest

package guest

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"

	"github.com/rds-csi/rds-csi/test/rdssim/nvmet"
)

// FIFREEZE and FITHAW from linux/fs.h: _IOWR('X', 119 and 120, int).
const (
	fiFreeze = 0xC0045877
	fiThaw   = 0xC0045878
)

// TestSnapshotRestoreWhileTheSourceChanges snapshots an ext4 volume while a
// writer keeps rewriting one of its files, the way docs/snapshots.md says to:
// the filesystem is frozen from before CreateSnapshot until the snapshot is
// ready (the simulator copies slowly in the background, as a live copy, so
// an unfrozen snapshot could mix old and new blocks). The snapshot is
// restored into a larger volume through the real nvmet target, staged by the
// real agent, and must hold exactly what the source held when frozen, on a
// filesystem grown to the new size; the source keeps working meanwhile, and
// the snapshot is never exported.
func TestSnapshotRestoreWhileTheSourceChanges(t *testing.T) {
	f := newFixture(t)
	f.rds.Sim.SetCopyDelay(3 * time.Second)
	const srcSize, restoreSize = 64 << 20, 128 << 20
	src := f.create("snap-source", "ext4", srcSize)
	must(t, "NodeStage source", f.stage(src))
	must(t, "NodePublish source", f.publish(src))
	still := newPayload(t, 2<<20)
	still.writeFile(t, filepath.Join(src.target, "still"))
	srcFSSize := fsSize(t, src.target)

	w := startRewriter(t, filepath.Join(src.target, "busy"))
	w.waitRounds(t, 3)

	// Quiesce: freeze, take the checksums the snapshot must reproduce.
	thaw := freeze(t, src.target)
	want := map[string][32]byte{"still": still.sum, "busy": fileSum(t, filepath.Join(src.target, "busy"))}
	roundsAtFreeze := w.rounds()
	resp, err := f.ctrl.CreateSnapshot(rpcCtx(t), &csi.CreateSnapshotRequest{Name: "snapshot-e2e-1", SourceVolumeId: src.id})
	must(t, "CreateSnapshot", err)
	snap := resp.GetSnapshot()
	if snap.GetReadyToUse() {
		t.Error("the snapshot is ready at once although the simulator copies for 3 s")
	}
	if snap.GetSizeBytes() != srcSize || snap.GetSourceVolumeId() != src.id {
		t.Errorf("snapshot %+v", snap)
	}
	waitFor(t, "the snapshot to become ready", time.Minute, func() bool {
		resp, err := f.ctrl.CreateSnapshot(rpcCtx(t), &csi.CreateSnapshotRequest{Name: "snapshot-e2e-1", SourceVolumeId: src.id})
		must(t, "CreateSnapshot (retry)", err)
		if resp.GetSnapshot().GetSnapshotId() != snap.GetSnapshotId() {
			t.Fatalf("a retry returned snapshot %s, the first %s", resp.GetSnapshot().GetSnapshotId(), snap.GetSnapshotId())
		}
		return resp.GetSnapshot().GetReadyToUse()
	})
	if got := w.rounds(); got != roundsAtFreeze {
		t.Fatalf("the writer completed %d rewrites while the filesystem was frozen", got-roundsAtFreeze)
	}
	thaw()
	w.waitRounds(t, roundsAtFreeze+3) // the source changes after the snapshot

	// The snapshot is never exported through the target.
	subsystems, err := os.ReadDir(filepath.Join(nvmet.DefaultRoot, "subsystems"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range subsystems {
		if strings.Contains(s.Name(), snap.GetSnapshotId()) {
			t.Errorf("nvmet exports the snapshot as %s", s.Name())
		}
	}

	// Restore into a larger volume.
	rresp, err := f.ctrl.CreateVolume(rpcCtx(t), &csi.CreateVolumeRequest{
		Name:               "snap-restored",
		CapacityRange:      &csi.CapacityRange{RequiredBytes: restoreSize},
		VolumeCapabilities: []*csi.VolumeCapability{mountCap("ext4")},
		Parameters:         storageClass,
		VolumeContentSource: &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
			Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: snap.GetSnapshotId()},
		}},
	})
	must(t, "CreateVolume from the snapshot", err)
	if rresp.GetVolume().GetCapacityBytes() != restoreSize {
		t.Errorf("restored volume has %d bytes, asked for %d", rresp.GetVolume().GetCapacityBytes(), restoreSize)
	}
	rv := rresp.GetVolume()
	dir := filepath.Join(f.dir, rv.GetVolumeId())
	restored := &vol{id: rv.GetVolumeId(), nqn: rv.GetVolumeContext()["nqn"], context: rv.GetVolumeContext(), cap: mountCap("ext4"),
		staging: filepath.Join(dir, "staging"), target: filepath.Join(dir, "target")}
	must(t, "NodeStage restored", f.stage(restored))
	must(t, "NodePublish restored", f.publish(restored))
	dropCaches(t)
	for name, sum := range want {
		if got := fileSum(t, filepath.Join(restored.target, name)); got != sum {
			t.Errorf("restored %s has sha256 %x, the source had %x when frozen", name, got[:8], sum[:8])
		} else {
			t.Logf("restored %s matches the source at snapshot time (sha256 %x)", name, sum[:8])
		}
	}
	if got := blockSize(t, device(t, restored.nqn)); got != restoreSize {
		t.Errorf("the restored device has %d bytes, want %d", got, restoreSize)
	}
	if got := fsSize(t, restored.target); got-srcFSSize < (restoreSize-srcSize)*3/4 {
		t.Errorf("the restored filesystem has %d bytes, the source's %d: it was not grown to the %d-byte device", got, srcFSSize, restoreSize)
	} else {
		t.Logf("restored filesystem grown from %d to %d bytes", srcFSSize, got)
	}

	// The source kept working: its latest rewrite is intact.
	last := w.stop(t)
	if got := fileSum(t, filepath.Join(src.target, "busy")); got != last {
		t.Errorf("the source's busy file has sha256 %x, its last rewrite %x", got[:8], last[:8])
	}
	still.checkFile(t, "source after the snapshot", filepath.Join(src.target, "still"))

	for _, v := range []*vol{restored, src} {
		must(t, "NodeUnpublish", f.unpublish(v))
		must(t, "NodeUnstage", f.unstage(v))
		must(t, "DeleteVolume", f.delete(v))
		f.assertGone(t, v)
	}
	_, err = f.ctrl.DeleteSnapshot(rpcCtx(t), &csi.DeleteSnapshotRequest{SnapshotId: snap.GetSnapshotId()})
	must(t, "DeleteSnapshot", err)
	for _, d := range f.rds.Sim.Disks() {
		t.Errorf("disk left on the RDS: %+v", d)
	}
	if files, _ := filepath.Glob(filepath.Join(f.simState, "files", "storage-pool", "e2e", "*")); len(files) != 0 {
		t.Errorf("files left on the RDS: %v", files)
	}
}

// freeze freezes the filesystem mounted at dir and returns its thaw, which
// also runs at cleanup: a frozen filesystem would hang the sweep.
func freeze(t *testing.T, dir string) func() {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetInt(fd, fiFreeze, 0); err != nil {
		_ = unix.Close(fd)
		t.Fatalf("FIFREEZE %s: %v", dir, err)
	}
	var once sync.Once
	thaw := func() {
		once.Do(func() {
			if err := unix.IoctlSetInt(fd, fiThaw, 0); err != nil {
				t.Errorf("FITHAW %s: %v", dir, err)
			}
			_ = unix.Close(fd)
		})
	}
	t.Cleanup(thaw)
	return thaw
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// rewriter rewrites one file with new random content, fsynced, until
// stopped: the workload that keeps changing the source.
type rewriter struct {
	mu   sync.Mutex
	n    int
	last [32]byte
	err  error
	done chan struct{}
	quit chan struct{}
}

func startRewriter(t *testing.T, path string) *rewriter {
	w := &rewriter{done: make(chan struct{}), quit: make(chan struct{})}
	go func() {
		defer close(w.done)
		buf := make([]byte, 512<<10)
		for {
			select {
			case <-w.quit:
				return
			default:
			}
			if _, err := rand.Read(buf); err != nil {
				w.fail(err)
				return
			}
			if err := writeSynced(path, buf); err != nil {
				w.fail(err)
				return
			}
			w.mu.Lock()
			w.n, w.last = w.n+1, sha256.Sum256(buf)
			w.mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}()
	t.Cleanup(func() { w.stopQuietly() })
	return w
}

func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	return errors.Join(err, f.Sync(), f.Close())
}

func (w *rewriter) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.err = err
}

func (w *rewriter) rounds() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

func (w *rewriter) waitRounds(t *testing.T, n int) {
	t.Helper()
	waitFor(t, "the writer to rewrite its file", time.Minute, func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.err != nil {
			t.Fatalf("writer: %v", w.err)
		}
		return w.n >= n
	})
}

func (w *rewriter) stopQuietly() {
	select {
	case <-w.quit:
	default:
		close(w.quit)
	}
	<-w.done
}

// stop ends the writer and returns the checksum of its last complete rewrite.
func (w *rewriter) stop(t *testing.T) [32]byte {
	t.Helper()
	w.stopQuietly()
	if w.err != nil {
		t.Fatalf("writer: %v", w.err)
	}
	return w.last
}
