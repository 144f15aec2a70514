//go:build e2eguest

package guest

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rds-csi/rds-csi/agent"
	"github.com/rds-csi/rds-csi/agent/heal"
	"github.com/rds-csi/rds-csi/kernel/dm"
	"github.com/rds-csi/rds-csi/kernel/sysfs"
	"github.com/rds-csi/rds-csi/volume"
)

// TestHealIdentity: the disk behind a staged volume's NQN and namespace ID
// is replaced by another one (deleted and re-created under the same slot on
// the RDS, or its file swapped) while the node has the volume staged. The
// kernel notices by the namespace's identifiers (UUID, NGUID, hence its
// wwid), not by its address: "identifiers changed for nsid 1", or the old
// namespace goes and a new one comes. Whatever answers to NQN + NSID now is
// another disk, and the agent must not heal the volume onto it:
//
//   - the volume turns failed within healDeadline, with a cause naming the
//     staged namespace's wwid and the new one's, as /sys/block/<ns>/wwid
//     prints them;
//   - the front is never reloaded onto the new namespace;
//   - I/O through the publish fails (EIO) instead of reaching the other disk
//     or queueing for ever, and a write held in the front during an outage
//     fails too;
//   - the other disk (filled with a marker before the swap) is unchanged
//     after all of it, NodeUnstage included, and nothing read the marker;
//   - NodeUnstage succeeds and leaves no controller, no front, no mount.
//
// Three ways the swap meets the node: while it is connected (nvmet tells
// the host, which rescans and drops the namespace); across a controller
// loss (the agent's repair connects anew and meets the new namespace); and
// while the kernel keeps reconnecting (ctrl_loss_tmo=-1: the kernel
// reconnects the same controller, drops the namespace and does not scan
// again, so an agent that only waits for the namespace waits for ever).
func TestHealIdentity(t *testing.T) {
	t.Run("swapped while connected", func(t *testing.T) { identitySwap(t, swapConnected) })
	t.Run("swapped across a controller loss, block and ext4", func(t *testing.T) { identitySwap(t, swapAcrossLoss) })
	t.Run("swapped while the kernel reconnects", func(t *testing.T) { identitySwap(t, swapWhileReconnecting) })
}

type swapMode int

const (
	swapConnected swapMode = iota
	swapAcrossLoss
	swapWhileReconnecting
)

// replacementMarker fills the replacement disk, so that a consumer moved
// onto it would read what it never wrote.
var replacementMarker = []byte("RDS-CSI-E2E REPLACEMENT DISK: NOT THE STAGED VOLUME. ")

// swapped is a staged volume whose disk the scenario replaces.
type swapped struct {
	*vol
	fsType string
	// oldNS and oldWWID are the namespace at stage time; oldWWID as
	// /sys/block/<ns>/wwid prints it.
	oldNS   sysfs.Namespace
	oldWWID string
	// front is the volume's dm device name.
	front string
	// repl is the replacement disk's file, replSum its sha256 after the
	// marker was written, newUUID the identity Replace gave it.
	repl    string
	replSum [32]byte
	newUUID string
	before  payload
	// during is a write held in the front while the controller is gone
	// (swapAcrossLoss only).
	during *write
	watch  *identityWatch
}

