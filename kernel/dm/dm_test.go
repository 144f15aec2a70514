package dm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeKernel answers dm ioctls from memory, the way drivers/md/dm-ioctl.c
// does for the commands this package sends, and records each request.
type fakeKernel struct {
	mu       sync.Mutex
	devices  map[string]*fakeDevice
	nextMin  uint32
	calls    []fakeCall
	failLoad error
	// statusNeeds makes DM_TABLE_STATUS answer "buffer full" to smaller
	// buffers.
	statusNeeds int
	// block, when set, makes every ioctl wait for it to be closed.
	block chan struct{}
	// version is the interface version DM_VERSION answers.
	version [3]uint32
}

type fakeDevice struct {
	minor              uint32
	active, inactive   []Target
	suspended          bool
	messages           []string
	lastSuspendNoFlush bool
}

type fakeCall struct {
	cmd   uint32
	flags uint32
	name  string
}

func newFakeKernel(t *testing.T) *fakeKernel {
	t.Helper()
	k := &fakeKernel{devices: map[string]*fakeDevice{}, nextMin: 0, version: [3]uint32{4, 48, 0}}
	old := sys
	sys = system{control: "/dev/null", nodeDir: filepath.Join(t.TempDir(), "mapper"), ioctl: k.ioctl}
	t.Cleanup(func() { sys = old })
	return k
}

