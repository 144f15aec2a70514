package nvmet

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/rds-csi/rds-csi/test/rdssim"
)

const (
	nqnA  = "nqn.2000-02.com.mikrotik:pvc-a"
	nqnB  = "nqn.2000-02.com.mikrotik:pvc-b"
	nqnC  = "nqn.2000-02.com.mikrotik:pvc-c"
	host1 = "nqn.2014-08.org.nvmexpress:uuid:node-1"
	host2 = "nqn.2014-08.org.nvmexpress:uuid:node-2"
)

func newExporter(t *testing.T, k kernelFeatures) (*Exporter, *fakeConfigfs) {
	t.Helper()
	f := newFakeConfigfs(k)
	e, err := New(Config{Root: fakeRoot, FS: f})
	if err != nil {
		t.Fatal(err)
	}
	return e, f
}

// disk returns a disk whose backing file exists in dir.
func disk(t *testing.T, dir, nqn string, port int, hosts string) rdssim.Disk {
	t.Helper()
	file := filepath.Join(dir, strings.ReplaceAll(nqn, ":", "_")+".img")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return rdssim.Disk{Slot: nqn, BackingFile: file, Size: 1 << 30, Port: port, NQN: nqn, AllowHostName: hosts}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func sameLines(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s:\ngot:\n  %s\nwant:\n  %s", what, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// subsysTree is what an exported subsystem looks like in fakeConfigfs.tree.
func subsysTree(d rdssim.Disk, anyHost string, hosts ...string) []string {
	s := "subsystems/" + d.NQN
	out := []string{
		s + "/",
		s + "/attr_serial=" + stableHex(d.NQN, 10),
		s + "/namespaces/1/",
		s + "/namespaces/1/device_path=" + d.BackingFile,
		s + "/namespaces/1/device_uuid=" + stableUUID(d.NQN),
		s + "/namespaces/1/buffered_io=1",
		s + "/namespaces/1/enable=1",
	}
	if anyHost == "1" {
		out = append(out, s+"/attr_allow_any_host=1")
	}
	for _, h := range hosts {
		out = append(out, s+"/allowed_hosts/"+h+" -> hosts/"+h)
	}
	return out
}

func portTree(port string, nqns ...string) []string {
	p := "ports/" + port
	out := []string{p + "/", p + "/addr_trtype=tcp", p + "/addr_adrfam=ipv4", p + "/addr_traddr=127.0.0.1", p + "/addr_trsvcid=" + port}
	for _, n := range nqns {
		out = append(out, p+"/subsystems/"+n+" -> subsystems/"+n)
	}
	return out
}

func hostTree(hosts ...string) []string {
	var out []string
	for _, h := range hosts {
		out = append(out, "hosts/"+h+"/")
	}
	return out
}

func sorted(parts ...[]string) []string {
	all := slices.Concat(parts...)
	slices.Sort(all)
	return all
}

func TestExportWritesInTheOrderTheKernelNeeds(t *testing.T) {
	e, f := newExporter(t, kernelFeatures{})
	d := disk(t, t.TempDir(), nqnA, 4420, host1)
	must(t, e.Export(d))
	s, ns := "subsystems/"+nqnA, "subsystems/"+nqnA+"/namespaces/1"
	sameLines(t, "operations", f.takeOps(), []string{
		"mkdir " + s,
		"write " + s + "/attr_serial=" + stableHex(nqnA, 10),
		"mkdir hosts/" + host1,
		"link " + s + "/allowed_hosts/" + host1 + " -> hosts/" + host1,
		"mkdir " + ns,
		"write " + ns + "/device_path=" + d.BackingFile,
		"write " + ns + "/device_uuid=" + stableUUID(nqnA),
		"write " + ns + "/buffered_io=1",
		"write " + ns + "/enable=1",
		"mkdir ports/4420",
		"write ports/4420/addr_trtype=tcp",
		"write ports/4420/addr_adrfam=ipv4",
		"write ports/4420/addr_traddr=127.0.0.1",
		"write ports/4420/addr_trsvcid=4420",
		"link ports/4420/subsystems/" + nqnA + " -> subsystems/" + nqnA,
	})
}

func TestExportCreatesExactlyTheExpectedTree(t *testing.T) {
	dir := t.TempDir()
	a := disk(t, dir, nqnA, 4420, "")
	b := disk(t, dir, nqnB, 4421, host1)
	c := disk(t, dir, nqnC, 4420, host1+","+host2+","+host1)
	tests := []struct {
		name   string
		kernel kernelFeatures
		disks  []rdssim.Disk
		want   []string
	}{
		{"a disk without allowed hosts is open to any host", kernelFeatures{}, []rdssim.Disk{a},
			sorted(subsysTree(a, "1"), portTree("4420", nqnA))},
		{"a disk with one allowed host lets only it in", kernelFeatures{}, []rdssim.Disk{b},
			sorted(subsysTree(b, "0", host1), portTree("4421", nqnB), hostTree(host1))},
		{"a comma-separated list allows each host once", kernelFeatures{}, []rdssim.Disk{c},
			sorted(subsysTree(c, "0", host1, host2), portTree("4420", nqnC), hostTree(host1, host2))},
		{"two disks on one port share it", kernelFeatures{}, []rdssim.Disk{a, c},
			sorted(subsysTree(a, "1"), subsysTree(c, "0", host1, host2), portTree("4420", nqnA, nqnC), hostTree(host1, host2))},
		{"disks on two ports get two ports and share host entries", kernelFeatures{}, []rdssim.Disk{a, b, c},
			sorted(subsysTree(a, "1"), subsysTree(b, "0", host1), subsysTree(c, "0", host1, host2),
				portTree("4420", nqnA, nqnC), portTree("4421", nqnB), hostTree(host1, host2))},
		{"a kernel without buffered_io still exports", kernelFeatures{noBufferedIO: true}, []rdssim.Disk{a},
			sorted(slices.DeleteFunc(subsysTree(a, "1"), func(s string) bool { return strings.HasSuffix(s, "buffered_io=1") }),
				portTree("4420", nqnA))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, f := newExporter(t, tt.kernel)
			for _, d := range tt.disks {
				must(t, e.Export(d))
			}
			sameLines(t, "tree", f.tree(), tt.want)
		})
	}
}

func TestExportingAgainChangesNothing(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []rdssim.Disk{disk(t, dir, nqnA, 4420, ""), disk(t, dir, nqnB, 4420, host1+","+host2)} {
		t.Run(d.NQN, func(t *testing.T) {
			e, f := newExporter(t, kernelFeatures{})
			must(t, e.Export(d))
			want := f.tree()
			f.takeOps()
			must(t, e.Export(d))
			sameLines(t, "operations of the second export", f.takeOps(), nil)
			sameLines(t, "tree", f.tree(), want)
		})
	}
}

func TestExportAdoptsWhatAnEarlierRunLeft(t *testing.T) {
	dir := t.TempDir()
	a := disk(t, dir, nqnA, 4420, host1)
	f := newFakeConfigfs(kernelFeatures{})
	crashed, err := New(Config{Root: fakeRoot, FS: f})
	must(t, err)
	must(t, crashed.Export(a))
	want := f.tree()
	f.takeOps()

	e, err := New(Config{Root: fakeRoot, FS: f})
	must(t, err)
	must(t, e.Export(a))
	sameLines(t, "operations", f.takeOps(), nil)
	must(t, e.Close())
	sameLines(t, "tree after close", f.tree(), nil)
	if len(want) == 0 {
		t.Fatal("nothing was exported")
	}
}

func TestExportRefusesAPortWithAnotherAddress(t *testing.T) {
	f := newFakeConfigfs(kernelFeatures{})
	other, err := New(Config{Root: fakeRoot, FS: f, Addr: "10.0.0.1"})
	must(t, err)
	dir := t.TempDir()
	must(t, other.Export(disk(t, dir, nqnA, 4420, "")))
	e, err := New(Config{Root: fakeRoot, FS: f})
	must(t, err)
	f.takeOps()
	err = e.Export(disk(t, dir, nqnB, 4420, ""))
	if err == nil || !strings.Contains(err.Error(), "addr_traddr") {
		t.Fatalf("export onto a port listening elsewhere: %v", err)
	}
	if _, err := f.ReadDir(fakeRoot + "/subsystems/" + nqnB); err == nil {
		t.Error("the failed export left its subsystem behind")
	}
}

func TestAllowedHostsFollowTheDisk(t *testing.T) {
	dir := t.TempDir()
	steps := []struct {
		hosts     string
		anyHost   string
		linked    []string
		hostItems []string
	}{
		{"", "1", nil, nil},
		{host1, "0", []string{host1}, []string{host1}},
		{host1 + "," + host2, "0", []string{host1, host2}, []string{host1, host2}},
		{host2, "0", []string{host2}, []string{host2}},
		{host1, "0", []string{host1}, []string{host1}},
		{"", "1", nil, nil},
	}
	e, f := newExporter(t, kernelFeatures{})
	d := disk(t, dir, nqnA, 4420, "")
	for _, s := range steps {
		d.AllowHostName = s.hosts
		must(t, e.Export(d))
		sameLines(t, "tree after allowing "+s.hosts, f.tree(),
			sorted(subsysTree(d, s.anyHost, s.linked...), portTree("4420", nqnA), hostTree(s.hostItems...)))
	}
}

func TestAHostStaysWhileAnotherDiskAllowsIt(t *testing.T) {
	dir := t.TempDir()
	e, f := newExporter(t, kernelFeatures{})
	a, b := disk(t, dir, nqnA, 4420, host1), disk(t, dir, nqnB, 4420, host1)
	must(t, e.Export(a))
	must(t, e.Export(b))
	a.AllowHostName = ""
	must(t, e.Export(a))
	sameLines(t, "tree", f.tree(), sorted(subsysTree(a, "1"), subsysTree(b, "0", host1), portTree("4420", nqnA, nqnB), hostTree(host1)))
	must(t, e.Unexport(b))
	sameLines(t, "tree", f.tree(), sorted(subsysTree(a, "1"), portTree("4420", nqnA)))
}

func TestUnexportRemovesEverythingInOrder(t *testing.T) {
	dir := t.TempDir()
	e, f := newExporter(t, kernelFeatures{})
	a, b := disk(t, dir, nqnA, 4420, host1+","+host2), disk(t, dir, nqnB, 4420, host2)
	must(t, e.Export(a))
	must(t, e.Export(b))
	f.takeOps()

	must(t, e.Unexport(a))
	s := "subsystems/" + nqnA
	sameLines(t, "operations", f.takeOps(), []string{
		"unlink ports/4420/subsystems/" + nqnA,
		"unlink " + s + "/allowed_hosts/" + host1,
		"unlink " + s + "/allowed_hosts/" + host2,
		"write " + s + "/namespaces/1/enable=0",
		"rmdir " + s + "/namespaces/1",
		"rmdir " + s,
		"rmdir hosts/" + host1,
	})
	sameLines(t, "tree with the other disk left", f.tree(), sorted(subsysTree(b, "0", host2), portTree("4420", nqnB), hostTree(host2)))

	must(t, e.Unexport(a))
	sameLines(t, "operations of a second unexport", f.takeOps(), nil)

	must(t, e.Unexport(b))
	sameLines(t, "tree", f.tree(), nil)
}

func TestResizeTellsInitiators(t *testing.T) {
	ns := "subsystems/" + nqnA + "/namespaces/1"
	tests := []struct {
		name   string
		kernel kernelFeatures
		want   []string
	}{
		{"a kernel with revalidate_size revalidates in place", kernelFeatures{}, []string{"write " + ns + "/revalidate_size=1"}},
		{"an older kernel re-enables the namespace", kernelFeatures{noRevalidate: true}, []string{"write " + ns + "/enable=0", "write " + ns + "/enable=1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, f := newExporter(t, tt.kernel)
			d := disk(t, t.TempDir(), nqnA, 4420, "")
			must(t, e.Export(d))
			f.takeOps()
			must(t, e.Resize(d))
			sameLines(t, "operations", f.takeOps(), tt.want)
		})
	}
	t.Run("a disk that is not exported is an error", func(t *testing.T) {
		e, f := newExporter(t, kernelFeatures{})
		if err := e.Resize(disk(t, t.TempDir(), nqnA, 4420, "")); err == nil {
			t.Error("no error")
		}
		sameLines(t, "operations", f.takeOps(), nil)
	})
}

func TestPortDownAndUp(t *testing.T) {
	dir := t.TempDir()
	e, f := newExporter(t, kernelFeatures{})
	a, b, c := disk(t, dir, nqnA, 4420, ""), disk(t, dir, nqnB, 4420, ""), disk(t, dir, nqnC, 4421, "")
	for _, d := range []rdssim.Disk{a, b, c} {
		must(t, e.Export(d))
	}
	up := f.tree()
	must(t, e.PortDown(4420))
	sameLines(t, "tree with 4420 down", f.tree(),
		sorted(subsysTree(a, "1"), subsysTree(b, "1"), subsysTree(c, "1"), portTree("4420"), portTree("4421", nqnC)))

	// Nothing the simulator does relinks a disk on a port that is down.
	a.AllowHostName = host1
	must(t, e.Export(a))
	d := disk(t, dir, "nqn.2000-02.com.mikrotik:pvc-d", 4420, "")
	must(t, e.Export(d))
	if links, _ := f.ReadDir(fakeRoot + "/ports/4420/subsystems"); len(links) != 0 {
		t.Errorf("port 4420 is down but links %v", links)
	}
	must(t, e.PortDown(4420))
	// Unexporting elsewhere must not take the empty, downed port away.
	must(t, e.Unexport(c))

	must(t, e.PortUp(4420))
	must(t, e.Unexport(d))
	a.AllowHostName = ""
	must(t, e.Export(a))
	must(t, e.Export(c))
	sameLines(t, "tree after the port came back", f.tree(), up)

	if err := e.PortDown(4500); err == nil {
		t.Error("PortDown of a port with no disks: no error")
	}
	if err := e.PortUp(0); err == nil {
		t.Error("PortUp(0): no error")
	}
}

func TestWithdrawAndRestore(t *testing.T) {
	dir := t.TempDir()
	e, f := newExporter(t, kernelFeatures{})
	a, b := disk(t, dir, nqnA, 4420, ""), disk(t, dir, nqnB, 4420, "")
	must(t, e.Export(a))
	must(t, e.Export(b))
	up := f.tree()
	f.takeOps()

	must(t, e.Withdraw(nqnA))
	sameLines(t, "operations", f.takeOps(), []string{"unlink ports/4420/subsystems/" + nqnA})
	must(t, e.Export(a))
	sameLines(t, "operations of exporting a withdrawn disk", f.takeOps(), nil)

	// A withdrawn disk stays withdrawn through a port outage.
	must(t, e.PortDown(4420))
	must(t, e.PortUp(4420))
	sameLines(t, "tree", f.tree(), sorted(subsysTree(a, "1"), subsysTree(b, "1"), portTree("4420", nqnB)))
	f.takeOps()

	must(t, e.Restore(nqnA))
	sameLines(t, "operations", f.takeOps(), []string{"link ports/4420/subsystems/" + nqnA + " -> subsystems/" + nqnA})
	sameLines(t, "tree", f.tree(), up)

	if err := e.Withdraw(nqnC); err == nil {
		t.Error("Withdraw of a subsystem that is not exported: no error")
	}
}

func TestCloseLeavesTheRootEmptyAndAReExportWorks(t *testing.T) {
	dir := t.TempDir()
	e, f := newExporter(t, kernelFeatures{})
	disks := []rdssim.Disk{disk(t, dir, nqnA, 4420, host1), disk(t, dir, nqnB, 4420, host1+","+host2), disk(t, dir, nqnC, 4421, "")}
	for _, d := range disks {
		must(t, e.Export(d))
	}
	want := f.tree()
	must(t, e.Withdraw(nqnB))
	must(t, e.PortDown(4421))

	must(t, e.Close())
	for _, dir := range []string{"subsystems", "ports", "hosts"} {
		names, err := f.ReadDir(filepath.Join(fakeRoot, dir))
		must(t, err)
		if len(names) != 0 {
			t.Errorf("%s after Close: %v", dir, names)
		}
	}
	must(t, e.Close())

	rebooted, err := New(Config{Root: fakeRoot, FS: f})
	must(t, err)
	for _, d := range disks {
		must(t, rebooted.Export(d))
	}
	sameLines(t, "tree after the reboot", f.tree(), want)
}

func TestInvalidValuesAreRefusedBeforeAnyWrite(t *testing.T) {
	dir := t.TempDir()
	good := disk(t, dir, nqnA, 4420, host1)
	sub := filepath.Join(dir, "sub")
	must(t, os.Mkdir(sub, 0o755))
	tests := []struct {
		name   string
		change func(*rdssim.Disk)
	}{
		{"an empty NQN", func(d *rdssim.Disk) { d.NQN = "" }},
		{"an NQN with a slash", func(d *rdssim.Disk) { d.NQN = "nqn.x/../../ports" }},
		{"an NQN of dots", func(d *rdssim.Disk) { d.NQN = ".." }},
		{"an NQN with a space", func(d *rdssim.Disk) { d.NQN = "nqn.x y" }},
		{"an NQN with a newline", func(d *rdssim.Disk) { d.NQN = "nqn.x\ny" }},
		{"an NQN of 224 bytes", func(d *rdssim.Disk) { d.NQN = "n" + strings.Repeat("q", 223) }},
		{"port 0", func(d *rdssim.Disk) { d.Port = 0 }},
		{"port 65536", func(d *rdssim.Disk) { d.Port = 65536 }},
		{"a relative backing file", func(d *rdssim.Disk) { d.BackingFile = "x.img" }},
		{"an unclean backing file", func(d *rdssim.Disk) { d.BackingFile = dir + "/sub/../" + filepath.Base(good.BackingFile) }},
		{"a missing backing file", func(d *rdssim.Disk) { d.BackingFile = dir + "/missing.img" }},
		{"a directory as backing file", func(d *rdssim.Disk) { d.BackingFile = sub }},
		{"a backing file with a newline", func(d *rdssim.Disk) { d.BackingFile = good.BackingFile + "\n/etc/passwd" }},
		{"an empty host in the list", func(d *rdssim.Disk) { d.AllowHostName = host1 + ",," + host2 }},
		{"a host with a space", func(d *rdssim.Disk) { d.AllowHostName = host1 + ", " + host2 }},
		{"a host with a slash", func(d *rdssim.Disk) { d.AllowHostName = "../subsystems" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, f := newExporter(t, kernelFeatures{})
			d := good
			tt.change(&d)
			if err := e.Export(d); err == nil {
				t.Error("Export: no error")
			}
			sameLines(t, "operations", f.takeOps(), nil)
		})
	}
	t.Run("the valid disk is accepted", func(t *testing.T) {
		e, _ := newExporter(t, kernelFeatures{})
		must(t, e.Export(good))
	})
	t.Run("an NQN of 223 bytes is accepted", func(t *testing.T) {
		e, _ := newExporter(t, kernelFeatures{})
		must(t, e.Export(disk(t, t.TempDir(), "n"+strings.Repeat("q", 222), 4420, "")))
	})
	for _, nqn := range []string{"", "a/b", ".."} {
		e, f := newExporter(t, kernelFeatures{})
		if e.Unexport(rdssim.Disk{NQN: nqn}) == nil || e.Resize(rdssim.Disk{NQN: nqn}) == nil ||
			e.Withdraw(nqn) == nil || e.Restore(nqn) == nil {
			t.Errorf("NQN %q accepted by Unexport, Resize, Withdraw or Restore", nqn)
		}
		sameLines(t, "operations", f.takeOps(), nil)
	}
}

func TestNewFailsLoudlyWithoutNvmet(t *testing.T) {
	tests := []struct {
		name    string
		breakIt func(f *fakeConfigfs)
		cfg     Config
		want    string
	}{
		{"configfs not mounted", func(f *fakeConfigfs) { delete(f.nodes, fakeRoot) }, Config{}, "mount -t configfs"},
		{"nvmet not loaded", func(f *fakeConfigfs) { delete(f.nodes, fakeRoot+"/ports") }, Config{}, "modprobe nvmet-tcp"},
		{"nvmet-tcp not loaded", func(f *fakeConfigfs) { delete(f.nodes, nvmetTCPModule) }, Config{}, "modprobe nvmet-tcp"},
		{"an IPv6 address", func(*fakeConfigfs) {}, Config{Addr: "::1"}, "not an IPv4"},
		{"a host name", func(*fakeConfigfs) {}, Config{Addr: "localhost"}, "not an IPv4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeConfigfs(kernelFeatures{})
			tt.breakIt(f)
			cfg := tt.cfg
			cfg.Root, cfg.FS = fakeRoot, f
			_, err := New(cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New: %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}

func TestAFailedExportLeavesNothing(t *testing.T) {
	e, f := newExporter(t, kernelFeatures{})
	d := disk(t, t.TempDir(), nqnA, 4420, host1)
	f.failWrites["subsystems/"+nqnA+"/namespaces/1/enable"] = syscall.EIO
	err := e.Export(d)
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("Export: %v, want EIO", err)
	}
	sameLines(t, "tree", f.tree(), nil)
	delete(f.failWrites, "subsystems/"+nqnA+"/namespaces/1/enable")
	must(t, e.Export(d))
	sameLines(t, "tree", f.tree(), sorted(subsysTree(d, "0", host1), portTree("4420", nqnA), hostTree(host1)))
}

func TestTheFakeEnforcesConfigfsOrdering(t *testing.T) {
	// The tests above only mean something if the fake refuses what the
	// kernel refuses.
	f := newFakeConfigfs(kernelFeatures{})
	s := fakeRoot + "/subsystems/" + nqnA
	must(t, f.Mkdir(s))
	must(t, f.Mkdir(s+"/namespaces/1"))
	must(t, f.WriteFile(s+"/namespaces/1/device_path", []byte("/x\n")))
	must(t, f.WriteFile(s+"/namespaces/1/enable", []byte("1\n")))
	must(t, f.Mkdir(fakeRoot+"/ports/4420"))
	refused := map[string]error{
		"rmdir of an enabled namespace":         f.Rmdir(s + "/namespaces/1"),
		"rmdir of a subsystem with a namespace": f.Rmdir(s),
		"repointing an enabled namespace":       f.WriteFile(s+"/namespaces/1/device_path", []byte("/y\n")),
		"linking into an unconfigured port":     f.Symlink(s, fakeRoot+"/ports/4420/subsystems/"+nqnA),
	}
	must(t, f.Mkdir(fakeRoot+"/hosts/"+host1))
	must(t, f.WriteFile(s+"/attr_allow_any_host", []byte("1\n")))
	refused["linking a host while any host is allowed"] = f.Symlink(fakeRoot+"/hosts/"+host1, s+"/allowed_hosts/"+host1)
	for name, err := range refused {
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestADiskMovedToAnotherPortLeavesTheOldOne(t *testing.T) {
	e, f := newExporter(t, kernelFeatures{})
	d := disk(t, t.TempDir(), nqnA, 4420, "")
	must(t, e.Export(d))
	d.Port = 4421
	must(t, e.Export(d))
	sameLines(t, "tree", f.tree(), sorted(subsysTree(d, "1"), portTree("4421", nqnA)))
}

func TestReplaceGivesTheNamespaceAnotherDiskAndIdentity(t *testing.T) {
	dir := t.TempDir()
	ns := "subsystems/" + nqnA + "/namespaces/1"
	uuidV4 := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	replacement := func(t *testing.T, name string) string {
		t.Helper()
		file := filepath.Join(dir, name)
		must(t, os.WriteFile(file, nil, 0o644))
		return file
	}
	// nguidOf reads what Replace wrote to device_nguid; "" if it wrote none.
	nguidOf := func(ops []string) string {
		for _, op := range ops {
			if v, ok := strings.CutPrefix(op, "write "+ns+"/device_nguid="); ok {
				return v
			}
		}
		return ""
	}

	t.Run("connected: disabled, repointed, a new UUID and NGUID, enabled", func(t *testing.T) {
		e, f := newExporter(t, kernelFeatures{})
		a := disk(t, dir, nqnA, 4420, "")
		must(t, e.Export(a))
		links := portTree("4420", nqnA)
		f.takeOps()
		file := replacement(t, "other.img")
		uuid, err := e.Replace(nqnA, file)
		must(t, err)
		if !uuidV4.MatchString(uuid) || uuid == stableUUID(nqnA) {
			t.Fatalf("new UUID %q: want a random version 4 UUID other than the disk's %s", uuid, stableUUID(nqnA))
		}
		ops := f.takeOps()
		nguid := nguidOf(ops)
		if !uuidV4.MatchString(nguid) || nguid == uuid || nguid == zeroNGUID {
			t.Fatalf("new NGUID %q: want a random one of its own", nguid)
		}
		sameLines(t, "operations", ops, []string{
			"write " + ns + "/enable=0",
			"write " + ns + "/device_path=" + file,
			"write " + ns + "/device_uuid=" + uuid,
			"write " + ns + "/device_nguid=" + nguid,
			"write " + ns + "/enable=1",
		})
		want := slices.DeleteFunc(sorted(subsysTree(a, "1"), links), func(s string) bool {
			return strings.HasPrefix(s, ns+"/device_path=") || strings.HasPrefix(s, ns+"/device_uuid=")
		})
		want = sorted(want, []string{ns + "/device_path=" + file, ns + "/device_uuid=" + uuid, ns + "/device_nguid=" + nguid})
		sameLines(t, "tree", f.tree(), want)

		again, err := e.Replace(nqnA, file)
		must(t, err)
		if again == uuid || nguidOf(f.takeOps()) == nguid {
			t.Errorf("a second replacement kept the identity %s", uuid)
		}
	})

	t.Run("while the port is down: the hosts meet it when it is back", func(t *testing.T) {
		e, f := newExporter(t, kernelFeatures{})
		a := disk(t, dir, nqnA, 4420, "")
		must(t, e.Export(a))
		must(t, e.PortDown(4420))
		f.takeOps()
		file := replacement(t, "while-down.img")
		uuid, err := e.Replace(nqnA, file)
		must(t, err)
		for _, op := range f.takeOps() {
			if strings.Contains(op, "ports/") {
				t.Errorf("Replace touched a port: %s", op)
			}
		}
		must(t, e.PortUp(4420))
		tree := f.tree()
		for _, line := range []string{ns + "/device_path=" + file, ns + "/device_uuid=" + uuid, "ports/4420/subsystems/" + nqnA + " -> subsystems/" + nqnA} {
			if !slices.Contains(tree, line) {
				t.Errorf("tree lacks %s:\n  %s", line, strings.Join(tree, "\n  "))
			}
		}
	})

	t.Run("a kernel without device_nguid gets a new UUID only", func(t *testing.T) {
		e, f := newExporter(t, kernelFeatures{noNGUID: true})
		must(t, e.Export(disk(t, dir, nqnA, 4420, "")))
		f.takeOps()
		file := replacement(t, "no-nguid.img")
		uuid, err := e.Replace(nqnA, file)
		must(t, err)
		sameLines(t, "operations", f.takeOps(), []string{
			"write " + ns + "/enable=0",
			"write " + ns + "/device_path=" + file,
			"write " + ns + "/device_uuid=" + uuid,
			"write " + ns + "/enable=1",
		})
	})

	t.Run("a later export converges back on the disk's own file and identity", func(t *testing.T) {
		e, f := newExporter(t, kernelFeatures{})
		a := disk(t, dir, nqnA, 4420, "")
		must(t, e.Export(a))
		want := f.tree()
		_, err := e.Replace(nqnA, replacement(t, "undone.img"))
		must(t, err)
		must(t, e.Export(a))
		sameLines(t, "tree", f.tree(), want)
		must(t, e.Unexport(a))
		sameLines(t, "tree after unexport", f.tree(), nil)
	})

	t.Run("refused before any write", func(t *testing.T) {
		for _, tt := range []struct {
			name   string
			kernel kernelFeatures
			nqn    string
			file   string
		}{
			{"a subsystem that is not exported", kernelFeatures{}, nqnB, replacement(t, "b.img")},
			{"an invalid NQN", kernelFeatures{}, "a/b", replacement(t, "c.img")},
			{"a missing file", kernelFeatures{}, nqnA, filepath.Join(dir, "missing.img")},
			{"a relative file", kernelFeatures{}, nqnA, "x.img"},
			{"a kernel without device_uuid", kernelFeatures{noUUID: true}, nqnA, replacement(t, "d.img")},
		} {
			t.Run(tt.name, func(t *testing.T) {
				e, f := newExporter(t, tt.kernel)
				must(t, e.Export(disk(t, dir, nqnA, 4420, "")))
				want := f.tree()
				f.takeOps()
				if _, err := e.Replace(tt.nqn, tt.file); err == nil {
					t.Error("Replace: no error")
				}
				sameLines(t, "operations", f.takeOps(), nil)
				sameLines(t, "tree", f.tree(), want)
			})
		}
	})

	t.Run("a failed write is reported with the subsystem", func(t *testing.T) {
		e, f := newExporter(t, kernelFeatures{})
		must(t, e.Export(disk(t, dir, nqnA, 4420, "")))
		f.failWrites[ns+"/enable"] = syscall.EIO
		_, err := e.Replace(nqnA, replacement(t, "eio.img"))
		if !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), nqnA) {
			t.Fatalf("Replace: %v, want EIO naming %s", err, nqnA)
		}
	})
}
