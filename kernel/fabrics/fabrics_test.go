package fabrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rds-csi/rds-csi/kernel/sysfs"
	"github.com/rds-csi/rds-csi/kernel/sysfs/sysfstest"
)

// step is what the fake kernel does for one opened handle.
type step struct {
	openErr  error
	writeErr syscall.Errno // 0: the write succeeds
	readErr  error
	reply    string
	block    chan struct{} // the write waits until this is closed
}

// fakeDevice stands for /dev/nvme-fabrics: each open takes the next step.
type fakeDevice struct {
	mu     sync.Mutex
	steps  []step
	writes []string
	opens  int
	closes int
}

func (d *fakeDevice) open(path string) (io.ReadWriteCloser, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.steps) == 0 {
		return nil, fmt.Errorf("fake: unexpected open of %s", path)
	}
	s := d.steps[0]
	d.steps = d.steps[1:]
	if s.openErr != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: s.openErr}
	}
	d.opens++
	return &fakeHandle{dev: d, step: s, path: path}, nil
}

func (d *fakeDevice) counts() (opens, closes int, writes []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.opens, d.closes, append([]string(nil), d.writes...)
}

type fakeHandle struct {
	dev    *fakeDevice
	step   step
	path   string
	reader io.Reader
}

func (h *fakeHandle) Write(p []byte) (int, error) {
	h.dev.mu.Lock()
	h.dev.writes = append(h.dev.writes, string(p))
	h.dev.mu.Unlock()
	if h.step.block != nil {
		<-h.step.block
	}
	if h.step.writeErr != 0 {
		return 0, &os.PathError{Op: "write", Path: h.path, Err: h.step.writeErr}
	}
	return len(p), nil
}

func (h *fakeHandle) Read(p []byte) (int, error) {
	if h.step.readErr != nil {
		return 0, &os.PathError{Op: "read", Path: h.path, Err: h.step.readErr}
	}
	if h.reader == nil {
		h.reader = strings.NewReader(h.step.reply)
	}
	return h.reader.Read(p)
}

func (h *fakeHandle) Close() error {
	h.dev.mu.Lock()
	defer h.dev.mu.Unlock()
	h.dev.closes++
	return nil
}

// existing adds a controller that the test's options would duplicate.
func existing(mod func(*sysfstest.Controller)) func(t *testing.T, root string) {
	return func(t *testing.T, root string) {
		c := sysfstest.Controller{Name: "nvme4", SubsysNQN: testNQN, TrAddr: "10.0.0.5", TrSvcID: "4420",
			HostNQN: testHostNQN, HostID: testHostID, CntlID: 9}
		if mod != nil {
			mod(&c)
		}
		sysfstest.AddController(t, root, c)
	}
}

