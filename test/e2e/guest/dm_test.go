//go:build e2eguest

package guest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rds-csi/rds-csi/agent"
	"github.com/rds-csi/rds-csi/kernel/dm"
	"github.com/rds-csi/rds-csi/kernel/fabrics"
	"github.com/rds-csi/rds-csi/kernel/uevent"
	"github.com/rds-csi/rds-csi/test/workload"
	"github.com/rds-csi/rds-csi/volume"
)

// dmVolume is a volume connected by the agent's NVMe attacher with a
// dm-multipath device in front of its namespace.
type dmVolume struct {
	v       *vol
	target  agent.Target
	dev     agent.Device
	name    string // the dm device
	sectors uint64
}

// TestDM reproduces what kept consumers alive across a controller loss in
// the measurements behind kernel/dm: a queue_if_no_path multipath device in
// front of each of two namespaces, an O_DIRECT writer on one and an ext4
// writer (write + fsync) on the other, the target cut until ctrl_loss_tmo
// deletes the controllers, a reconnect that brings the namespaces back under
// new device numbers, and a noflush reload onto them. The writers must see no
// error at all, and every block and file must read back.
func TestDM(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	events, err := uevent.Start(ctx)
	must(t, "uevent monitor", err)
	attacher := &agent.NVMe{
		Fabrics: &fabrics.Fabrics{Device: fabrics.DefaultDevice, Sysfs: sysTree},
		Sysfs:   sysTree,
		Events:  events,
		DevDir:  "/dev",
	}

	raw := f.dmVolume(t, attacher, "dm-raw", "e2e-dm-raw")
	fsv := f.dmVolume(t, attacher, "dm-fs", "e2e-dm-fs")
	if raw.target.Port != fsv.target.Port {
		t.Fatalf("the volumes are on ports %d and %d: one PortDown would not cut both", raw.target.Port, fsv.target.Port)
	}
	bio := isBioBased(t, raw.dev.Path)
	multipath, _ := os.ReadFile("/sys/module/nvme_core/parameters/multipath")
	t.Logf("nvme_core.multipath=%s: namespaces are %s-based, tables %q", bytes.TrimSpace(multipath), map[bool]string{true: "bio", false: "request"}[bio], dm.MultipathTable(raw.sectors, raw.dev.Dev.Major, raw.dev.Dev.Minor, bio)[0].Params)
	for _, d := range []*dmVolume{raw, fsv} {
		made, err := dm.Create(ctxFor(t, 30*time.Second), d.name, dm.MultipathTable(d.sectors, d.dev.Dev.Major, d.dev.Dev.Minor, bio))
		must(t, "creating "+d.name, err)
		t.Logf("%s: dm %d:%d at %s over %s (%s)", d.v.id, made.Major, made.Minor, made.Path(), d.dev.Path, d.dev.Dev)
	}

	mnt := filepath.Join(f.dir, "dm-fs")
	must(t, "mkdir", os.MkdirAll(mnt, 0o755))
	fsDev := "/dev/mapper/" + fsv.name
	if out, err := exec.CommandContext(ctxFor(t, 60*time.Second), "mkfs.ext4", "-q", "-F", "-E", "nodiscard", fsDev).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 %s: %v\n%s", fsDev, err, out)
	}
	must(t, "mounting "+fsDev, unix.Mount(fsDev, mnt, "ext4", 0, "errors=remount-ro"))
	mounted := true

	rawW := startWriter("raw", func(w *writer) { w.rawLoop("/dev/mapper/"+raw.name, int(raw.sectors/8)) })
	fsW := startWriter("ext4", func(w *writer) { w.fileLoop(mnt) })
	writers := []*writer{rawW, fsW}
	// Whatever happens, nothing may hang in the cleanup: queueing is
	// turned off so that blocked writers return, they stop, the filesystem
	// is unmounted, then the dm devices go before the fixture deletes the
	// controllers under them.
	torn := false
	teardown := func() {
		if torn {
			return
		}
		torn = true
		// Not the test's context: that one is cancelled before cleanups run.
		tctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		for _, w := range writers {
			w.requestStop()
		}
		for _, d := range []*dmVolume{raw, fsv} {
			if err := dm.Message(tctx, d.name, "fail_if_no_path"); err != nil {
				t.Logf("teardown: %v", err)
			}
		}
		for _, w := range writers {
			w.waitStopped(30 * time.Second) // an open file would keep the unmount busy
		}
		if mounted {
			if err := unix.Unmount(mnt, 0); err != nil {
				t.Logf("teardown: unmounting %s: %v", mnt, err)
			}
		}
		for _, d := range []*dmVolume{raw, fsv} {
			if err := dm.Remove(tctx, d.name); err != nil {
				t.Errorf("teardown: %v", err)
			}
		}
	}
	t.Cleanup(teardown)

	waitFor(t, "both writers are writing", 60*time.Second, func() bool { return rawW.count() >= 50 && fsW.count() >= 10 })
	t.Logf("before the fault: raw %d writes, ext4 %d files", rawW.count(), fsW.count())

	// The fault: nvmet stops listening; the controllers reconnect in vain
	// every second until ctrl_loss_tmo (5 s) deletes them.
	port := raw.target.Port
	old := map[string]agent.Device{raw.name: raw.dev, fsv.name: fsv.dev}
	faultAt := time.Now()
	must(t, "PortDown", f.exp.PortDown(port))
	waitFor(t, "the volumes' controllers are deleted", 120*time.Second, func() bool {
		return len(controllersOf(t, raw.v.nqn)) == 0 && len(controllersOf(t, fsv.v.nqn)) == 0
	})
	t.Logf("controllers deleted %.1fs after the fault; raw %d writes, ext4 %d files; errors so far raw %d, ext4 %d",
		time.Since(faultAt).Seconds(), rawW.count(), fsW.count(), len(rawW.errors()), len(fsW.errors()))
	for _, d := range []*dmVolume{raw, fsv} {
		st, err := dm.Status(ctxFor(t, 10*time.Second), d.name)
		must(t, "status", err)
		t.Logf("%s without a path: %q", d.name, st)
	}
	stalled := rawW.count()
	time.Sleep(3 * time.Second) // a longer outage: I/O keeps queueing
	if n := rawW.count(); n > stalled+1 {
		t.Errorf("the raw writer made %d writes with no path: they cannot have reached the disk", n-stalled)
	}

	// The heal: the target returns, the agent's attacher reconnects and
	// finds each namespace again by NQN and NSID, under a new name and
	// device number since dm still holds the old ones, and the tables are
	// reloaded onto them without a flush.
	must(t, "PortUp", f.exp.PortUp(port))
	for _, d := range []*dmVolume{raw, fsv} {
		d.dev, err = attacher.Attach(ctxFor(t, rpcTimeout), d.target)
		must(t, "reattaching "+d.v.id, err)
		if d.dev.Dev == old[d.name].Dev {
			t.Fatalf("%s came back as %s again: nothing was renumbered, so this proves nothing", d.v.id, d.dev.Dev)
		}
		t.Logf("%s: was %s (%s), now %s (%s)", d.v.id, old[d.name].Path, old[d.name].Dev, d.dev.Path, d.dev.Dev)
	}
	healStart := time.Now()
	for _, d := range []*dmVolume{raw, fsv} {
		must(t, "reloading "+d.name, dm.Reload(ctxFor(t, 60*time.Second), d.name, dm.MultipathTable(d.sectors, d.dev.Dev.Major, d.dev.Dev.Minor, bio)))
	}
	t.Logf("both reloaded in %.2fs, %.1fs after the fault", time.Since(healStart).Seconds(), time.Since(faultAt).Seconds())
	for _, d := range []*dmVolume{raw, fsv} {
		table, err := dm.Table(ctxFor(t, 10*time.Second), d.name)
		must(t, "table", err)
		if len(table) != 1 || !strings.Contains(table[0].Params, " "+d.dev.Dev.String()+" ") || !strings.Contains(table[0].Params, "queue_if_no_path") {
			t.Errorf("%s table %+v: not queueing over %s", d.name, table, d.dev.Dev)
		}
		st, err := dm.Status(ctxFor(t, 10*time.Second), d.name)
		must(t, "status", err)
		t.Logf("%s healed: table %q status %q", d.name, table[0].Params, st)
	}
	resumed := rawW.count()
	waitFor(t, "both writers move on", 60*time.Second, func() bool { return rawW.count() >= resumed+50 && fsW.count() >= 10 })

	for _, w := range writers {
		w.requestStop()
	}
	for _, w := range writers {
		if !w.waitStopped(60 * time.Second) {
			t.Fatalf("the %s writer is still blocked 60 s after it was told to stop", w.name)
		}
	}
	for _, w := range writers {
		t.Logf("%s writer: %d writes, longest %.1fs, errors %d", w.name, w.count(), w.maxLatency().Seconds(), len(w.errors()))
		if errs := w.errors(); len(errs) != 0 {
			t.Errorf("the %s writer saw I/O errors: %q", w.name, errs[:min(len(errs), 5)])
		}
	}
	if rawW.maxLatency() < 2*time.Second {
		t.Errorf("no raw write waited out the outage (longest %v): the fault did not hit the writer, so this proves nothing", rawW.maxLatency())
	}

	verifyRaw(t, "/dev/mapper/"+raw.name, rawW.count())
	verifyFiles(t, mnt, fsW.count())
	probe := newPayload(t, 64<<10)
	probe.writeFile(t, filepath.Join(mnt, "probe")) // ext4 aborted to read-only would fail here
	must(t, "unmounting", unix.Unmount(mnt, 0))
	mounted = false
	must(t, "mounting again", unix.Mount(fsDev, mnt, "ext4", 0, "errors=remount-ro"))
	mounted = true
	verifyFiles(t, mnt, fsW.count())
	probe.checkFile(t, "after remount", filepath.Join(mnt, "probe"))
	must(t, "unmounting", unix.Unmount(mnt, 0))
	mounted = false

	// Giving a device up: queueing off first, then remove.
	must(t, "fail_if_no_path", dm.Message(ctxFor(t, 10*time.Second), raw.name, "fail_if_no_path"))
	if table, err := dm.Table(ctxFor(t, 10*time.Second), raw.name); err != nil || strings.Contains(table[0].Params, "queue_if_no_path") {
		t.Errorf("after fail_if_no_path the table is %+v (%v): still queueing", table, err)
	}
	teardown()
	for _, d := range []*dmVolume{raw, fsv} {
		if _, ok, err := dm.Lookup(d.name); ok || err != nil {
			t.Errorf("%s still there after Remove (%v)", d.name, err)
		}
		if _, err := os.Lstat("/dev/mapper/" + d.name); !os.IsNotExist(err) {
			t.Errorf("/dev/mapper/%s left behind (%v)", d.name, err)
		}
	}
}

