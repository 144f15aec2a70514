package agent_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"

	"github.com/rds-csi/rds-csi/agent"
	"github.com/rds-csi/rds-csi/agent/heal"
	"github.com/rds-csi/rds-csi/kernel/dm"
	"github.com/rds-csi/rds-csi/kernel/sysfs"
	"github.com/rds-csi/rds-csi/volume"
)

// fakeMapper is the device-mapper in memory: tables as written, path
// states, messages, and removal refused while a device is open.
type fakeMapper struct {
	mu      sync.Mutex
	devices map[string]*fakeFront
	next    uint32
	calls   []string
	// onCreate lets the fixture's sysfs show the new front as a holder,
	// and onRemove take that back, as the kernel does.
	onCreate, onRemove func(*fakeFront)
}

type fakeFront struct {
	dev      dm.Device
	table    []dm.Target
	failed   bool // the path is marked failed
	queueing bool
	open     bool
}

func newFakeMapper() *fakeMapper { return &fakeMapper{devices: map[string]*fakeFront{}} }

func (m *fakeMapper) record(s string) { m.calls = append(m.calls, s) }

func (m *fakeMapper) Lookup(name string) (dm.Device, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.devices[name]
	if !ok {
		return dm.Device{}, false, nil
	}
	return d.dev, true, nil
}

func (m *fakeMapper) Create(_ context.Context, name string, table []dm.Target) (dm.Device, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.record("create " + name)
	if _, ok := m.devices[name]; ok {
		return dm.Device{}, dm.ErrExist
	}
	d := &fakeFront{dev: dm.Device{Name: name, Major: 253, Minor: m.next, Live: true}, table: table, queueing: true}
	m.next++
	m.devices[name] = d
	if m.onCreate != nil {
		m.onCreate(d)
	}
	return d.dev, nil
}

// halfMade adds a device as a Create killed after DM_DEV_CREATE leaves it:
// no live table.
func (m *fakeMapper) halfMade(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.devices[name] = &fakeFront{dev: dm.Device{Name: name, Major: 253, Minor: m.next}}
	m.next++
}

func (m *fakeMapper) Activate(_ context.Context, name string, table []dm.Target) (dm.Device, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.record("activate " + name)
	d, ok := m.devices[name]
	switch {
	case !ok:
		return dm.Device{}, dm.ErrNotFound
	case d.dev.Live:
		return dm.Device{}, dm.ErrExist
	}
	d.table, d.queueing, d.dev.Live = table, true, true
	if m.onCreate != nil {
		m.onCreate(d)
	}
	return d.dev, nil
}

func (m *fakeMapper) Resume(_ context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.record("resume " + name)
	d, ok := m.devices[name]
	if !ok {
		return dm.ErrNotFound
	}
	d.dev.Suspended = false
	return nil
}

func (m *fakeMapper) Reload(_ context.Context, name string, table []dm.Target) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.record("reload " + name)
	d, ok := m.devices[name]
	if !ok {
		return dm.ErrNotFound
	}
	d.table, d.failed, d.queueing = table, false, true
	return nil
}

// Table prints the table back the way the kernel does: the features as
// they are now, not as they were loaded.
func (m *fakeMapper) Table(_ context.Context, name string) ([]dm.Target, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.devices[name]
	if !ok {
		return nil, dm.ErrNotFound
	}
	if !d.dev.Live {
		return nil, dm.ErrNoTable
	}
	out := append([]dm.Target(nil), d.table...)
	if !d.queueing {
		out[0].Params = strings.Replace(out[0].Params, "queue_if_no_path", "", 1)
	}
	return out, nil
}

func (m *fakeMapper) Status(_ context.Context, name string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.devices[name]
	if !ok {
		return nil, dm.ErrNotFound
	}
	if !d.dev.Live {
		return nil, dm.ErrNoTable
	}
	var path string
	for _, f := range strings.Fields(d.table[0].Params) {
		if strings.Contains(f, ":") {
			path = f
		}
	}
	state := "A"
	if d.failed {
		state = "F"
	}
	return []string{fmt.Sprintf("0 %d multipath 2 0 0 0 1 1 A 0 1 2 %s %s 0 0 1", d.table[0].Length, path, state)}, nil
}