func TestConnect(t *testing.T) {
	tests := []struct {
		name       string
		steps      []step
		sysfs      func(t *testing.T, root string)
		modify     func(*Options)
		want       Connected
		wantErr    error // checked with errors.Is
		anyErr     bool
		wantWrites int
	}{
		{
			name:       "a successful connect returns the new controller from the reply",
			steps:      []step{{reply: "instance=3,cntlid=7\n"}},
			want:       Connected{Controller: "nvme3", Instance: 3, CntlID: 7},
			wantWrites: 1,
		},
		{
			name:       "a reply without a newline is accepted",
			steps:      []step{{reply: "instance=0,cntlid=1"}},
			want:       Connected{Controller: "nvme0", Instance: 0, CntlID: 1},
			wantWrites: 1,
		},
		{
			name:       "EALREADY with the matching controller in sysfs returns it as already connected",
			steps:      []step{{writeErr: syscall.EALREADY}},
			sysfs:      existing(nil),
			want:       Connected{Controller: "nvme4", Instance: 4, CntlID: 9, Already: true},
			wantWrites: 1,
		},
		{
			name:       "EALREADY matches a controller that is reconnecting",
			steps:      []step{{writeErr: syscall.EALREADY}},
			sysfs:      existing(func(c *sysfstest.Controller) { c.State = "connecting" }),
			want:       Connected{Controller: "nvme4", Instance: 4, CntlID: 9, Already: true},
			wantWrites: 1,
		},
		{
			name:       "EALREADY matches an IPv6 target spelled differently in sysfs",
			steps:      []step{{writeErr: syscall.EALREADY}},
			modify:     func(o *Options) { o.TrAddr = "fd00::5" },
			sysfs:      existing(func(c *sysfstest.Controller) { c.TrAddr = "FD00:0:0::5" }),
			want:       Connected{Controller: "nvme4", Instance: 4, CntlID: 9, Already: true},
			wantWrites: 1,
		},
		{
			name:       "EALREADY without any controller in sysfs fails closed",
			steps:      []step{{writeErr: syscall.EALREADY}},
			wantErr:    syscall.EALREADY,
			wantWrites: 1,
		},
		{
			name:       "EALREADY with only another host's controller fails closed",
			steps:      []step{{writeErr: syscall.EALREADY}},
			sysfs:      existing(func(c *sysfstest.Controller) { c.HostNQN = "nqn.2014-08.org.nvmexpress:uuid:other" }),
			wantErr:    syscall.EALREADY,
			wantWrites: 1,
		},
		{
			name:       "EALREADY with only a controller at another port fails closed",
			steps:      []step{{writeErr: syscall.EALREADY}},
			sysfs:      existing(func(c *sysfstest.Controller) { c.TrSvcID = "4421" }),
			wantErr:    syscall.EALREADY,
			wantWrites: 1,
		},
		{
			name:       "EALREADY with only a controller bound to a source address we did not ask for fails closed",
			steps:      []step{{writeErr: syscall.EALREADY}},
			sysfs:      existing(func(c *sysfstest.Controller) { c.Address = "traddr=10.0.0.5,trsvcid=4420,host_traddr=10.0.0.9" }),
			wantErr:    syscall.EALREADY,
			wantWrites: 1,
		},
		{
			name:       "EALREADY with only a controller being deleted fails closed",
			steps:      []step{{writeErr: syscall.EALREADY}},
			sysfs:      existing(func(c *sysfstest.Controller) { c.State = "deleting" }),
			wantErr:    syscall.EALREADY,
			wantWrites: 1,
		},
		{
			name:  "EALREADY with two matching controllers fails closed",
			steps: []step{{writeErr: syscall.EALREADY}},
			sysfs: func(t *testing.T, root string) {
				existing(nil)(t, root)
				existing(func(c *sysfstest.Controller) { c.Name = "nvme5" })(t, root)
			},
			wantErr:    sysfs.ErrAmbiguous,
			wantWrites: 1,
		},
		{
			name:       "an interrupted write is retried whole and then succeeds",
			steps:      []step{{writeErr: syscall.EINTR}, {reply: "instance=2,cntlid=1\n"}},
			want:       Connected{Controller: "nvme2", Instance: 2, CntlID: 1},
			wantWrites: 2,
		},
		{
			name:       "a write interrupted every time gives up after three attempts",
			steps:      []step{{writeErr: syscall.EINTR}, {writeErr: syscall.EINTR}, {writeErr: syscall.EINTR}},
			wantErr:    syscall.EINTR,
			wantWrites: 3,
		},
		{
			name:       "a refused connection keeps its errno",
			steps:      []step{{writeErr: syscall.ECONNREFUSED}},
			wantErr:    syscall.ECONNREFUSED,
			wantWrites: 1,
		},
		{
			name:       "an option the kernel does not know keeps its errno",
			steps:      []step{{writeErr: syscall.EINVAL}},
			wantErr:    syscall.EINVAL,
			wantWrites: 1,
		},
		{
			name:    "a missing fabrics device is an error",
			steps:   []step{{openErr: syscall.ENOENT}},
			wantErr: fs.ErrNotExist,
		},
		{
			name:       "a garbage reply is an error",
			steps:      []step{{reply: "hello\n"}},
			anyErr:     true,
			wantWrites: 1,
		},
		{
			name:       "the option list of an unused handle is not taken for a reply",
			steps:      []step{{reply: "instance=-1,cntlid=-1,transport=%s,traddr=%s\n"}},
			anyErr:     true,
			wantWrites: 1,
		},
		{
			name:       "an empty reply is an error",
			steps:      []step{{reply: ""}},
			wantErr:    io.EOF,
			wantWrites: 1,
		},
		{
			name:       "a failed read of the reply is an error",
			steps:      []step{{readErr: syscall.EIO}},
			wantErr:    syscall.EIO,
			wantWrites: 1,
		},
		{
			name:    "invalid options are refused before the device is opened",
			modify:  func(o *Options) { o.NQN = testNQN + ",duplicate_connect" },
			wantErr: ErrInvalidOptions,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			if tc.sysfs != nil {
				tc.sysfs(t, root)
			}
			dev := &fakeDevice{steps: tc.steps}
			f := &Fabrics{Sysfs: sysfs.Tree{Root: root}, Open: dev.open}
			o := validOptions()
			if tc.modify != nil {
				tc.modify(&o)
			}
			got, err := f.Connect(context.Background(), o)
			switch {
			case tc.anyErr:
				if err == nil {
					t.Fatalf("Connect = %+v, want an error", got)
				}
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Connect = %+v, %v; want error %v", got, err, tc.wantErr)
				}
			case err != nil:
				t.Fatalf("Connect: %v", err)
			case got != tc.want:
				t.Fatalf("Connect = %+v, want %+v", got, tc.want)
			}
			if err != nil && got != (Connected{}) {
				t.Fatalf("Connect failed (%v) but returned %+v", err, got)
			}
			opens, closes, writes := dev.counts()
			if opens != closes {
				t.Fatalf("%d handles opened, %d closed", opens, closes)
			}
			if len(writes) != tc.wantWrites {
				t.Fatalf("%d writes, want %d", len(writes), tc.wantWrites)
			}
			for _, w := range writes {
				if w != o.String() {
					t.Fatalf("wrote %q, want the whole option string %q", w, o.String())
				}
			}
		})
	}
}

