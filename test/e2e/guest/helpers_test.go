//go:build e2eguest

package guest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rds-csi/rds-csi/kernel/mount"
)

// payload is data written once and checked after every later step.
type payload struct {
	data []byte
	sum  [32]byte
}

func newPayload(t *testing.T, size int) payload {
	t.Helper()
	b := make([]byte, size)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return payload{data: b, sum: sha256.Sum256(b)}
}

// dropCaches makes the next read come from the device: reading back what
// the page cache still holds proves nothing about the NVMe path.
func dropCaches(t *testing.T) {
	t.Helper()
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200); err != nil {
		t.Fatalf("dropping caches: %v", err)
	}
}

// writeFile writes p into a file and syncs it to the device.
func (p payload) writeFile(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(p.data); err != nil {
		t.Fatalf("writing %s: %v", path, err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync %s: %v", path, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// checkFile reads the file back from the device and compares checksums.
func (p payload) checkFile(t *testing.T, step, path string) {
	t.Helper()
	dropCaches(t)
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%s: reading %s: %v", step, path, err)
	}
	if sum := sha256.Sum256(got); sum != p.sum {
		t.Fatalf("%s: %s has sha256 %x, wrote %x (%d bytes read, %d written)", step, path, sum, p.sum, len(got), len(p.data))
	}
	t.Logf("%s: %s intact (sha256 %x)", step, path, p.sum[:8])
}

// writeAt writes p at off of a block device (or a bind mount of one).
func (p payload) writeAt(t *testing.T, dev string, off int64) {
	t.Helper()
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(p.data, off); err != nil {
		t.Fatalf("writing %s at %d: %v", dev, off, err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync %s: %v", dev, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// checkAt reads p back from off of a block device, bypassing the cache.
func (p payload) checkAt(t *testing.T, step, dev string, off int64) {
	t.Helper()
	dropCaches(t)
	f, err := os.Open(dev)
	if err != nil {
		t.Fatalf("%s: %v", step, err)
	}
	defer func() { _ = f.Close() }()
	got := make([]byte, len(p.data))
	if _, err := f.ReadAt(got, off); err != nil {
		t.Fatalf("%s: reading %s at %d: %v", step, dev, off, err)
	}
	if sum := sha256.Sum256(got); sum != p.sum {
		t.Fatalf("%s: %s at %d has sha256 %x, wrote %x", step, dev, off, sum, p.sum)
	}
	t.Logf("%s: %s at offset %d intact (sha256 %x)", step, dev, off, p.sum[:8])
}

// device is the volume's block device as sysfs resolves it now, by
// subsystem NQN and namespace ID.
func device(t *testing.T, nqn string) string {
	t.Helper()
	ns, err := sysTree.ResolveNamespace(nqn, 1)
	if err != nil {
		t.Fatalf("resolving namespace 1 of %s: %v", nqn, err)
	}
	return "/dev/" + ns.Name
}

// controllersOf names the controllers connected to nqn.
func controllersOf(t *testing.T, nqn string) []string {
	t.Helper()
	cs, err := sysTree.ControllersOf(nqn)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("controllers of %s: %v", nqn, err)
	}
	names := make([]string, 0, len(cs))
	for _, c := range cs {
		names = append(names, c.Name+"("+c.State+")")
	}
	return names
}

// waitFor polls cond until it holds or the deadline passes. Used for what
// the kernel does asynchronously: controllers going, devices coming.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting until %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// mountsAt counts the mounts whose mount point is path.
func mountsAt(t *testing.T, path string) int {
	t.Helper()
	ms, err := mount.List()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range ms {
		if m.MountPoint == path {
			n++
		}
	}
	return n
}

// mountsUnder lists the mount points at or below dir.
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	ms, err := mount.List()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range ms {
		if m.MountPoint == dir || strings.HasPrefix(m.MountPoint, dir+"/") {
			out = append(out, m.MountPoint)
		}
	}
	return out
}

// allocate makes a file of size bytes with every block allocated.
func allocate(t *testing.T, path string, size int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	if err := unix.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
		t.Fatalf("allocating %d bytes for %s: %v", size, path, err)
	}
}

// blockSize is BLKGETSIZE64 of a device node.
func blockSize(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	n, err := unix.IoctlGetUint64(int(f.Fd()), unix.BLKGETSIZE64)
	if err != nil {
		t.Fatalf("BLKGETSIZE64 %s: %v", path, err)
	}
	return int64(n)
}

// fsSize is the filesystem's total size as statfs reports it.
func fsSize(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		t.Fatalf("statfs %s: %v", path, err)
	}
	return int64(st.Blocks) * st.Bsize
}

// assertGone checks that nothing of the volume is left: no controller of its
// NQN, no mount under its directory, no disk and no backing file on the RDS.
func (f *fixture) assertGone(t *testing.T, v *vol) {
	t.Helper()
	waitFor(t, "no controller of "+v.nqn+" is left", 30*time.Second, func() bool { return len(controllersOf(t, v.nqn)) == 0 })
	if m := mountsUnder(t, filepath.Dir(v.staging)); len(m) != 0 {
		t.Errorf("mounts left behind: %v", m)
	}
	for _, d := range f.rds.Sim.Disks() {
		if d.NQN == v.nqn {
			t.Errorf("disk left on the RDS: %+v", d)
		}
	}
	files, _ := filepath.Glob(filepath.Join(f.simState, "files", "storage-pool", "e2e", v.id+"*"))
	if len(files) != 0 {
		t.Errorf("backing files left on the RDS: %v", files)
	}
}

// holdOpen starts a process that keeps path open, as a workload would, and
// returns a function that ends it.
func holdOpen(t *testing.T, path string) func() {
	t.Helper()
	fd, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	proc, err := os.StartProcess("/bin/sleep", []string{"sleep", "600"}, &os.ProcAttr{Files: []*os.File{fd, os.Stdout, os.Stderr}})
	_ = fd.Close()
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = proc.Kill()
		_, _ = proc.Wait()
	}
	t.Cleanup(stop)
	return stop
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}