// dmVolume provisions a volume and connects it through the agent's
// attacher with ctrl_loss_tmo=5, so that a cut target deletes the
// controller within seconds.
func (f *fixture) dmVolume(t *testing.T, attacher *agent.NVMe, name, dmName string) *dmVolume {
	t.Helper()
	v := f.create(name, "block", 64<<20)
	c, err := volume.ParseContext(v.context)
	must(t, "volume context", err)
	c.Connect.CtrlLossTmo, c.Connect.ReconnectDelay, c.Connect.FastIOFailTmo = 5, 1, -1
	target := agent.Target{VolumeID: v.id, Context: c, HostNQN: volume.HostNQN(nodeID), HostID: volume.HostID(nodeID), NSID: 1}
	dev, err := attacher.Attach(ctxFor(t, rpcTimeout), target)
	must(t, "attaching "+v.id, err)
	return &dmVolume{v: v, target: target, dev: dev, name: dmName, sectors: uint64(blockSize(t, dev.Path)) / 512}
}

// isBioBased tells a bio-based disk (a native-multipath head) from a
// request-based one: only blk-mq disks have an mq directory.
func isBioBased(t *testing.T, devPath string) bool {
	t.Helper()
	_, err := os.Stat(filepath.Join("/sys/block", filepath.Base(devPath), "mq"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return err != nil
}

const rawBlock = 4096

// fillBlock makes block i recognisable: its number, then a pattern of it.
func fillBlock(b []byte, i int) {
	copy(b, fmt.Sprintf("BLK%08d", i))
	for k := 11; k < len(b); k++ {
		b[k] = byte(i*31 + k)
	}
}

func fileContent(j int) []byte {
	return []byte(fmt.Sprintf("file %08d %s\n", j, strings.Repeat("x", j%97)))
}

// writer records every write of one consumer: how many, the errors and
// the longest wait.
type writer struct {
	name     string
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}

	mu     sync.Mutex
	n      int
	errs   []string
	maxLat time.Duration
	// returned holds when each write returned, in order: the benchmarks read
	// when the consumer wrote again after an outage.
	returned []time.Time
}

func startWriter(name string, loop func(*writer)) *writer {
	w := &writer{name: name, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		loop(w)
	}()
	return w
}

func (w *writer) record(i int, start time.Time, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n++
	now := time.Now()
	w.returned = append(w.returned, now)
	w.maxLat = max(w.maxLat, now.Sub(start))
	if err != nil {
		w.errs = append(w.errs, fmt.Sprintf("#%d: %v", i, err))
	}
}

func (w *writer) stopped() bool {
	select {
	case <-w.stop:
		return true
	default:
		return false
	}
}

func (w *writer) requestStop() { w.stopOnce.Do(func() { close(w.stop) }) }

func (w *writer) waitStopped(d time.Duration) bool {
	select {
	case <-w.done:
		return true
	case <-time.After(d):
		return false
	}
}

func (w *writer) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

func (w *writer) errors() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.errs...)
}