func TestConnectReturnsAtTheDeadlineWhileTheKernelWriteBlocks(t *testing.T) {
	release := make(chan struct{})
	dev := &fakeDevice{steps: []step{{block: release, reply: "instance=1,cntlid=1\n"}}}
	f := &Fabrics{Sysfs: sysfs.Tree{Root: t.TempDir()}, Open: dev.open}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()

	start := time.Now()
	_, err := f.Connect(ctx, validOptions())
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Connect error = %v, want context.DeadlineExceeded", err)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Fatalf("Connect returned after %v, not at its deadline", elapsed)
	}
	if _, closes, _ := dev.counts(); closes != 0 {
		t.Fatal("the handle was closed while the kernel write was still running")
	}

	close(release)
	waitFor(t, func() bool { _, closes, _ := dev.counts(); return closes == 1 })
}

func TestConnectWithAnEndedContextWritesNothing(t *testing.T) {
	dev := &fakeDevice{steps: []step{{reply: "instance=1,cntlid=1\n"}}}
	f := &Fabrics{Sysfs: sysfs.Tree{Root: t.TempDir()}, Open: dev.open}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.Connect(ctx, validOptions()); !errors.Is(err, context.Canceled) {
		t.Fatalf("Connect error = %v, want context.Canceled", err)
	}
	if opens, _, _ := dev.counts(); opens != 0 {
		t.Fatalf("the device was opened %d times", opens)
	}
}

