package rdssim

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/crypto/ssh"
)

func TestCommandsRefuseWhatRouterOSWouldRefuse(t *testing.T) {
	slot32 := strings.Repeat("s", 32)
	slot33 := strings.Repeat("s", 33)
	cases := []struct {
		name  string
		setup []string
		cmd   string
		want  string // the exact error text
	}{
		{"bad syntax", nil, `/disk add slot=a;b`, fmt.Sprintf(ErrTextSyntax, 17)},
		{"unknown command", nil, `/disk frobnicate`, fmt.Sprintf(ErrTextBadCommandName, "frobnicate", 7)},
		{"unknown menu", nil, `/interface print`, fmt.Sprintf(ErrTextBadCommandName, "interface", 2)},
		{"a 33-character slot", nil, addCmd(slot33, "1G"), ErrTextSlotTooLong},
		{"a duplicate slot", []string{addCmd(slot32, "1G")}, strings.Replace(addCmd(slot32, "1G"), "csi/", "other/", 1), ErrTextSlotExists},
		{"the pool's slot", nil, `/disk add type=file file-path="/storage-pool/p.img" file-size=1G slot="storage-pool"`, ErrTextSlotExists},
		{"a file path another disk uses", []string{addCmd("a", "1G")},
			`/disk add type=file file-path="/storage-pool/csi/a.img" file-size=1G slot="b"`, ErrTextFileExists},
		{"a file left by a removed disk", []string{addCmd("a", "1G"), `/disk remove [find slot="a"]`},
			`/disk add type=file file-path="/storage-pool/csi/a.img" file-size=1G slot="a"`, ErrTextFileExists},
		{"a directory as the file path", []string{addCmd("a", "1G")},
			`/disk add type=file file-path="/storage-pool/csi" file-size=1G slot="b"`, ErrTextFileExists},
		{"an NQN another disk exports", []string{addCmd("a", "1G")},
			`/disk add type=file file-path="/storage-pool/b.img" file-size=1G slot="b" nvme-tcp-export=yes nvme-tcp-server-nqn="nqn.2000-02.com.mikrotik:a"`, ErrTextNQNExists},
		{"more than the pool holds", []string{addCmd("a", "1000G")}, addCmd("b", "25G"), ErrTextNoSpace},
		{"a file outside the pool", nil, `/disk add type=file file-path="/other/x.img" file-size=1G slot="x"`, ErrTextBadFilePath},
		{"the mount point as the file", nil, `/disk add type=file file-path="/storage-pool" file-size=1G slot="x"`, ErrTextBadFilePath},
		{"a relative file path", nil, `/disk add type=file file-path="storage-pool/x.img" file-size=1G slot="x"`, fmt.Sprintf(ErrTextInvalidValue, "file-path")},
		{"a dot-dot file path", nil, `/disk add type=file file-path="/storage-pool/../x.img" file-size=1G slot="x"`, fmt.Sprintf(ErrTextInvalidValue, "file-path")},
		{"no file size", nil, `/disk add type=file file-path="/storage-pool/x.img" slot="x"`, fmt.Sprintf(ErrTextMissingValue, "file-size")},
		{"no slot", nil, `/disk add type=file file-path="/storage-pool/x.img" file-size=1G`, fmt.Sprintf(ErrTextMissingValue, "slot")},
		{"another disk type", nil, `/disk add type=tmpfs file-path="/storage-pool/x.img" file-size=1G slot="x"`, fmt.Sprintf(ErrTextInvalidValue, "type")},
		{"a fractional size", nil, `/disk add type=file file-path="/storage-pool/x.img" file-size=1.5G slot="x"`, fmt.Sprintf(ErrTextInvalidValue, "file-size")},
		{"a zero size", nil, `/disk add type=file file-path="/storage-pool/x.img" file-size=0 slot="x"`, fmt.Sprintf(ErrTextInvalidValue, "file-size")},
		{"a port out of range", nil, `/disk add type=file file-path="/storage-pool/x.img" file-size=1G slot="x" nvme-tcp-server-port=70000`, fmt.Sprintf(ErrTextInvalidValue, "nvme-tcp-server-port")},
		{"a yes/no that is neither", nil, `/disk add type=file file-path="/storage-pool/x.img" file-size=1G slot="x" mount-filesystem=true`, fmt.Sprintf(ErrTextInvalidValue, "mount-filesystem")},
		{"an export without an NQN", nil, `/disk add type=file file-path="/storage-pool/x.img" file-size=1G slot="x" nvme-tcp-export=yes`, ErrTextNQNRequired},
		{"an unknown argument", nil, `/disk add type=file comment=x`, fmt.Sprintf(ErrTextEndOfCommand, 21)},
		{"a repeated argument", nil, `/disk add type=file type=file`, fmt.Sprintf(ErrTextEndOfCommand, 21)},
		{"a regex argument", nil, `/disk add type~file`, fmt.Sprintf(ErrTextSyntax, 15)},
		{"a stray word", nil, `/disk add type=file now`, fmt.Sprintf(ErrTextEndOfCommand, 21)},
		{"copy-from nothing", nil, `/disk add type=file copy-from=[find slot="nope"] file-path="/storage-pool/y.img" slot="y"`, ErrTextNoSuchItem},
		{"copy-from the pool", nil, `/disk add type=file copy-from=[find slot="storage-pool"] file-path="/storage-pool/y.img" slot="y"`, ErrTextNotFileDisk},
		{"copy-from into a smaller disk", []string{addCmd("a", "2G")},
			`/disk add type=file copy-from=[find slot="a"] file-path="/storage-pool/y.img" file-size=1G slot="y"`, ErrTextCopySmaller},
		{"copy-from without find", nil, `/disk add type=file copy-from=a file-path="/storage-pool/y.img" slot="y"`, fmt.Sprintf(ErrTextInvalidValue, "copy-from")},
		{"set on a missing disk", nil, `/disk set [find slot="nope"] file-size=2G`, ErrTextNoSuchItem},
		{"set beyond free space", []string{addCmd("a", "1G")}, `/disk set [find slot="a"] file-size=1025G`, ErrTextNoSpace},
		{"set on the pool", nil, `/disk set [find slot="storage-pool"] file-size=1G`, ErrTextNotFileDisk},
		{"set a property not simulated", []string{addCmd("a", "1G")}, `/disk set [find slot="a"] slot=b`, fmt.Sprintf(ErrTextEndOfCommand, 27)},
		{"set by item number", []string{addCmd("a", "1G")}, `/disk set 1 file-size=2G`, fmt.Sprintf(ErrTextNotSimulated, "items named other than by [find ...]")},
		{"set with no item", nil, `/disk set file-size=2G`, fmt.Sprintf(ErrTextNotSimulated, "items named other than by [find ...]")},
		{"remove with no item", nil, `/disk remove`, fmt.Sprintf(ErrTextMissingValue, "numbers")},
		{"remove the pool", nil, `/disk remove [find slot="storage-pool"]`, ErrTextCannotRemove},
		{"print without detail", nil, `/disk print`, fmt.Sprintf(ErrTextNotSimulated, "print without detail")},
		{"print where an unknown property", nil, `/disk print detail where colour=red`, fmt.Sprintf(ErrTextSyntax, 26)},
		{"print where nothing", nil, `/disk print detail where`, fmt.Sprintf(ErrTextSyntax, 25)},
		{"print where a bad regex", nil, `/disk print detail where slot~"("`, ErrTextBadRegex},
		{"find by an unknown property", nil, `/disk remove [find colour=red]`, fmt.Sprintf(ErrTextSyntax, 20)},
		{"file remove of a disk's file", []string{addCmd("a", "1G")}, `/file remove [find name="storage-pool/csi/a.img"]`, ErrTextFileInUse},
		{"file remove of the mount point", nil, `/file remove [find name="storage-pool"]`, ErrTextCannotRemoveFS},
		{"file remove of a full directory", []string{addCmd("a", "1G"), `/disk remove [find slot="a"]`}, `/file remove [find name="storage-pool/csi"]`, ErrTextDirNotEmpty},
		{"monitor a missing disk", nil, `/disk monitor-traffic nope once`, ErrTextNoSuchItem},
		{"identity with an argument", nil, `/system identity print detail`, fmt.Sprintf(ErrTextEndOfCommand, 24)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := start(t, func(c *Config) { c.PoolSize = 1024 << 30 })
			c := f.dial(t, "")
			for _, cmd := range tc.setup {
				ok(t, c, cmd)
			}
			before := snapshot(t, f)
			r := exec(t, c, tc.cmd)
			if r.stdout != tc.want+"\r\n" || r.stderr != "" || r.exit != 0 {
				t.Errorf("%s\ngot stdout %q stderr %q exit %d\nwant stdout %q", tc.cmd, r.stdout, r.stderr, r.exit, tc.want+"\r\n")
			}
			if after := snapshot(t, f); after != before {
				t.Errorf("a refused command changed the state:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// snapshot is the state file plus the list of backing files, to check that a
// refused command changed nothing.
func snapshot(t *testing.T, f *fixture) string {
	t.Helper()
	state, _ := os.ReadFile(filepath.Join(f.cfg.StateDir, stateFile))
	var files []string
	err := filepath.Walk(filepath.Join(f.cfg.StateDir, "files"), func(p string, info os.FileInfo, err error) error {
		if err == nil {
			files = append(files, fmt.Sprintf("%s:%d", p, info.Size()))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(state) + strings.Join(files, ",")
}

func TestDiskAddCreatesASparseBackingFileAndPrintsIt(t *testing.T) {
	f := start(t, nil)
	c := f.dial(t, "ct4096w")
	ok(t, c, addCmd("pvc-a", "10G"))

	p := filepath.Join(f.cfg.StateDir, "files", "storage-pool", "csi", "pvc-a.img")
	info, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if info.Size() != 10<<30 {
		t.Errorf("backing file is %d bytes, want %d", info.Size(), int64(10<<30))
	}
	if blocks := info.Sys().(*syscall.Stat_t).Blocks; blocks*512 > 1<<20 {
		t.Errorf("backing file allocates %d bytes: not sparse", blocks*512)
	}

	out := ok(t, c, `/disk print detail where slot="pvc-a"`)
	want := diskLayout.header + "\r\n" +
		` 0  type=file slot="pvc-a" slot-default="" parent="" fs=- model="/storage-pool/csi/pvc-a.img" size=10 737 418 240` +
		` mount-filesystem=no mount-read-only=no compress=no sector-size=512 raid-master=none nvme-tcp-export=yes nvme-tcp-server-port=4420` +
		` nvme-tcp-server-nqn="nqn.2000-02.com.mikrotik:pvc-a" nvme-tcp-server-allow-host-name="" iscsi-export=no nfs-sharing=no` +
		` smb-sharing=no media-sharing=no media-interface=none swap=no file-path=/storage-pool/csi/pvc-a.img file-size=10.0GiB file-offset=0` +
		"\r\n\r\n"
	if out != want {
		t.Errorf("print:\n%q\nwant\n%q", out, want)
	}
}

func TestDiskAddAcceptsDefaultsAndUnitSizes(t *testing.T) {
	f := start(t, nil)
	c := f.dial(t, "ct4096w")
	ok(t, c, `/disk add type=file file-path="/storage-pool/plain.img" file-size=512M slot=plain nvme-tcp-server-allow-host-name="nqn.2014-08.org.nvmexpress:uuid:1"`)
	out := ok(t, c, `/disk print detail where slot=plain`)
	for _, want := range []string{
		" size=536 870 912 ", " file-size=512.0MiB ", " mount-filesystem=yes ", " nvme-tcp-export=no ",
		" nvme-tcp-server-port=4420 ", ` nvme-tcp-server-nqn="" `, ` nvme-tcp-server-allow-host-name="nqn.2014-08.org.nvmexpress:uuid:1" `,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("print lacks %q:\n%s", want, out)
		}
	}
}

func TestPrintListsDisksPoolFirstAndFiltersBySlotRegex(t *testing.T) {
	f := start(t, nil)
	c := f.dial(t, "ct4096w")
	for _, s := range []string{"pvc-1", "pvc-2", "other"} {
		ok(t, c, addCmd(s, "1G"))
	}
	slots := regexp.MustCompile(`(?m)^ *(\d+)  type=\w+ slot="([^"]*)"`)
	cases := []struct {
		cmd  string
		want string
	}{
		{`/disk print detail`, "0:storage-pool 1:pvc-1 2:pvc-2 3:other"},
		{`/disk print detail where slot~"^pvc-"`, "0:pvc-1 1:pvc-2"},
		{`/disk print detail where slot~"^pvc-" slot~"2\$"`, "0:pvc-2"},
		{`/disk print detail where slot=other`, "0:other"},
		{`/disk print detail where slot="pvc"`, ""},
		{`/disk print detail where mount-point="storage-pool"`, "0:storage-pool"},
		{`/disk print detail where nvme-tcp-export=yes`, "0:pvc-1 1:pvc-2 2:other"},
	}
	for _, tc := range cases {
		out := ok(t, c, tc.cmd)
		if !strings.HasPrefix(out, diskLayout.header+"\r\n") {
			t.Errorf("%s: no Flags header first:\n%s", tc.cmd, out)
		}
		var got []string
		for _, m := range slots.FindAllStringSubmatch(out, -1) {
			got = append(got, m[1]+":"+m[2])
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("%s: got %q, want %q", tc.cmd, strings.Join(got, " "), tc.want)
		}
	}
}

func TestPoolRecordReportsFreeSpaceIncludingLeftoverFiles(t *testing.T) {
	f := start(t, func(c *Config) { c.PoolSize = 100 << 30 })
	c := f.dial(t, "ct4096w")
	pool := func() string {
		out := ok(t, c, `/disk print detail where mount-point="storage-pool"`)
		m := regexp.MustCompile(` size=([\d ]+) free=([\d ]+) use=(\d+)%`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no size/free/use in %q", out)
		}
		return m[1] + "|" + m[2] + "|" + m[3]
	}
	if got := pool(); got != "107 374 182 400|107 374 182 400|0" {
		t.Errorf("empty pool: %s", got)
	}
	ok(t, c, addCmd("a", "25G"))
	if got := pool(); got != "107 374 182 400|80 530 636 800|25" {
		t.Errorf("after a 25G disk: %s", got)
	}
	ok(t, c, `/disk remove [find slot="a"]`)
	if got := pool(); got != "107 374 182 400|80 530 636 800|25" {
		t.Errorf("a removed disk's file still holds its space, got %s", got)
	}
	ok(t, c, `/file remove [find name="storage-pool/csi/a.img"]`)
	if got := pool(); got != "107 374 182 400|107 374 182 400|0" {
		t.Errorf("after the file went: %s", got)
	}
}

func TestDiskRemoveLeavesTheFileAndFileRemoveDeletesIt(t *testing.T) {
	f := start(t, nil)
	c := f.dial(t, "ct4096w")
	ok(t, c, addCmd("pvc-a", "1G"))
	host := filepath.Join(f.cfg.StateDir, "files", "storage-pool", "csi", "pvc-a.img")

	if out := ok(t, c, `/disk remove [find slot="pvc-a"]`); out != "" {
		t.Errorf("remove printed %q", out)
	}
	if out := ok(t, c, `/disk print detail where slot="pvc-a"`); out != diskLayout.header+"\r\n" {
		t.Errorf("disk still listed: %q", out)
	}
	if _, err := os.Stat(host); err != nil {
		t.Errorf("disk remove must leave the backing file: %v", err)
	}
	out := ok(t, c, `/file print detail where name~"pvc-a"`)
	if !regexp.MustCompile(`^ 0   name=storage-pool/csi/pvc-a\.img type=\.img file size=1024\.0MiB last-modified=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\r\n\r\n$`).MatchString(out) {
		t.Errorf("file print: %q", out)
	}

	// A leading slash names nothing: /file names have none.
	ok(t, c, `/file remove [find name="/storage-pool/csi/pvc-a.img"]`)
	if _, err := os.Stat(host); err != nil {
		t.Errorf("a name with a leading slash removed the file: %v", err)
	}
	ok(t, c, `/file remove [find name="storage-pool/csi/pvc-a.img"]`)
	if _, err := os.Stat(host); !os.IsNotExist(err) {
		t.Errorf("file remove left the file: %v", err)
	}
	if _, err := os.Stat(filepath.Dir(host)); err != nil {
		t.Errorf("file remove must not remove the directory: %v", err)
	}
	if out := ok(t, c, `/file print detail where name~"pvc-a"`); out != "" {
		t.Errorf("file still listed: %q", out)
	}
	// An empty directory can be removed by name.
	ok(t, c, `/file remove [find name="storage-pool/csi"]`)
	if _, err := os.Stat(filepath.Dir(host)); !os.IsNotExist(err) {
		t.Errorf("empty directory not removed: %v", err)
	}
}

func TestRemoveOfNothingIsASilentNoOp(t *testing.T) {
	f := start(t, nil)
	c := f.dial(t, "")
	for _, cmd := range []string{`/disk remove [find slot="nope"]`, `/file remove [find name="storage-pool/nope.img"]`} {
		r := exec(t, c, cmd)
		if r.stdout != "" || r.stderr != "" || r.exit != 0 || r.err != nil {
			t.Errorf("%s: %+v, want no output and exit 0", cmd, r)
		}
	}
}

func TestDiskSetResizesTheFileAndChangesExport(t *testing.T) {
	f := start(t, nil)
	c := f.dial(t, "ct4096w")
	ok(t, c, addCmd("a", "1G"))
	host := filepath.Join(f.cfg.StateDir, "files", "storage-pool", "csi", "a.img")
	for _, tc := range []struct {
		size string
		want int64
	}{{"3221225472", 3 << 30}, {"2G", 2 << 30}} {
		ok(t, c, `/disk set [find slot="a"] file-size=`+tc.size)
		info, err := os.Stat(host)
		if err != nil || info.Size() != tc.want {
			t.Fatalf("file-size=%s: file is %v bytes (%v), want %d", tc.size, info.Size(), err, tc.want)
		}
		out := ok(t, c, `/disk print detail where slot="a"`)
		if !strings.Contains(out, " size="+groupDigits(tc.want)+" ") {
			t.Errorf("file-size=%s: print shows %s", tc.size, out)
		}
	}
	ok(t, c, `/disk set [find slot="a"] nvme-tcp-export=no nvme-tcp-server-allow-host-name="nqn.2014-08.org.example:host1"`)
	out := ok(t, c, `/disk print detail where slot="a"`)
	for _, want := range []string{" nvme-tcp-export=no ", ` nvme-tcp-server-allow-host-name="nqn.2014-08.org.example:host1" `} {
		if !strings.Contains(out, want) {
			t.Errorf("print lacks %q: %s", want, out)
		}
	}
}

func TestCopyFromCopiesTheSourceDataAndStaysSparse(t *testing.T) {
	f := start(t, nil)
	c := f.dial(t, "ct4096w")
	ok(t, c, addCmd("src", "64M"))
	src := filepath.Join(f.cfg.StateDir, "files", "storage-pool", "csi", "src.img")
	payload := []byte("data written by a node")
	const at = 32 << 20
	fh, err := os.OpenFile(src, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.WriteAt(payload, at); err != nil {
		t.Fatal(err)
	}
	_ = fh.Close()

	ok(t, c, `/disk add type=file copy-from=[find slot="src"] file-path="/storage-pool/snap/copy.img" slot="copy" nvme-tcp-export=yes nvme-tcp-server-nqn="nqn.2000-02.com.mikrotik:copy"`)
	ok(t, c, `/disk add type=file copy-from=[find where slot="src"] file-path="/storage-pool/snap/big.img" file-size=128M slot="big"`)

	for name, size := range map[string]int{"copy.img": 64 << 20, "big.img": 128 << 20} {
		p := filepath.Join(f.cfg.StateDir, "files", "storage-pool", "snap", name)
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) != size || !bytes.Equal(data[at:at+len(payload)], payload) {
			t.Errorf("%s: %d bytes, want %d; payload present: %v", name, len(data), size, bytes.Contains(data, payload))
		}
		info, _ := os.Stat(p)
		if blocks := info.Sys().(*syscall.Stat_t).Blocks; blocks*512 > 8<<20 {
			t.Errorf("%s allocates %d bytes: the copy is not sparse", name, blocks*512)
		}
	}
	out := ok(t, c, `/disk print detail where slot="copy"`)
	if !strings.Contains(out, " size=67 108 864 ") || !strings.Contains(out, ` nvme-tcp-server-nqn="nqn.2000-02.com.mikrotik:copy" `) {
		t.Errorf("copy print: %s", out)
	}
	// Copies show nothing about their origin (no source-volume=, no
	// creation-time=), as on hardware.
	if strings.Contains(out, "source") || strings.Contains(out, "creation-time") {
		t.Errorf("copy print names its origin: %s", out)
	}
}

func TestWidth80CutsALongFilePathMidValue(t *testing.T) {
	f := start(t, nil)
	slot := "pvc-ccdecfad-a8bf-572e-9120"
	path := "/storage-pool/metal-csi/pvc-ccdecfad-a8bf-572e-9120-464c4d99f12f.img"
	add := `/disk add type=file file-path="` + path + `" file-size=10G slot="` + slot + `"`
	ok(t, f.dial(t, "ct4096w"), add)

	narrow := ok(t, f.dial(t, ""), `/disk print detail where slot="`+slot+`"`)
	cut := "               file-path=/storage-pool/metal-csi/pvc-ccdecfad-a8bf-572e-9120-464\r\n" +
		"               c4d99f12f.img file-size=10.0GiB file-offset=0\r\n"
	if !strings.Contains(narrow, cut) {
		t.Errorf("width 80 output does not cut the path mid-value:\n%s", narrow)
	}
	for _, line := range strings.Split(narrow, "\r\n") {
		if len(line) > 80 {
			t.Errorf("line of %d > 80 columns: %q", len(line), line)
		}
	}
	if strings.Contains(narrow, "file-path="+path) {
		t.Error("width 80 output holds the whole path on one line")
	}

	wide := ok(t, f.dial(t, "ct4096w"), `/disk print detail where slot="`+slot+`"`)
	if !strings.Contains(wide, " file-path="+path+" ") {
		t.Errorf("width 4096 output does not hold the whole path:\n%s", wide)
	}
	if n := strings.Count(wide, "\r\n"); n != 3 {
		t.Errorf("width 4096: %d lines, want header, record, blank", n)
	}
}

func TestEveryLineEndsWithCRLF(t *testing.T) {
	f := start(t, nil)
	c := f.dial(t, "")
	ok(t, c, addCmd("a", "1G"))
	for _, cmd := range []string{`/disk print detail`, `/file print detail`, `/system identity print`, `/disk monitor-traffic a once`, `/disk frob`} {
		out := exec(t, c, cmd).stdout
		if out == "" || !strings.HasSuffix(out, "\r\n") || strings.Count(out, "\n") != strings.Count(out, "\r\n") {
			t.Errorf("%s: not CRLF-terminated lines: %q", cmd, out)
		}
	}
}

func TestIdentityAndMonitorTraffic(t *testing.T) {
	f := start(t, func(c *Config) { c.Identity = "rds-lab" })
	c := f.dial(t, "")
	ok(t, c, addCmd("a", "1G"))
	if out := ok(t, c, `/system identity print`); out != "  name: rds-lab\r\n" {
		t.Errorf("identity: %q", out)
	}
	want := "                  slot: a\r\n   read-ops-per-second: 0\r\n  write-ops-per-second: 0\r\n" +
		"             read-rate: 0bps\r\n            write-rate: 0bps\r\n"
	for _, cmd := range []string{`/disk monitor-traffic a once`, `/disk monitor-traffic "a" once`} {
		if out := ok(t, c, cmd); out != want {
			t.Errorf("%s: %q", cmd, out)
		}
	}
}

func TestStateSurvivesARestart(t *testing.T) {
	key := newSigner(t)
	dir := t.TempDir()
	cfg := Config{StateDir: dir, AuthorizedKeys: []ssh.PublicKey{key.PublicKey()}}
	f := startWith(t, key, cfg)
	c := f.dial(t, "ct4096w")
	ok(t, c, addCmd("a", "1G"))
	ok(t, c, addCmd("b", "2G"))
	ok(t, c, `/disk remove [find slot="a"]`)
	ok(t, c, addCmd("c", "3G"))
	disks := ok(t, c, `/disk print detail`)
	files := ok(t, c, `/file print detail`)
	hostKey := f.sim.HostKey().Marshal()
	_ = c.Close()
	_ = f.sim.Close()

	g := startWith(t, key, cfg)
	if !bytes.Equal(g.sim.HostKey().Marshal(), hostKey) {
		t.Error("the host key changed across a restart")
	}
	c2 := g.dial(t, "ct4096w")
	if got := ok(t, c2, `/disk print detail`); got != disks {
		t.Errorf("disks after restart:\n%s\nbefore:\n%s", got, disks)
	}
	if got := ok(t, c2, `/file print detail`); got != files {
		t.Errorf("files after restart:\n%s\nbefore:\n%s", got, files)
	}
	// The restored state is live: the slot is still taken, the next disk
	// is listed after the others.
	if r := exec(t, c2, addCmd("b", "1G")); r.stdout != ErrTextSlotExists+"\r\n" {
		t.Errorf("re-adding a restored slot: %q", r.stdout)
	}
	ok(t, c2, addCmd("d", "1G"))
	if got := ok(t, c2, `/disk print detail where slot~"^[bcd]\$"`); !regexp.MustCompile(`(?s)slot="b".*slot="c".*slot="d"`).MatchString(got) {
		t.Errorf("order after restart: %s", got)
	}
}