func (m *fakeMapper) Message(_ context.Context, name, msg string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.record("message " + name + " " + msg)
	d, ok := m.devices[name]
	if !ok {
		return dm.ErrNotFound
	}
	switch msg {
	case "fail_if_no_path":
		d.queueing = false
	case "queue_if_no_path":
		d.queueing = true
	}
	return nil
}

func (m *fakeMapper) Remove(_ context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.record("remove " + name)
	d, ok := m.devices[name]
	if !ok {
		return nil
	}
	if d.open {
		return fmt.Errorf("remove %s: %w", name, unix.EBUSY)
	}
	delete(m.devices, name)
	if m.onRemove != nil {
		m.onRemove(d)
	}
	return nil
}

func (m *fakeMapper) pathFailed(name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.devices[name].failed
}

func (m *fakeMapper) front(name string) *fakeFront {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.devices[name]
}

// fakePaths is the namespace attacher: one namespace per volume, which a
// test can take away or renumber, and a log of disconnects.
type fakePaths struct {
	mu        sync.Mutex
	sys       string // a sysfs root with block/<name>[/mq]
	dir       string // where the namespaces' "device nodes" are
	ns        map[string]agent.Device
	detached  []string
	connected int
}

func newFakePaths(t *testing.T) *fakePaths {
	return &fakePaths{sys: t.TempDir(), dir: t.TempDir(), ns: map[string]agent.Device{}}
}