func TestDisconnect(t *testing.T) {
	tests := []struct {
		name       string
		controller string
		setup      func(t *testing.T, root string)
		wantErr    error
		anyErr     bool
		wantDelete bool
	}{
		{
			name:       "a controller is deleted by writing 1 to delete_controller",
			controller: "nvme4",
			setup:      existing(nil),
			wantDelete: true,
		},
		{
			name:       "a controller that is already gone is reported as not existing",
			controller: "nvme7",
			setup:      existing(nil),
			wantErr:    fs.ErrNotExist,
		},
		{
			name:       "a write the kernel refuses is an error, not a success",
			controller: "nvme4",
			setup: func(t *testing.T, root string) {
				existing(nil)(t, root)
				// A directory in place of the attribute makes the write fail.
				attr := filepath.Join(root, "class/nvme/nvme4/delete_controller")
				if err := os.Remove(attr); err != nil {
					t.Fatal(err)
				}
				if err := os.Mkdir(attr, 0o755); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: syscall.EISDIR,
		},
		{name: "an empty controller name is refused", controller: "", setup: existing(nil), anyErr: true},
		{name: "a path instead of a controller name is refused", controller: "../ctl/nvme4", setup: existing(nil), anyErr: true},
		{name: "a namespace name is refused", controller: "nvme4n1", setup: existing(nil), anyErr: true},
		{name: "a name with a trailing newline is refused", controller: "nvme4\n", setup: existing(nil), anyErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			tc.setup(t, root)
			f := &Fabrics{Sysfs: sysfs.Tree{Root: root}}
			err := f.Disconnect(context.Background(), tc.controller)
			switch {
			case tc.anyErr:
				if err == nil {
					t.Fatal("Disconnect succeeded, want an error")
				}
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Disconnect error = %v, want %v", err, tc.wantErr)
				}
			case err != nil:
				t.Fatalf("Disconnect: %v", err)
			}
			if tc.wantDelete {
				if got := sysfstest.ReadAttr(t, root, "class/nvme/nvme4", "delete_controller"); got != "1" {
					t.Fatalf("delete_controller = %q, want 1", got)
				}
			} else if fi, err := os.Stat(filepath.Join(root, "class/nvme/nvme4/delete_controller")); err == nil && !fi.IsDir() {
				if got := sysfstest.ReadAttr(t, root, "class/nvme/nvme4", "delete_controller"); got != "" {
					t.Fatalf("delete_controller = %q, want it untouched", got)
				}
			}
		})
	}
}

func TestDisconnectReturnsAtTheDeadlineWhileTheKernelWriteBlocks(t *testing.T) {
	root := t.TempDir()
	existing(nil)(t, root)
	// Opening a FIFO for writing blocks until a reader comes: a stand-in for
	// a delete that waits on the kernel.
	attr := filepath.Join(root, "class/nvme/nvme4/delete_controller")
	if err := os.Remove(attr); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(attr, 0o600); err != nil {
		t.Fatal(err)
	}
	f := &Fabrics{Sysfs: sysfs.Tree{Root: root}}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()

	start := time.Now()
	if err := f.Disconnect(ctx, "nvme4"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Disconnect error = %v, want context.DeadlineExceeded", err)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Fatalf("Disconnect returned after %v, not at its deadline", elapsed)
	}

	// Let the abandoned write finish so that the test leaves nothing behind.
	r, err := os.Open(attr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = r.Close() }()
	if b, err := io.ReadAll(r); err != nil || string(b) != "1" {
		t.Fatalf("the abandoned write wrote %q, %v; want 1", b, err)
	}
}