func (k *fakeKernel) ioctl(_ int, req uint32, buf []byte) error {
	if k.block != nil {
		<-k.block
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if req>>8&0xff != ioctlType || req>>16&0x3fff != headerSize || req>>30 != 3 {
		return unix.ENOTTY
	}
	h, err := parseHeader(buf)
	if err != nil || h.version[0] != 4 || int(h.dataSize) != len(buf) || h.dataStart != headerSize {
		return unix.EINVAL
	}
	cmd := req & 0xff
	k.calls = append(k.calls, fakeCall{cmd: cmd, flags: h.flags, name: h.name})
	if cmd == cmdVersion {
		h.version = k.version
		h.put(buf)
		return nil
	}
	d := k.devices[h.name]
	if d == nil && cmd != cmdDevCreate {
		return unix.ENXIO
	}
	h.flags &^= flagBufferFull
	switch cmd {
	case cmdDevCreate:
		if d != nil {
			return unix.EBUSY
		}
		d = &fakeDevice{minor: k.nextMin, suspended: true}
		k.nextMin++
		k.devices[h.name] = d
	case cmdDevRemove:
		delete(k.devices, h.name)
	case cmdDevStatus:
	case cmdTableLoad:
		if k.failLoad != nil {
			return k.failLoad
		}
		table, err := decodeLoad(buf, h.targetCount)
		if err != nil {
			return unix.EINVAL
		}
		d.inactive = table
	case cmdDevSuspend:
		if h.flags&flagSuspend != 0 {
			d.suspended = true
			d.lastSuspendNoFlush = h.flags&flagNoFlush != 0
			break
		}
		if d.inactive != nil {
			if !d.suspended {
				d.lastSuspendNoFlush = h.flags&flagNoFlush != 0 // do_resume's own suspend
			}
			d.active, d.inactive = d.inactive, nil
		}
		d.suspended = false
	case cmdTableStatus:
		var out []Target
		for _, t := range d.active {
			p := "status of " + t.Params
			if h.flags&flagStatusTable != 0 {
				p = t.Params
			}
			out = append(out, Target{Start: t.Start, Length: t.Length, Type: t.Type, Params: p})
		}
		answer := statusAnswer(out)
		if len(buf) < k.statusNeeds || headerSize+len(answer) > len(buf) {
			h.flags |= flagBufferFull
			break
		}
		copy(buf[headerSize:], answer)
		h.dataSize = uint32(headerSize + len(answer))
		h.targetCount = uint32(len(out))
	case cmdTargetMsg:
		if binary.NativeEndian.Uint64(buf[headerSize:]) != 0 {
			return unix.EINVAL
		}
		d.messages = append(d.messages, cString(buf[headerSize+8:]))
	default:
		return unix.ENOTTY
	}
	h.flags &^= flagActivePresent | flagSuspend
	if d.active != nil && cmd != cmdDevRemove {
		h.flags |= flagActivePresent
	}
	if d.suspended && cmd != cmdDevRemove {
		h.flags |= flagSuspend
	}
	h.dev = encodeDev(253, d.minor)
	h.put(buf)
	return nil
}

// decodeLoad reads a DM_TABLE_LOAD payload the way populate_table does:
// the first spec at data_start, each next counted from the current spec.
func decodeLoad(buf []byte, count uint32) ([]Target, error) {
	var out []Target
	off := headerSize
	for range count {
		if off+specSize > len(buf) {
			return nil, errShort
		}
		rest := buf[off+specSize:]
		end := strings.IndexByte(string(rest), 0)
		if end < 0 {
			return nil, errShort
		}
		out = append(out, Target{
			Start:  binary.NativeEndian.Uint64(buf[off+offSpecStart:]),
			Length: binary.NativeEndian.Uint64(buf[off+offSpecLength:]),
			Type:   cString(buf[off+offSpecType : off+offSpecType+typeLen]),
			Params: string(rest[:end]),
		})
		off += int(binary.NativeEndian.Uint32(buf[off+offSpecNext:]))
	}
	return out, nil
}

func (k *fakeKernel) device(name string) *fakeDevice {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.devices[name]
}

func (k *fakeKernel) takeCalls() []fakeCall {
	k.mu.Lock()
	defer k.mu.Unlock()
	c := k.calls
	k.calls = nil
	return c
}

var table1 = MultipathTable(2048, 259, 1, true)

func TestCreateLoadsResumesAndMakesTheNode(t *testing.T) {
	k := newFakeKernel(t)
	d, err := Create(t.Context(), "vol-a", table1)
	if err != nil {
		t.Fatal(err)
	}
	if d != (Device{Name: "vol-a", Major: 253, Minor: 0, Live: true}) {
		t.Errorf("device %+v", d)
	}
	fd := k.device("vol-a")
	if fd.suspended || len(fd.active) != 1 || fd.active[0] != table1[0] {
		t.Errorf("kernel state %+v", fd)
	}
	var st unix.Stat_t
	if err := unix.Stat(d.Path(), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK || st.Rdev != unix.Mkdev(253, 0) || st.Mode&0o777 != 0o600 {
		t.Errorf("node %s: %+v, %v", d.Path(), st, err)
	}
	got, ok, err := Lookup("vol-a")
	if err != nil || !ok || got != d {
		t.Errorf("Lookup: %+v %v %v", got, ok, err)
	}
}

func TestCreateOfATakenNameFailsWithErrExist(t *testing.T) {
	newFakeKernel(t)
	if _, err := Create(t.Context(), "vol-a", table1); err != nil {
		t.Fatal(err)
	}
	_, err := Create(t.Context(), "vol-a", table1)
	if !errors.Is(err, ErrExist) || !errors.Is(err, unix.EBUSY) {
		t.Errorf("second create: %v", err)
	}
}

func TestACreateWhoseLoadFailsLeavesNoDevice(t *testing.T) {
	k := newFakeKernel(t)
	k.failLoad = unix.EINVAL
	if _, err := Create(t.Context(), "vol-a", table1); !errors.Is(err, unix.EINVAL) {
		t.Fatalf("create: %v", err)
	}
	if k.device("vol-a") != nil {
		t.Error("the half-made device is still there")
	}
	if _, err := os.Lstat(filepath.Join(sys.nodeDir, "vol-a")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("node: %v", err)
	}
}

// A Create killed between DM_DEV_CREATE and the resume leaves a device
// without an active table: Lookup tells it (Live false), Table says so
// instead of misreading the answer, and Activate completes it where Reload
// is for live devices only.
func TestADeviceLeftWithoutATableIsToldAndActivated(t *testing.T) {
	for _, loaded := range []bool{false, true} {
		t.Run(fmt.Sprintf("inactive table loaded %v", loaded), func(t *testing.T) {
			k := newFakeKernel(t)
			if _, err := call(t.Context(), "create", cmdDevCreate, newBuffer("vol-a", 0, 0, nil, 0)); err != nil {
				t.Fatal(err)
			}
			if loaded {
				payload, err := tablePayload(table1)
				if err != nil {
					t.Fatal(err)
				}
				if err := load(t.Context(), "vol-a", table1, payload); err != nil {
					t.Fatal(err)
				}
			}
			d, ok, err := Lookup("vol-a")
			if err != nil || !ok || d.Live {
				t.Fatalf("Lookup: %+v %v %v, want a device that is not live", d, ok, err)
			}
			if _, err := Table(t.Context(), "vol-a"); !errors.Is(err, ErrNoTable) {
				t.Errorf("Table: %v, want ErrNoTable", err)
			}
			d, err = Activate(t.Context(), "vol-a", table1)
			if err != nil || !d.Live {
				t.Fatalf("Activate: %+v %v", d, err)
			}
			if fd := k.device("vol-a"); fd.suspended || len(fd.active) != 1 || fd.active[0] != table1[0] {
				t.Errorf("kernel state %+v", fd)
			}
			if got, err := Table(t.Context(), "vol-a"); err != nil || len(got) != 1 {
				t.Errorf("Table after Activate: %v %v", got, err)
			}
			var st unix.Stat_t
			if err := unix.Stat(d.Path(), &st); err != nil || st.Rdev != unix.Mkdev(253, 0) {
				t.Errorf("node %s: %v", d.Path(), err)
			}
			if _, err := Activate(t.Context(), "vol-a", table1); !errors.Is(err, ErrExist) {
				t.Errorf("Activate of a live device: %v, want ErrExist", err)
			}
			if _, err := Activate(t.Context(), "vol-b", table1); !errors.Is(err, ErrNotFound) {
				t.Errorf("Activate of a missing device: %v, want ErrNotFound", err)
			}
		})
	}
}

// The safety claim behind Reload: a flushing suspend makes dm-multipath
// stop queueing and fail every queued I/O, so no suspend it causes, its own
// or the one the kernel does inside a resume, may flush.
func TestReloadNeverSuspendsWithAFlush(t *testing.T) {
	k := newFakeKernel(t)
	if _, err := Create(t.Context(), "vol-a", table1); err != nil {
		t.Fatal(err)
	}
	k.takeCalls()
	table2 := MultipathTable(2048, 259, 7, true)
	if err := Reload(t.Context(), "vol-a", table2); err != nil {
		t.Fatal(err)
	}
	calls := k.takeCalls()
	want := []fakeCall{
		{cmdDevSuspend, flagSuspend | flagNoFlush, "vol-a"},
		{cmdTableLoad, 0, "vol-a"},
		{cmdDevSuspend, flagNoFlush, "vol-a"},
	}
	if len(calls) != len(want) {
		t.Fatalf("calls %+v, want %+v", calls, want)
	}
	for i := range want {
		if calls[i] != want[i] {
			t.Errorf("call %d: %+v, want %+v", i, calls[i], want[i])
		}
	}
	d := k.device("vol-a")
	if d.suspended || !d.lastSuspendNoFlush || d.active[0] != table2[0] {
		t.Errorf("kernel state %+v", d)
	}
}

func TestAFailedReloadResumesTheOldTable(t *testing.T) {
	k := newFakeKernel(t)
	if _, err := Create(t.Context(), "vol-a", table1); err != nil {
		t.Fatal(err)
	}
	k.failLoad = unix.EINVAL
	if err := Reload(t.Context(), "vol-a", MultipathTable(2048, 259, 7, true)); !errors.Is(err, unix.EINVAL) {
		t.Fatalf("reload: %v", err)
	}
	d := k.device("vol-a")
	if d.suspended || d.active[0] != table1[0] {
		t.Errorf("kernel state %+v: want resumed on the old table", d)
	}
}

func TestReloadOfAMissingDeviceIsErrNotFound(t *testing.T) {
	newFakeKernel(t)
	err := Reload(t.Context(), "nothing", table1)
	if !errors.Is(err, ErrNotFound) || !errors.Is(err, unix.ENXIO) {
		t.Errorf("reload: %v", err)
	}
}

func TestMessageReachesTheTargetAtSectorZero(t *testing.T) {
	k := newFakeKernel(t)
	if _, err := Create(t.Context(), "vol-a", table1); err != nil {
		t.Fatal(err)
	}
	if err := Message(t.Context(), "vol-a", "fail_if_no_path"); err != nil {
		t.Fatal(err)
	}
	if m := k.device("vol-a").messages; len(m) != 1 || m[0] != "fail_if_no_path" {
		t.Errorf("messages %q", m)
	}
	if err := Message(t.Context(), "vol-a", "bad\x00msg"); !errors.Is(err, ErrInvalid) {
		t.Errorf("a message with a NUL: %v", err)
	}
}

func TestStatusAndTableGrowTheBufferUntilTheAnswerFits(t *testing.T) {
	k := newFakeKernel(t)
	if _, err := Create(t.Context(), "vol-a", table1); err != nil {
		t.Fatal(err)
	}
	k.statusNeeds = 64 << 10
	lines, err := Status(t.Context(), "vol-a")
	if err != nil {
		t.Fatal(err)
	}
	if want := "0 2048 multipath status of " + table1[0].Params; len(lines) != 1 || lines[0] != want {
		t.Errorf("status %q, want %q", lines, want)
	}
	table, err := Table(t.Context(), "vol-a")
	if err != nil || len(table) != 1 || table[0] != table1[0] {
		t.Errorf("table %+v, %v", table, err)
	}
	var sizes []uint32
	for _, c := range k.takeCalls() {
		if c.cmd == cmdTableStatus {
			sizes = append(sizes, c.flags&flagStatusTable)
		}
	}
	if len(sizes) != 6 { // 16, 32, 64 KiB, twice
		t.Errorf("%d status calls, want 6", len(sizes))
	}
	k.statusNeeds = 4 << 20
	if _, err := Status(t.Context(), "vol-a"); err == nil {
		t.Error("an answer larger than maxAnswer was accepted")
	}
}

func TestRemoveDeletesTheDeviceAndItsNodeAndIsIdempotent(t *testing.T) {
	k := newFakeKernel(t)
	d, err := Create(t.Context(), "vol-a", table1)
	if err != nil {
		t.Fatal(err)
	}
	if err := Remove(t.Context(), "vol-a"); err != nil {
		t.Fatal(err)
	}
	if k.device("vol-a") != nil {
		t.Error("device still there")
	}
	if _, err := os.Lstat(d.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("node: %v", err)
	}
	if err := Remove(t.Context(), "vol-a"); err != nil {
		t.Errorf("removing again: %v", err)
	}
	if _, ok, err := Lookup("vol-a"); ok || err != nil {
		t.Errorf("Lookup after remove: %v %v", ok, err)
	}
}

func TestRemoveLeavesAnotherDevicesNodeAlone(t *testing.T) {
	newFakeKernel(t)
	if _, err := Create(t.Context(), "vol-a", table1); err != nil {
		t.Fatal(err)
	}
	// The name's node now leads elsewhere (someone else's doing).
	path := filepath.Join(sys.nodeDir, "vol-a")
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(path, unix.S_IFBLK|0o600, int(unix.Mkdev(8, 0))); err != nil {
		t.Fatal(err)
	}
	if err := Remove(t.Context(), "vol-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("the node of 8:0 was removed: %v", err)
	}
}

func TestCreateReplacesAStaleNode(t *testing.T) {
	newFakeKernel(t)
	path := filepath.Join(sys.nodeDir, "vol-a")
	if err := os.MkdirAll(sys.nodeDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../dm-99", path); err != nil {
		t.Fatal(err)
	}
	d, err := Create(t.Context(), "vol-a", table1)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK || st.Rdev != unix.Mkdev(d.Major, d.Minor) {
		t.Errorf("node %+v, %v", st, err)
	}
}

func TestCallsReturnAtTheDeadlineWhileTheIoctlBlocks(t *testing.T) {
	k := newFakeKernel(t)
	k.block = make(chan struct{})
	defer close(k.block)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := Message(ctx, "vol-a", "fail_if_no_path")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("returned after %v", d)
	}
}

func TestArgumentsAreCheckedBeforeAnythingIsSent(t *testing.T) {
	k := newFakeKernel(t)
	long := strings.Repeat("a", 128)
	for name, call := range map[string]func() error{
		"empty name":         func() error { _, err := Create(t.Context(), "", table1); return err },
		"128-character name": func() error { _, err := Create(t.Context(), long, table1); return err },
		"name with a slash":  func() error { _, err := Create(t.Context(), "a/b", table1); return err },
		"name with a dot":    func() error { return Remove(t.Context(), "..") },
		"name with a space":  func() error { _, err := Status(t.Context(), "a b"); return err },
		"empty table":        func() error { return Reload(t.Context(), "v", nil) },
		"zero-length target": func() error { return Reload(t.Context(), "v", []Target{{Length: 0, Type: "zero"}}) },
		"uppercase type":     func() error { return Reload(t.Context(), "v", []Target{{Length: 1, Type: "Linear"}}) },
		"16-character type":  func() error { return Reload(t.Context(), "v", []Target{{Length: 1, Type: strings.Repeat("a", 16)}}) },
		"params with a NUL": func() error {
			return Reload(t.Context(), "v", []Target{{Length: 1, Type: "linear", Params: "7:0\x000"}})
		},
		"params with newline": func() error {
			return Reload(t.Context(), "v", []Target{{Length: 1, Type: "linear", Params: "7:0 0\n"}})
		},
		"params too long": func() error {
			return Reload(t.Context(), "v", []Target{{Length: 1, Type: "linear", Params: strings.Repeat("1", 4097)}})
		},
		"message too long":     func() error { return Message(t.Context(), "v", strings.Repeat("m", 1025)) },
		"lookup of a bad name": func() error { _, _, err := Lookup("x y"); return err },
	} {
		if err := call(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if c := k.takeCalls(); len(c) != 0 {
		t.Errorf("requests sent: %+v", c)
	}
	if _, err := Create(t.Context(), strings.Repeat("a", 127), []Target{{Length: 1, Type: "abcdefghijk-mn_"}}); errors.Is(err, ErrInvalid) {
		t.Errorf("a valid 127-character name and type refused: %v", err)
	}
}

func TestMultipathTableIsTheMeasuredOne(t *testing.T) {
	for _, c := range []struct {
		bio  bool
		want string
	}{
		{true, "0 209715200 multipath 3 queue_if_no_path queue_mode bio 0 1 1 service-time 0 1 2 259:3 1 1"},
		{false, "0 209715200 multipath 1 queue_if_no_path 0 1 1 service-time 0 1 2 259:3 1 1"},
	} {
		tbl := MultipathTable(209715200, 259, 3, c.bio)
		if len(tbl) != 1 || tbl[0].String() != c.want {
			t.Errorf("bio=%v: %+v, want %q", c.bio, tbl, c.want)
		}
		if _, err := tablePayload(tbl); err != nil {
			t.Errorf("bio=%v: the table does not pass validation: %v", c.bio, err)
		}
	}
}

func TestAvailableAcceptsTheInterfaceThisPackageSpeaksOnly(t *testing.T) {
	k := newFakeKernel(t)
	if err := Available(context.Background()); err != nil {
		t.Fatalf("interface 4.48.0: %v", err)
	}
	k.version = [3]uint32{5, 0, 0}
	if err := Available(context.Background()); err == nil {
		t.Fatal("interface 5.0.0 was accepted")
	}
	sys.control = filepath.Join(t.TempDir(), "no-control")
	if err := Available(context.Background()); err == nil {
		t.Fatal("a missing control device was accepted")
	}
}

// A Reload killed after its suspend leaves the device suspended: Lookup
// tells it, and Resume releases it on the table it has.
func TestADeviceLeftSuspendedIsToldAndResumed(t *testing.T) {
	k := newFakeKernel(t)
	if _, err := Create(t.Context(), "vol-a", table1); err != nil {
		t.Fatal(err)
	}
	if _, err := call(t.Context(), "suspend", cmdDevSuspend, newBuffer("vol-a", flagSuspend|flagNoFlush, 0, nil, 0)); err != nil {
		t.Fatal(err)
	}
	d, ok, err := Lookup("vol-a")
	if err != nil || !ok || !d.Suspended || !d.Live {
		t.Fatalf("Lookup: %+v %v %v, want a live, suspended device", d, ok, err)
	}
	if err := Resume(t.Context(), "vol-a"); err != nil {
		t.Fatal(err)
	}
	if fd := k.device("vol-a"); fd.suspended || len(fd.active) != 1 || fd.active[0] != table1[0] {
		t.Fatalf("kernel state %+v", fd)
	}
	if d, _, _ := Lookup("vol-a"); d.Suspended {
		t.Fatal("still suspended")
	}
}