func identitySwap(t *testing.T, mode swapMode) {
	h := newHealFixture(t, healOptions{})
	a := h.agent
	var specs [][2]string // name, fsType
	params := map[string]string{}
	switch mode {
	case swapConnected:
		specs = [][2]string{{"heal-ident-connected", "block"}}
	case swapAcrossLoss:
		specs = [][2]string{{"heal-ident-loss-block", "block"}, {"heal-ident-loss-ext4", "ext4"}}
		params[volume.KeyCtrlLossTmo] = "5"
	case swapWhileReconnecting:
		specs = [][2]string{{"heal-ident-reconnect", "block"}}
		params[volume.KeyCtrlLossTmo] = "-1"
	}
	var vols []*swapped
	for _, s := range specs {
		sv := &swapped{vol: h.create(s[0], s[1], params), fsType: s[1]}
		h.stageAndPublish(t, sv.vol)
		vols = append(vols, sv)
	}
	port := portOf(t, vols[0].vol)
	for _, sv := range vols {
		if p := portOf(t, sv.vol); p != port {
			t.Fatalf("volume %s is on port %d, %s on %d: the outage cuts one port", sv.id, p, vols[0].id, port)
		}
		sv.prepare(t)
	}

	var swapAt, backAt time.Time
	replace := func() {
		swapAt = time.Now()
		for _, sv := range vols {
			uuid, err := h.exp.Replace(sv.nqn, sv.repl)
			must(t, "replacing the disk of "+sv.id, err)
			sv.newUUID = uuid
			t.Logf("volume %s: namespace 1 of %s now serves %s as uuid %s (staged: %s, wwid %s)", sv.id, sv.nqn, sv.repl, uuid, sv.oldNS.Name, sv.oldWWID)
		}
	}
	switch mode {
	case swapConnected:
		replace()
		backAt = swapAt
		for _, sv := range vols {
			sv.waitKernelDropped(t)
		}
	case swapAcrossLoss:
		must(t, "PortDown", h.exp.PortDown(port))
		for _, sv := range vols {
			waitControllersGone(t, sv.vol, healDeadline)
		}
		for _, sv := range vols {
			a.waitState(t, sv.vol, 30*time.Second, heal.StateLost, heal.StateHealing)
		}
		// Written after the controllers went: these wait in the fronts, and
		// only a front reloaded onto a namespace can complete them.
		for _, sv := range vols {
			data := newPayload(t, 64<<10).data
			if sv.fsType == "block" {
				sv.during = startWrite(sv.target, 4<<20, data)
			} else {
				sv.during = startWrite(filepath.Join(sv.target, "during"), -1, data)
			}
		}
		for _, sv := range vols {
			sv.during.blocked(t, time.Second)
		}
		replace()
		must(t, "PortUp", h.exp.PortUp(port))
		backAt = time.Now()
	case swapWhileReconnecting:
		// Nothing is written during this outage: the kernel holds such
		// I/O itself and sends it to namespace 1 of the reconnected
		// controller before it scans, that is to the other disk, before
		// any agent could know.
		ctrls := names(controllersOf(t, vols[0].nqn))
		must(t, "PortDown", h.exp.PortDown(port))
		for _, sv := range vols {
			a.waitState(t, sv.vol, 30*time.Second, heal.StateReconnecting)
		}
		replace()
		must(t, "PortUp", h.exp.PortUp(port))
		backAt = time.Now()
		for _, sv := range vols {
			sv.waitKernelDropped(t)
		}
		t.Logf("controllers of %s before the outage %v, after the reconnect %v", vols[0].nqn, ctrls, controllersOf(t, vols[0].nqn))
	}

	for _, sv := range vols {
		tr := sv.verdict(t, a, swapAt, backAt, healDeadline)
		sv.checkCause(t, a, tr)
	}
	// Failed must stay failed: the new namespace is there and its
	// controller live, which is no reason to read live again.
	time.Sleep(10 * healScanInterval)
	for _, sv := range vols {
		sv.noLiveOnAnotherDevice(t, a, swapAt)
		if hl, _ := a.loop.Health(sv.id); hl.State != heal.StateFailed {
			t.Errorf("volume %s reads %s (cause %q) %v after it turned failed; states since the swap %v", sv.id, hl.State, hl.LastCause, 10*healScanInterval, a.statesSince(sv.id, swapAt))
		}
	}
	for _, sv := range vols {
		if sv.fsType == "block" {
			blockIOFails(t, sv.target)
		} else {
			fileIOFails(t, sv.target)
		}
		if sv.during != nil {
			err := sv.during.result(t, healDeadline)
			if err == nil {
				t.Errorf("volume %s: the write held in the front during the outage completed after the disk was replaced: it went to the other disk", sv.id)
			} else {
				t.Logf("volume %s: the write held during the outage failed: %v", sv.id, err)
			}
		}
	}
	for _, sv := range vols {
		sv.watch.end()
		sv.checkFrontStayed(t)
	}

	for _, sv := range vols {
		must(t, "NodeUnpublish "+sv.id, retryAborted(func() error { return h.unpublish(sv.vol) }))
		must(t, "NodeUnstage "+sv.id, retryAborted(func() error { return h.unstage(sv.vol) }))
		waitFor(t, "no controller of "+sv.nqn+" is left after NodeUnstage", 30*time.Second, func() bool { return len(controllersOf(t, sv.nqn)) == 0 })
		if _, ok, err := dm.Lookup(sv.front); ok || err != nil {
			t.Errorf("the front %s is still there after NodeUnstage (lookup error %v)", sv.front, err)
		}
		for _, p := range []string{sv.target, sv.staging} {
			if n := mountsAt(t, p); n != 0 {
				t.Errorf("%d mounts left at %s after NodeUnpublish and NodeUnstage", n, p)
			}
		}
		if sum := fileSum(t, sv.repl); sum != sv.replSum {
			t.Errorf("volume %s: the replacement disk %s changed: sha256 %x, was %x when the marker was written", sv.id, sv.repl, sum, sv.replSum)
		} else {
			t.Logf("volume %s: the replacement disk is untouched (sha256 %x)", sv.id, sum[:8])
		}
		must(t, "DeleteVolume "+sv.id, h.delete(sv.vol))
		h.assertGone(t, sv.vol)
	}
}