// firstDoneAfter is when the first write that returned after t returned.
func (w *writer) firstDoneAfter(t time.Time) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, d := range w.returned {
		if d.After(t) {
			return d, true
		}
	}
	return time.Time{}, false
}

func (w *writer) maxLatency() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.maxLat
}

// rawLoop writes block after block with O_DIRECT, paced so that the
// volume does not fill up before the scenario ends.
func (w *writer) rawLoop(dev string, blocks int) {
	fd, err := unix.Open(dev, unix.O_WRONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		w.record(-1, time.Now(), err)
		return
	}
	defer func() { _ = unix.Close(fd) }()
	buf, err := unix.Mmap(-1, 0, rawBlock, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE) // page-aligned, as O_DIRECT wants
	if err != nil {
		w.record(-1, time.Now(), err)
		return
	}
	defer func() { _ = unix.Munmap(buf) }()
	for i := 0; i < blocks && !w.stopped(); i++ {
		fillBlock(buf, i)
		start := time.Now()
		n, err := unix.Pwrite(fd, buf, int64(i)*rawBlock)
		if err == nil && n != rawBlock {
			err = fmt.Errorf("short write of %d bytes", n)
		}
		w.record(i, start, err)
		time.Sleep(10 * time.Millisecond)
	}
}

// fileLoop creates file after file, each synced before the next.
func (w *writer) fileLoop(dir string) {
	for j := 0; !w.stopped(); j++ {
		start := time.Now()
		err := workload.WriteSynced(filepath.Join(dir, fmt.Sprintf("f%06d", j)), fileContent(j))
		w.record(j, start, err)
		time.Sleep(20 * time.Millisecond)
	}
}