func TestSupportedOptions(t *testing.T) {
	tests := []struct {
		name    string
		step    step
		want    []string
		wantErr error
		anyErr  bool
	}{
		{
			name: "the token list of a fresh handle yields the option names",
			step: step{reply: "instance=-1,cntlid=-1,transport=%s,traddr=%s,trsvcid=%s,nqn=%s,queue_size=%d," +
				"nr_io_queues=%d,reconnect_delay=%d,ctrl_loss_tmo=%d,keep_alive_tmo=%d,hostnqn=%s,host_traddr=%s," +
				"host_iface=%s,hostid=%s,duplicate_connect,disable_sqflow,hdr_digest,data_digest,nr_write_queues=%d," +
				"nr_poll_queues=%d,tos=%d,fast_io_fail_tmo=%d,discovery\n"},
			want: []string{"transport", "traddr", "trsvcid", "nqn", "queue_size", "nr_io_queues", "reconnect_delay",
				"ctrl_loss_tmo", "keep_alive_tmo", "hostnqn", "host_traddr", "host_iface", "hostid", "duplicate_connect",
				"disable_sqflow", "hdr_digest", "data_digest", "nr_write_queues", "nr_poll_queues", "tos",
				"fast_io_fail_tmo", "discovery"},
		},
		{name: "an old kernel that refuses the read gives its errno", step: step{readErr: syscall.EINVAL}, wantErr: syscall.EINVAL},
		{name: "a connect reply is not an option list", step: step{reply: "instance=1,cntlid=1\n"}, anyErr: true},
		{name: "an empty token is an error", step: step{reply: "instance=-1,cntlid=-1,,transport=%s\n"}, anyErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dev := &fakeDevice{steps: []step{tc.step}}
			f := &Fabrics{Open: dev.open}
			got, err := f.SupportedOptions(context.Background())
			switch {
			case tc.anyErr:
				if err == nil {
					t.Fatalf("SupportedOptions = %v, want an error", got)
				}
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("SupportedOptions error = %v, want %v", err, tc.wantErr)
				}
			case err != nil:
				t.Fatalf("SupportedOptions: %v", err)
			case strings.Join(got, " ") != strings.Join(tc.want, " "):
				t.Fatalf("SupportedOptions =\n %v\nwant\n %v", got, tc.want)
			}
			if _, _, writes := dev.counts(); len(writes) != 0 {
				t.Fatalf("SupportedOptions wrote %q", writes)
			}
		})
	}
}

func TestParseConnectReply(t *testing.T) {
	tests := []struct {
		in               string
		instance, cntlid int
		wantErr          bool
	}{
		{in: "instance=0,cntlid=1\n", instance: 0, cntlid: 1},
		{in: "instance=12,cntlid=65535\n", instance: 12, cntlid: 65535},
		{in: "instance=12,cntlid=65536\n", wantErr: true},
		{in: "instance=-1,cntlid=-1\n", wantErr: true},
		{in: "instance=01,cntlid=1\n", wantErr: true},
		{in: "instance=+1,cntlid=1\n", wantErr: true},
		{in: "cntlid=1,instance=1\n", wantErr: true},
		{in: "instance=1,cntlid=1,extra=2\n", wantErr: true},
		{in: "instance=1,cntlid=1\n\n", wantErr: true},
		{in: "instance=1, cntlid=1\n", wantErr: true},
		{in: "instance=1\n", wantErr: true},
		{in: "instance=99999999999,cntlid=1\n", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("reply %q", tc.in), func(t *testing.T) {
			i, c, err := parseConnectReply(tc.in)
			if (err != nil) != tc.wantErr || (err == nil && (i != tc.instance || c != tc.cntlid)) {
				t.Fatalf("parseConnectReply = %d, %d, %v; want %d, %d, error %v", i, c, err, tc.instance, tc.cntlid, tc.wantErr)
			}
		})
	}
}

// FuzzParseConnectReply checks that the parser never panics and accepts only
// the canonical form: whatever it accepts prints back to the same text.
func FuzzParseConnectReply(f *testing.F) {
	for _, s := range []string{"instance=0,cntlid=1\n", "instance=3,cntlid=7", "instance=-1,cntlid=-1,transport=%s\n",
		"instance=01,cntlid=1", "instance=2147483647,cntlid=65535\n", "instance=,cntlid=\n", ",", "\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		instance, cntlid, err := parseConnectReply(s)
		if err != nil {
			return
		}
		if instance < 0 || cntlid < 0 || cntlid > 0xffff {
			t.Fatalf("parseConnectReply(%q) = %d, %d", s, instance, cntlid)
		}
		if back := fmt.Sprintf("instance=%d,cntlid=%d", instance, cntlid); back != strings.TrimSuffix(s, "\n") {
			t.Fatalf("parseConnectReply(%q) accepted a non-canonical reply (prints back as %q)", s, back)
		}
	})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