// prepare records the staged namespace, writes data the volume must keep,
// fills the replacement disk with the marker and starts watching.
func (sv *swapped) prepare(t *testing.T) {
	t.Helper()
	ns, err := sysTree.ResolveNamespace(sv.nqn, 1)
	must(t, "resolving the staged namespace of "+sv.id, err)
	sv.oldNS, sv.oldWWID = ns, wwidOf(t, ns.Name)
	sv.front = agent.MapperName(sv.id)
	d, ok, err := dm.Lookup(sv.front)
	if err != nil || !ok {
		t.Fatalf("volume %s has no front %s (%v)", sv.id, sv.front, err)
	}
	if paths := frontPaths(t, sv.front); !slices.Equal(paths, []string{ns.Dev.String()}) {
		t.Fatalf("the front %s leads to %v, not to the staged namespace %s (%s)", sv.front, paths, ns.Name, ns.Dev)
	}
	t.Logf("volume %s: staged namespace %s (%s), wwid %s, behind the front %s (%d:%d)", sv.id, ns.Name, ns.Dev, sv.oldWWID, sv.front, d.Major, d.Minor)

	sv.before = newPayload(t, 1<<20)
	if sv.fsType == "block" {
		sv.before.writeAt(t, sv.target, 1<<20)
		sv.before.checkAt(t, "written before the swap", sv.target, 1<<20)
	} else {
		sv.before.writeFile(t, filepath.Join(sv.target, "before"))
		sv.before.checkFile(t, "written before the swap", filepath.Join(sv.target, "before"))
	}

	// The same size as the volume: the only difference the kernel can see
	// is the identity.
	size := blockSize(t, fmt.Sprintf("/dev/dm-%d", d.Minor))
	sv.repl = filepath.Join(t.TempDir(), sv.id+"-replacement.img")
	sv.replSum = fillMarker(t, sv.repl, size)
	t.Logf("volume %s: replacement disk %s, %d bytes of marker, sha256 %x", sv.id, sv.repl, size, sv.replSum[:8])
	sv.watch = watchIdentity(t, sv.nqn, sv.front)
}

// waitKernelDropped waits until the kernel has let the staged namespace go
// (it found other identifiers under namespace 1, or the namespace gone):
// the proof that the swap reached the host, whatever the agent does.
func (sv *swapped) waitKernelDropped(t *testing.T) {
	t.Helper()
	start := time.Now()
	waitFor(t, "the kernel drops the staged namespace "+sv.oldNS.Name+" of "+sv.nqn, healDeadline, func() bool {
		ns, err := sysTree.ResolveNamespace(sv.nqn, 1)
		if errors.Is(err, fs.ErrNotExist) {
			return true
		}
		if err != nil {
			return false
		}
		wwid, err := readWWID(ns.Name)
		return err == nil && wwid != sv.oldWWID
	})
	t.Logf("volume %s: the kernel dropped the staged namespace %v after the swap reached it", sv.id, time.Since(start).Round(time.Millisecond))
}