// appear makes the volume's namespace present as disk name with number
// dev; requestBased gives it the blk-mq directory.
func (p *fakePaths) appear(t *testing.T, nqn, name string, dev sysfs.DevT, requestBased bool) {
	t.Helper()
	disk := filepath.Join(p.sys, "block", name)
	for _, d := range []string{disk, filepath.Join(p.sys, "class", "block", name, "holders")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if requestBased {
		if err := os.MkdirAll(filepath.Join(disk, "mq"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	node := filepath.Join(p.dir, name)
	if err := os.WriteFile(node, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ns[nqn] = agent.Device{Path: node, Dev: dev}
}

// appearAs is appear (request-based) with the namespace's identity.
func (p *fakePaths) appearAs(t *testing.T, nqn, name string, dev sysfs.DevT, id sysfs.Identity) {
	t.Helper()
	p.appear(t, nqn, name, dev, true)
	p.mu.Lock()
	defer p.mu.Unlock()
	d := p.ns[nqn]
	d.Identity = id
	p.ns[nqn] = d
}

func (p *fakePaths) vanish(nqn string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.ns, nqn)
}

func (p *fakePaths) Attach(ctx context.Context, t agent.Target) (agent.Device, error) {
	p.mu.Lock()
	p.connected++
	p.mu.Unlock()
	return p.Find(ctx, t)
}

func (p *fakePaths) Find(_ context.Context, t agent.Target) (agent.Device, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	d, ok := p.ns[t.NQN]
	if !ok {
		return agent.Device{}, agent.ErrNotAttached
	}
	return d, nil
}

func (p *fakePaths) Detach(_ context.Context, t agent.Target) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.detached = append(p.detached, t.NQN)
	delete(p.ns, t.NQN)
	return nil
}

func (p *fakePaths) Refresh(context.Context, agent.Target, int64) error { return nil }

type multipathFixture struct {
	kubelet string
	mp      *agent.Multipath
	mapper  *fakeMapper
	paths   *fakePaths
	sizes   map[string]int64
	target  agent.Target
	name    string
}

func newMultipathFixture(t *testing.T) *multipathFixture {
	f := &multipathFixture{mapper: newFakeMapper(), paths: newFakePaths(t), sizes: map[string]int64{}}
	f.mp = &agent.Multipath{Paths: f.paths, Mapper: f.mapper, SysRoot: f.paths.sys, ProcRoot: t.TempDir(), DevDir: "/dev"}
	f.mp.SetSize(func(_ context.Context, path string) (int64, error) {
		size, ok := f.sizes[filepath.Base(path)]
		if !ok {
			return 0, fmt.Errorf("no size for %s", path)
		}
		return size, nil
	})
	f.mapper.onCreate = func(d *fakeFront) {
		for _, disk := range []string{"nvme1n1", "nvme0n1"} {
			dir := filepath.Join(f.paths.sys, "class", "block", disk, "holders")
			if _, err := os.Stat(dir); err == nil {
				_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("dm-%d", d.dev.Minor)), nil, 0o600)
			}
		}
	}
	f.mapper.onRemove = func(d *fakeFront) {
		for _, disk := range []string{"nvme1n1", "nvme0n1"} {
			_ = os.Remove(filepath.Join(f.paths.sys, "class", "block", disk, "holders", fmt.Sprintf("dm-%d", d.dev.Minor)))
		}
	}
	id := "pvc-front"
	f.target = agent.Target{VolumeID: id, Context: volume.Context{NQN: prefix + id}, NSID: 1}
	f.name = agent.MapperName(id)
	return f
}

func (f *multipathFixture) attach(t *testing.T) agent.Device {
	t.Helper()
	d, err := f.mp.Attach(context.Background(), f.target)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// stagedNode is a node over the fixture's front that has staged the
// fixture's volume as a raw block volume, in a kubelet-like directory
// (f.kubelet); it returns its staging path.
func (f *multipathFixture) stagedNode(t *testing.T, opts agent.Options) (*agent.Node, string) {
	t.Helper()
	opts.NodeID = "node-1"
	if err := opts.Validate(); err != nil {
		t.Fatal(err)
	}
	node := agent.New(opts, f.mp, agent.HostMounter{}, nil)
	f.kubelet = t.TempDir()
	staging := filepath.Join(f.kubelet, "plugins/kubernetes.io/csi/volumeDevices/staging", f.target.VolumeID)
	if err := os.MkdirAll(filepath.Dir(staging), 0o750); err != nil {
		t.Fatal(err)
	}
	attrs := map[string]string{"nqn": f.target.NQN, "address": "10.0.0.5", "port": "4420"}
	if _, err := node.NodeStageVolume(context.Background(), &csi.NodeStageVolumeRequest{VolumeId: f.target.VolumeID, StagingTargetPath: staging, VolumeCapability: blockCap(), VolumeContext: attrs}); err != nil {
		t.Fatal(err)
	}
	return node, staging
}

func (f *multipathFixture) calls() []string {
	f.mapper.mu.Lock()
	defer f.mapper.mu.Unlock()
	c := f.mapper.calls
	f.mapper.calls = nil
	return c
}

func TestAttachPutsAQueueingFrontOverTheNamespace(t *testing.T) {
	f := newMultipathFixture(t)
	ns := sysfs.DevT{Major: 259, Minor: 3}
	f.paths.appear(t, f.target.NQN, "nvme1n1", ns, true)
	f.sizes["nvme1n1"] = 64 << 20
	d := f.attach(t)
	if !d.Mapped || d.Backing != ns || d.Dev.Major != 253 || d.Path != fmt.Sprintf("/dev/dm-%d", d.Dev.Minor) {
		t.Fatalf("device %+v: want the front, over %s, at /dev/dm-<minor>", d, ns)
	}
	front := f.mapper.front(f.name)
	if front == nil {
		t.Fatalf("no front named %s", f.name)
	}
	want := dm.MultipathTable(64<<20/512, 259, 3, false)
	if len(front.table) != 1 || front.table[0] != want[0] {
		t.Fatalf("table %+v, want %+v", front.table, want)
	}
	if !strings.Contains(front.table[0].Params, "queue_if_no_path") {
		t.Fatal("the front does not queue without a path")
	}
}

func TestAFrontOverABioBasedNamespaceIsBioBased(t *testing.T) {
	f := newMultipathFixture(t)
	f.paths.appear(t, f.target.NQN, "nvme0n1", sysfs.DevT{Major: 259, Minor: 0}, false)
	f.sizes["nvme0n1"] = 8 << 20
	f.attach(t)
	if p := f.mapper.front(f.name).table[0].Params; !strings.Contains(p, "queue_mode bio") {
		t.Fatalf("table %q over a native-multipath head is not bio-based", p)
	}
}

func TestAReattachOntoARenumberedNamespaceReloadsTheSameFront(t *testing.T) {
	f := newMultipathFixture(t)
	f.paths.appear(t, f.target.NQN, "nvme1n1", sysfs.DevT{Major: 259, Minor: 3}, true)
	f.sizes["nvme1n1"] = 64 << 20
	first := f.attach(t)
	f.calls()

	f.paths.vanish(f.target.NQN)
	lost, err := f.mp.Find(context.Background(), f.target)
	if err != nil || !lost.Mapped || lost.Dev != first.Dev || lost.Backing != (sysfs.DevT{}) {
		t.Fatalf("Find without a namespace = %+v, %v; want the front with no backing", lost, err)
	}
	renumbered := sysfs.DevT{Major: 259, Minor: 7}
	f.paths.appear(t, f.target.NQN, "nvme2n1", renumbered, true)
	f.sizes["nvme2n1"] = 64 << 20
	again := f.attach(t)
	if again.Dev != first.Dev || again.Path != first.Path || again.Backing != renumbered {
		t.Fatalf("after the renumbering the volume is %+v; was %+v", again, first)
	}
	if c := f.calls(); len(c) != 1 || c[0] != "reload "+f.name {
		t.Fatalf("device-mapper calls %v; want one reload of the existing front", c)
	}
	if p := f.mapper.front(f.name).table[0].Params; !strings.Contains(p, " 259:7 ") {
		t.Fatalf("the reloaded table %q does not lead to 259:7", p)
	}
}

func TestAttachLeavesACurrentFrontAloneAndRepairsAStaleOne(t *testing.T) {
	for _, tc := range []struct {
		name   string
		spoil  func(f *fakeFront, sizes map[string]int64)
		reload bool
	}{
		{"current", func(*fakeFront, map[string]int64) {}, false},
		{"path failed", func(d *fakeFront, _ map[string]int64) { d.failed = true }, true},
		{"queueing stopped", func(d *fakeFront, _ map[string]int64) { d.queueing = false }, true},
		{"namespace grew", func(_ *fakeFront, s map[string]int64) { s["nvme1n1"] = 128 << 20 }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newMultipathFixture(t)
			f.paths.appear(t, f.target.NQN, "nvme1n1", sysfs.DevT{Major: 259, Minor: 3}, true)
			f.sizes["nvme1n1"] = 64 << 20
			f.attach(t)
			f.calls()
			tc.spoil(f.mapper.front(f.name), f.sizes)
			f.attach(t)
			var want []string
			if tc.reload {
				want = []string{"reload " + f.name}
			}
			if c := f.calls(); !slices.Equal(c, want) {
				t.Fatalf("device-mapper calls %v, want %v", c, want)
			}
			if l := f.mapper.front(f.name).table[0].Length; l != uint64(f.sizes["nvme1n1"]/512) {
				t.Fatalf("front is %d sectors, namespace %d bytes", l, f.sizes["nvme1n1"])
			}
		})
	}
}

func TestDetachRemovesTheFrontBeforeDisconnecting(t *testing.T) {
	f := newMultipathFixture(t)
	f.paths.appear(t, f.target.NQN, "nvme1n1", sysfs.DevT{Major: 259, Minor: 3}, true)
	f.sizes["nvme1n1"] = 64 << 20
	f.attach(t)
	if err := f.mp.Detach(context.Background(), f.target); err != nil {
		t.Fatal(err)
	}
	if f.mapper.front(f.name) != nil {
		t.Fatal("the front outlived the detach")
	}
	if len(f.paths.detached) != 1 {
		t.Fatalf("disconnects %v; want the volume's", f.paths.detached)
	}
}

func TestDetachNeverDisconnectsWhileTheFrontOrTheNamespaceIsInUse(t *testing.T) {
	t.Run("front open", func(t *testing.T) {
		f := newMultipathFixture(t)
		f.paths.appear(t, f.target.NQN, "nvme1n1", sysfs.DevT{Major: 259, Minor: 3}, true)
		f.sizes["nvme1n1"] = 64 << 20
		f.attach(t)
		f.mapper.front(f.name).open = true
		if err := f.mp.Detach(context.Background(), f.target); err == nil || !errors.Is(err, unix.EBUSY) {
			t.Fatalf("detach of an open front: %v", err)
		}
		if len(f.paths.detached) != 0 || f.mapper.front(f.name) == nil {
			t.Fatal("an open front was removed or its namespace disconnected")
		}
	})
	t.Run("namespace held by another device", func(t *testing.T) {
		f := newMultipathFixture(t)
		f.paths.appear(t, f.target.NQN, "nvme1n1", sysfs.DevT{Major: 259, Minor: 3}, true)
		f.sizes["nvme1n1"] = 64 << 20
		f.attach(t)
		if err := os.WriteFile(filepath.Join(f.paths.sys, "class", "block", "nvme1n1", "holders", "md0"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		err := f.mp.Detach(context.Background(), f.target)
		if err == nil || !strings.Contains(err.Error(), "md0") {
			t.Fatalf("detach with a foreign holder: %v", err)
		}
		if len(f.paths.detached) != 0 || f.mapper.front(f.name) == nil {
			t.Fatal("a namespace held by another device was disconnected, or its front removed")
		}
	})
}

func TestDetachNeverDisconnectsANamespaceAProcessHoldsOpen(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a device node")
	}
	f := newMultipathFixture(t)
	f.paths.appear(t, f.target.NQN, "nvme1n1", sysfs.DevT{Major: 259, Minor: 3}, true)
	f.sizes["nvme1n1"] = 64 << 20
	f.attach(t)
	// A process whose descriptor leads to a node of 259:3, as /proc shows
	// a workload that opened the namespace beside the front.
	node := filepath.Join(t.TempDir(), "nvme1n1")
	if err := unix.Mknod(node, unix.S_IFBLK|0o600, int(unix.Mkdev(259, 3))); err != nil {
		t.Fatal(err)
	}
	proc := filepath.Join(f.mp.ProcRoot, "4242")
	if err := os.MkdirAll(filepath.Join(proc, "fd"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(proc, "comm"), []byte("qemu\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(node, filepath.Join(proc, "fd", "7")); err != nil {
		t.Fatal(err)
	}
	err := f.mp.Detach(context.Background(), f.target)
	if err == nil || !strings.Contains(err.Error(), "process 4242 (qemu)") {
		t.Fatalf("detach while a process holds the namespace: %v", err)
	}
	if len(f.paths.detached) != 0 || f.mapper.front(f.name) == nil {
		t.Fatal("a namespace a process holds was disconnected, or its front removed")
	}
}

func TestFindWithoutAFrontIsTheNamespace(t *testing.T) {
	f := newMultipathFixture(t)
	ns := sysfs.DevT{Major: 259, Minor: 3}
	f.paths.appear(t, f.target.NQN, "nvme1n1", ns, true)
	d, err := f.mp.Find(context.Background(), f.target)
	if err != nil || d.Mapped || d.Dev != ns {
		t.Fatalf("Find = %+v, %v; want the bare namespace", d, err)
	}
	f.paths.vanish(f.target.NQN)
	if _, err := f.mp.Find(context.Background(), f.target); !errors.Is(err, agent.ErrNotAttached) {
		t.Fatalf("Find of nothing = %v", err)
	}
}

func TestStopQueueingTellsTheFrontToFailWithoutAPath(t *testing.T) {
	f := newMultipathFixture(t)
	f.paths.appear(t, f.target.NQN, "nvme1n1", sysfs.DevT{Major: 259, Minor: 3}, true)
	f.sizes["nvme1n1"] = 64 << 20
	f.attach(t)
	f.calls()
	if err := f.mp.StopQueueing(context.Background(), f.target); err != nil {
		t.Fatal(err)
	}
	if c := f.calls(); len(c) != 1 || c[0] != "message "+f.name+" fail_if_no_path" {
		t.Fatalf("calls %v", c)
	}
	if err := f.mp.StopQueueing(context.Background(), agent.Target{VolumeID: "pvc-none"}); err != nil {
		t.Fatalf("a volume without a front: %v", err)
	}
}

func TestStartQueueingTurnsAStoppedFrontBackToQueueing(t *testing.T) {
	f := newMultipathFixture(t)
	f.paths.appear(t, f.target.NQN, "nvme1n1", sysfs.DevT{Major: 259, Minor: 3}, true)
	f.sizes["nvme1n1"] = 64 << 20
	f.attach(t)
	if err := f.mp.StopQueueing(context.Background(), f.target); err != nil {
		t.Fatal(err)
	}
	f.calls()
	if err := f.mp.StartQueueing(context.Background(), f.target); err != nil {
		t.Fatal(err)
	}
	if c := f.calls(); len(c) != 1 || c[0] != "message "+f.name+" queue_if_no_path" {
		t.Fatalf("calls %v", c)
	}
	if !f.mapper.front(f.name).queueing {
		t.Fatal("the front does not queue again")
	}
	if err := f.mp.StartQueueing(context.Background(), agent.Target{VolumeID: "pvc-none"}); err != nil {
		t.Fatalf("a volume without a front: %v", err)
	}
}

func TestMapperNamesAreValidAndDistinct(t *testing.T) {
	seen := map[string]string{}
	for _, id := range []string{"pvc-1", "pvc_1", "pvc.1", "PVC-1", "a.b", "a_b", "a-b", "a-b_" + agent.MapperName("a.b")[len("rds-csi-a-b_"):]} {
		name := agent.MapperName(id)
		if !strings.HasPrefix(name, "rds-csi-") || strings.ContainsAny(name, "./ ") || len(name) > 127 {
			t.Errorf("MapperName(%q) = %q", id, name)
		}
		if other, ok := seen[name]; ok {
			t.Errorf("%q and %q share the front name %q", id, other, name)
		}
		seen[name] = id
	}
	if got := agent.MapperName("pvc-1"); got != "rds-csi-pvc-1" {
		t.Errorf("a plain ID is not kept readable: %q", got)
	}
}

func TestAVolumeLiveAgainAfterAReconnectGetsItsFailedFrontPathBack(t *testing.T) {
	f := newMultipathFixture(t)
	f.paths.appear(t, f.target.NQN, "nvme1n1", sysfs.DevT{Major: 259, Minor: 3}, true)
	f.sizes["nvme1n1"] = 64 << 20
	opts := agent.Options{NodeID: "node-1"}
	if err := opts.Validate(); err != nil {
		t.Fatal(err)
	}
	n := agent.New(opts, f.mp, agent.HostMounter{}, nil)
	staging := filepath.Join(t.TempDir(), "staging", f.target.VolumeID)
	vc := volume.Context{NQN: f.target.NQN, Address: "127.0.0.1", Port: 4420, Connect: volume.DefaultConnectOptions(), MigrationTimeout: volume.DefaultMigrationTimeout}
	if err := os.MkdirAll(filepath.Dir(staging), 0o750); err != nil {
		t.Fatal(err)
	}
	if _, err := n.NodeStageVolume(context.Background(), &csi.NodeStageVolumeRequest{VolumeId: f.target.VolumeID, StagingTargetPath: staging, VolumeCapability: blockCap(), VolumeContext: vc.Map()}); err != nil {
		t.Fatal(err)
	}
	f.calls()
	f.mapper.front(f.name).failed = true

	// A transition that is not a reconnect ending changes nothing.
	n.Notify(heal.Transition{Health: heal.Health{VolumeID: f.target.VolumeID, State: heal.StateLive}, From: heal.StateUnknown})
	n.Notify(heal.Transition{Health: heal.Health{VolumeID: f.target.VolumeID, State: heal.StateReconnecting}, From: heal.StateLive})
	time.Sleep(100 * time.Millisecond)
	if c := f.calls(); len(c) != 0 {
		t.Fatalf("device-mapper calls %v on transitions that are not a reconnect ending", c)
	}
	n.Notify(heal.Transition{Health: heal.Health{VolumeID: f.target.VolumeID, State: heal.StateLive}, From: heal.StateReconnecting})
	deadline := time.Now().Add(10 * time.Second)
	for f.mapper.pathFailed(f.name) {
		if time.Now().After(deadline) {
			t.Fatal("the front's failed path was not reinstated after the reconnect")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