// verifyRaw reads the first n blocks back with O_DIRECT.
func verifyRaw(t *testing.T, dev string, n int) {
	t.Helper()
	fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	must(t, "opening "+dev, err)
	defer func() { _ = unix.Close(fd) }()
	buf, err := unix.Mmap(-1, 0, rawBlock, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	must(t, "mmap", err)
	defer func() { _ = unix.Munmap(buf) }()
	want := make([]byte, rawBlock)
	bad := 0
	for i := range n {
		if _, err := unix.Pread(fd, buf, int64(i)*rawBlock); err != nil {
			t.Fatalf("reading block %d of %s: %v", i, dev, err)
		}
		fillBlock(want, i)
		if !bytes.Equal(buf, want) {
			if bad < 3 {
				t.Errorf("block %d reads %q…, wrote %q…", i, buf[:16], want[:16])
			}
			bad++
		}
	}
	if bad != 0 {
		t.Fatalf("%d of %d raw blocks differ", bad, n)
	}
	t.Logf("raw: all %d blocks verified", n)
}

// verifyFiles reads the n files back after dropping the caches.
func verifyFiles(t *testing.T, dir string, n int) {
	t.Helper()
	dropCaches(t)
	bad := 0
	for j := range n {
		got, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("f%06d", j)))
		if err != nil || !bytes.Equal(got, fileContent(j)) {
			if bad < 3 {
				t.Errorf("file %d: %q, %v", j, got, err)
			}
			bad++
		}
	}
	if bad != 0 {
		t.Fatalf("%d of %d files differ", bad, n)
	}
	t.Logf("ext4: all %d files verified", n)
}