// verdict waits until the volume turns failed after its disk was replaced
// (at swapAt) and returns that transition. Turning live on any device but
// the staged namespace's is the defect (healed onto the other disk), and so
// is not turning failed within d of the target answering again (at backAt):
// healing or lost for ever.
func (sv *swapped) verdict(t *testing.T, a *healAgent, swapAt, backAt time.Time, d time.Duration) transition {
	t.Helper()
	deadline := backAt.Add(d)
	for {
		for _, tr := range a.transitionsSince(sv.id, swapAt) {
			if tr.to == heal.StateLive && tr.device != sv.oldNS.Dev.String() {
				t.Fatalf("volume %s was reported live on device %s %v after its disk was replaced: it was healed onto the other disk "+
					"(staged namespace %s %s, wwid %s; namespace 1 of %s now %s; the front %s leads to %v; states since the swap %v)",
					sv.id, tr.device, tr.at.Sub(swapAt).Round(time.Millisecond), sv.oldNS.Name, sv.oldNS.Dev, sv.oldWWID,
					sv.nqn, nowShowing(sv.nqn), sv.front, frontPathsNow(sv.front), a.statesSince(sv.id, swapAt))
			}
			if tr.to == heal.StateFailed {
				t.Logf("volume %s failed %v after the swap: %s", sv.id, tr.at.Sub(swapAt).Round(time.Millisecond), tr.cause)
				return tr
			}
		}
		if time.Now().After(deadline) {
			hl, _ := a.loop.Health(sv.id)
			t.Fatalf("volume %s is still %s, not failed, %v after the other disk answered under its NQN (cause %q; states since the swap %v; namespace 1 of %s now %s; controllers %v)",
				sv.id, hl.State, d, hl.LastCause, a.statesSince(sv.id, swapAt), sv.nqn, nowShowing(sv.nqn), controllersOf(t, sv.nqn))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkCause requires the failure's cause to name both disks by the wwids
// the guest's sysfs prints.
func (sv *swapped) checkCause(t *testing.T, a *healAgent, tr transition) {
	t.Helper()
	newWWID := "uuid." + sv.newUUID
	sv.watch.sample() // what the kernel shows now, not 50 ms ago
	seen := false
	for _, ns := range sv.watch.namespaces() {
		if ns.WWID == sv.oldWWID {
			continue
		}
		seen = true
		if ns.WWID != newWWID {
			t.Errorf("namespace 1 of %s showed up as %s with wwid %s, not the replacement's %s", sv.nqn, ns.Name, ns.WWID, newWWID)
		} else {
			t.Logf("the replacement showed up as %s (%s), wwid %s", ns.Name, ns.Dev, ns.WWID)
		}
	}
	if !seen {
		t.Logf("the replacement never showed in sysfs while watched; its wwid would read %s", newWWID)
	}
	hl, _ := a.loop.Health(sv.id)
	for what, cause := range map[string]string{"the transition to failed": tr.cause, "Health.LastCause": hl.LastCause} {
		for _, w := range []string{sv.oldWWID, newWWID} {
			if !strings.Contains(cause, w) {
				t.Errorf("volume %s: %s says %q, which does not name %s (staged %s, now %s)", sv.id, what, cause, w, sv.oldWWID, newWWID)
			}
		}
	}
}

// noLiveOnAnotherDevice fails if the volume was reported live on any
// device but its staged namespace's since the swap.
func (sv *swapped) noLiveOnAnotherDevice(t *testing.T, a *healAgent, swapAt time.Time) {
	t.Helper()
	for _, tr := range a.transitionsSince(sv.id, swapAt) {
		if tr.to == heal.StateLive && tr.device != sv.oldNS.Dev.String() {
			t.Errorf("volume %s was reported live on %s %v after the swap (staged namespace %s): states since the swap %v",
				sv.id, tr.device, tr.at.Sub(swapAt).Round(time.Millisecond), sv.oldNS.Dev, a.statesSince(sv.id, swapAt))
		}
	}
}

// checkFrontStayed fails if the front's table ever listed anything but the
// staged namespace, in particular a namespace of the other disk.
func (sv *swapped) checkFrontStayed(t *testing.T) {
	t.Helper()
	paths := sv.watch.frontPaths()
	others := map[string]bool{}
	for _, ns := range sv.watch.namespaces() {
		if ns.WWID != sv.oldWWID {
			others[ns.Dev.String()] = true
		}
	}
	for _, p := range paths {
		switch {
		case others[p]:
			t.Errorf("the front %s was loaded onto %s, the replacement disk's namespace (paths seen %v)", sv.front, p, paths)
		case p != sv.oldNS.Dev.String():
			t.Errorf("the front %s was loaded onto %s, which is not the staged namespace %s (paths seen %v)", sv.front, p, sv.oldNS.Dev, paths)
		}
	}
	var shown []string
	for _, ns := range sv.watch.namespaces() {
		shown = append(shown, fmt.Sprintf("%s %s %s", ns.Name, ns.Dev, ns.WWID))
	}
	t.Logf("the front %s listed %v while watched; namespace 1 of %s showed as %v", sv.front, paths, sv.nqn, shown)
}

// transitionsSince lists the volume's transitions at or after since.
func (a *healAgent) transitionsSince(volumeID string, since time.Time) []transition {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []transition
	for _, tr := range a.transitions {
		if tr.volumeID == volumeID && !tr.at.Before(since) {
			out = append(out, tr)
		}
	}
	return out
}

// statesSince names the states a volume entered since, with their devices.
func (a *healAgent) statesSince(volumeID string, since time.Time) []string {
	var out []string
	for _, tr := range a.transitionsSince(volumeID, since) {
		out = append(out, string(tr.to)+"@"+cmp.Or(tr.device, "-"))
	}
	return out
}

// readWWID is the namespace's wwid as /sys/block/<name>/wwid prints it.
func readWWID(name string) (string, error) {
	b, err := os.ReadFile(filepath.Join("/sys/block", name, "wwid"))
	return strings.TrimSpace(string(b)), err
}

func wwidOf(t *testing.T, name string) string {
	t.Helper()
	w, err := readWWID(name)
	if err != nil {
		t.Fatalf("reading the wwid of %s: %v", name, err)
	}
	return w
}

// nowShowing describes what namespace 1 of nqn is now, for messages.
func nowShowing(nqn string) string {
	ns, err := sysTree.ResolveNamespace(nqn, 1)
	if err != nil {
		return "none (" + err.Error() + ")"
	}
	w, err := readWWID(ns.Name)
	if err != nil {
		return fmt.Sprintf("%s (%s, wwid unreadable: %v)", ns.Name, ns.Dev, err)
	}
	return fmt.Sprintf("%s (%s, wwid %s)", ns.Name, ns.Dev, w)
}

var devNumber = regexp.MustCompile(`^[0-9]+:[0-9]+$`)

// tablePaths lists the device numbers in a front's table.
func tablePaths(ctx context.Context, name string) ([]string, error) {
	table, err := dm.Table(ctx, name)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, tg := range table {
		for _, f := range strings.Fields(tg.Params) {
			if devNumber.MatchString(f) {
				out = append(out, f)
			}
		}
	}
	return out, nil
}

// frontPathsNow is tablePaths for messages and the watch: nil when the
// table cannot be read.
func frontPathsNow(name string) []string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	paths, _ := tablePaths(ctx, name)
	return paths
}

func frontPaths(t *testing.T, name string) []string {
	t.Helper()
	paths, err := tablePaths(ctxFor(t, 10*time.Second), name)
	if err != nil {
		t.Fatalf("reading the table of %s: %v", name, err)
	}
	return paths
}

// fillMarker writes size bytes of replacementMarker into a new file and
// returns their sha256.
func fillMarker(t *testing.T, path string, size int64) [32]byte {
	t.Helper()
	chunk := bytes.Repeat(replacementMarker, (1<<20)/len(replacementMarker)+1)[:1<<20]
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.New()
	for left := size; left > 0; {
		b := chunk[:min(int64(len(chunk)), left)]
		if _, err := f.Write(b); err != nil {
			t.Fatalf("writing the marker into %s: %v", path, err)
		}
		sum.Write(b)
		left -= int64(len(b))
	}
	must(t, "closing "+path, errors.Join(f.Sync(), f.Close()))
	return [32]byte(sum.Sum(nil))
}

// ioTimeout bounds one I/O that must fail: a front that queues instead
// holds it for ever.
const ioTimeout = 30 * time.Second

// direct runs one O_DIRECT I/O of a block on path, on its own goroutine (a
// front that queues would hold it for ever), and reports whether it
// returned within ioTimeout. O_DIRECT keeps the page cache from answering.
func direct(path string, flags int, io func(fd int, buf []byte) error) (returned bool, err error) {
	done := make(chan error, 1)
	go func() {
		done <- func() error {
			fd, err := unix.Open(path, flags|unix.O_DIRECT|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer func() { _ = unix.Close(fd) }()
			buf, err := unix.Mmap(-1, 0, rawBlock, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE) // page-aligned, as O_DIRECT wants
			if err != nil {
				return err
			}
			defer func() { _ = unix.Munmap(buf) }()
			return io(fd, buf)
		}()
	}()
	select {
	case err := <-done:
		return true, err
	case <-time.After(ioTimeout):
		return false, nil
	}
}

// directRead reads the block at off of path; data is what a read that
// succeeded returned.
func directRead(path string, off int64) (data []byte, returned bool, err error) {
	returned, err = direct(path, unix.O_RDONLY, func(fd int, buf []byte) error {
		if _, err := unix.Pread(fd, buf, off); err != nil {
			return err
		}
		data = bytes.Clone(buf)
		return nil
	})
	return data, returned, err
}

// blockIOFails requires an O_DIRECT read and write of the published block
// device to fail with EIO: the front must neither serve the other disk nor
// hold the I/O.
func blockIOFails(t *testing.T, dev string) {
	t.Helper()
	data, ok, err := directRead(dev, 1<<20)
	mustFail(t, "an O_DIRECT read of "+dev, err, ok, data, true)
	ok, err = direct(dev, unix.O_WRONLY, func(fd int, buf []byte) error {
		fillBlock(buf, 2048)
		_, err := unix.Pwrite(fd, buf, 8<<20)
		return err
	})
	mustFail(t, "an O_DIRECT write to "+dev, err, ok, nil, true)
}

// fileIOFails requires reading the file written before the swap and
// writing a new one (fsync) to fail in the published filesystem. ext4 may
// answer with EROFS once it aborted its journal, so any error will do, but
// never success.
func fileIOFails(t *testing.T, dir string) {
	t.Helper()
	data, ok, err := directRead(filepath.Join(dir, "before"), 0)
	mustFail(t, "an O_DIRECT read in "+dir, err, ok, data, false)
	w := startWrite(filepath.Join(dir, "after-the-swap"), -1, newPayload(t, 64<<10).data)
	var returned bool
	select {
	case err, returned = <-w.done:
	case <-time.After(ioTimeout):
	}
	mustFail(t, "a synced write in "+dir, err, returned, nil, false)
}

// mustFail checks the outcome of an I/O after the volume failed: it must
// have returned, with an error (EIO if wantEIO), and never with the
// replacement disk's data.
func mustFail(t *testing.T, what string, err error, returned bool, data []byte, wantEIO bool) {
	t.Helper()
	switch {
	case !returned:
		t.Errorf("%s has not returned after %v: it is held instead of failing", what, ioTimeout)
	case err == nil && bytes.Contains(data, replacementMarker[:16]):
		t.Errorf("%s returned the replacement disk's marker: the consumer reads the other disk", what)
	case err == nil:
		t.Errorf("%s succeeded after the disk was replaced (read %q…)", what, data[:min(len(data), 16)])
	case wantEIO && !errors.Is(err, unix.EIO):
		t.Errorf("%s failed with %v, want EIO", what, err)
	default:
		t.Logf("%s failed: %v", what, err)
	}
}

// identityWatch samples, until it ends, the namespaces the kernel shows
// as namespace 1 of an NQN and the paths the volume's front leads to, so
// that a front reloaded onto the other disk for a moment is seen too.
type identityWatch struct {
	nqn, front string
	stop, done chan struct{}
	endOnce    sync.Once

	mu    sync.Mutex
	seen  []sysfs.Namespace // distinct by device number and wwid, in order
	paths []string          // distinct, in order
}

func watchIdentity(t *testing.T, nqn, front string) *identityWatch {
	w := &identityWatch{nqn: nqn, front: front, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			w.sample()
			select {
			case <-w.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(w.end)
	return w
}

func (w *identityWatch) sample() {
	ns, err := sysTree.ResolveNamespace(w.nqn, 1)
	if err == nil {
		if wwid, err := readWWID(ns.Name); err == nil {
			ns.WWID = wwid
		}
	}
	paths := frontPathsNow(w.front)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err == nil && !slices.ContainsFunc(w.seen, func(s sysfs.Namespace) bool { return s.Dev == ns.Dev && s.WWID == ns.WWID }) {
		w.seen = append(w.seen, ns)
	}
	for _, p := range paths {
		if !slices.Contains(w.paths, p) {
			w.paths = append(w.paths, p)
		}
	}
}

// end stops the sampling after a last sample.
func (w *identityWatch) end() {
	w.endOnce.Do(func() {
		close(w.stop)
		<-w.done
	})
}

func (w *identityWatch) namespaces() []sysfs.Namespace {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.seen)
}

func (w *identityWatch) frontPaths() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.paths)
}
