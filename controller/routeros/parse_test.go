package routeros

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// console lays out print detail output the way RouterOS does, quirks
// included, so tests and the round-trip fuzz target parse what hardware
// prints rather than one clean line per record.
type console struct {
	width  int  // terminal width
	indent int  // indentation of continuation lines
	cut    bool // fill every line and cut the field that reaches the width; otherwise a field that does not fit starts a new line and only one longer than a line is cut
	crlf   bool
}

// item lays out one record. prefix is its index column (" 0  ") or "".
func (c console) item(prefix string, fields []string) []string {
	pad := strings.Repeat(" ", c.indent)
	var lines []string
	line, empty := prefix, true
	for _, f := range fields {
		s := f
		if !empty {
			s = " " + f
		}
		if len(line)+len(s) > c.width && !c.cut && !empty {
			lines = append(lines, line)
			line, s = pad, f
		}
		for len(line)+len(s) > c.width {
			n := c.width - len(line)
			lines = append(lines, line+s[:n])
			line, s = pad, s[n:]
		}
		line += s
		empty = false
	}
	return append(lines, line)
}

// print renders a whole output: an optional Flags header, then the items
// separated by blank lines.
func (c console) print(header string, items ...[]string) string {
	var lines []string
	if header != "" {
		lines = c.item("", strings.Fields(header))
	}
	for i, it := range items {
		if i > 0 {
			lines = append(lines, "")
		}
		lines = append(lines, it...)
	}
	nl := "\n"
	if c.crlf {
		nl = "\r\n"
	}
	return strings.Join(lines, nl) + nl
}

const flagsHeader = "Flags: X - disabled; E - empty; B - block-device; M - mounted; F - formatting; R - raid-member"

// diskView is a file disk as RouterOS prints it.
type diskView struct {
	slot       string
	path       string // as printed: with or without a leading "/"
	size       int64
	port       int
	quotePath  bool
	noFileSize bool
}

func (d diskView) fields() []string {
	path := d.path
	if d.quotePath {
		path = quote(path)
	}
	fs := []string{
		"type=file", "slot=" + quote(d.slot), `slot-default=""`, `parent=""`, "fs=-",
		"model=" + quote(d.path), "size=" + groupDigits(d.size),
		"mount-filesystem=yes", "mount-read-only=no", "compress=no", "sector-size=512", "raid-master=none",
		"nvme-tcp-export=yes", "nvme-tcp-server-port=" + strconv.Itoa(d.port),
		"nvme-tcp-server-nqn=" + quote("nqn.2000-02.com.mikrotik:"+d.slot),
		`nvme-tcp-server-allow-host-name=""`, "iscsi-export=no", "nfs-sharing=no", "smb-sharing=no",
		"media-sharing=no", "media-interface=none", "swap=no", "file-path=" + path,
	}
	if !d.noFileSize {
		fs = append(fs, "file-size="+humanSize(d.size))
	}
	return append(fs, "file-offset=0")
}

// groupDigits prints n the way RouterOS does: "53 687 091 200".
func groupDigits(n int64) string {
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + " " + s[i:]
	}
	return s
}

// humanSize rounds like RouterOS' file-size=, "1024.0MiB" included.
func humanSize(n int64) string {
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB"}
	if n < 1024 {
		return strconv.FormatInt(n, 10) + "B"
	}
	u := 0
	for u+1 < len(units) && n >= int64(1)<<(10*(u+2)) {
		u++
	}
	return fmt.Sprintf("%.1f%s", float64(n)/float64(int64(1)<<(10*(u+1))), units[u])
}

// record builds an expected Record from key, value pairs.
func record(kv ...string) Record {
	r := Record{Fields: map[string]string{}}
	for i := 0; i+1 < len(kv); i += 2 {
		r.Keys = append(r.Keys, kv[i])
		r.Fields[kv[i]] = kv[i+1]
	}
	return r
}

func fixture(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var (
	singleDisk = record(
		"type", "file", "slot", "pvc-test-123", "slot-default", "", "parent", "", "fs", "-",
		"model", "/storage-pool/test.img", "size", "53 687 091 200", "mount-filesystem", "yes",
		"mount-read-only", "no", "compress", "no", "sector-size", "512", "raid-master", "none",
		"nvme-tcp-export", "yes", "nvme-tcp-server-port", "4420",
		"nvme-tcp-server-nqn", "nqn.2000-02.com.mikrotik:pvc-test-123",
		"nvme-tcp-server-allow-host-name", "", "iscsi-export", "no", "nfs-sharing", "no",
		"smb-sharing", "no", "media-sharing", "no", "media-interface", "none", "swap", "no",
		"file-path", "/storage-pool/test.img", "file-size", "50.0GiB", "file-offset", "0")
	listDisks = []Record{
		record("type", "file", "slot", "pvc-test-1", "size", "53 687 091 200",
			"file-path", "/storage-pool/test1.img", "file-size", "50.0GiB",
			"nvme-tcp-export", "yes", "nvme-tcp-server-port", "4420",
			"nvme-tcp-server-nqn", "nqn.2000-02.com.mikrotik:pvc-test-1"),
		record("type", "file", "slot", "pvc-test-2", "size", "107 374 182 400",
			"file-path", "/storage-pool/test2.img", "file-size", "100.0GiB"),
	}
)

func TestParseRecordsReadsEveryFixtureExactly(t *testing.T) {
	tests := []struct {
		file string
		want []Record
	}{
		{"print-disk-single.txt", []Record{singleDisk}},
		{"print-disk-list.txt", listDisks},
		{"print-disk-list-crlf.txt", listDisks},
		{"print-flags-only.txt", []Record{}},
		{"print-file-list.txt", []Record{
			record("name", "storage-pool/metal-csi", "type", "directory", "last-modified", "2025-11-11 16:47:07"),
			record("name", "storage-pool/metal-csi/pvc-ccdecfad-a8bf-572e-9120-464c4d99f12f.img",
				"type", ".img file", "size", "10.0GiB", "last-modified", "2025-11-11 14:32:41"),
		}},
		{"print-file-dates.txt", []Record{
			record("name", "storage-pool/metal-csi/pvc-a.img", "type", ".img file", "size", "1024.0MiB",
				"creation-time", "jan/01/2025 00:00:00", "last-modified", "2025-11-11 14:32:41"),
			record("name", `storage-pool/odd "name" $x?\.img`, "type", ".img file", "size", "512B",
				"creation-time", "nov/11/2025 09:05:00", "last-modified", "2025-11-11 09:05:00"),
		}},
		{"print-pool.txt", []Record{record(
			"type", "raid", "slot", "raid1", "slot-default", "", "parent", "", "fs", "btrfs",
			"model", "RAID1", "size", "7 681 574 174 720", "free", "5 632 440 000 000", "use", "27%",
			"mount-point", "storage-pool", "mount-filesystem", "yes", "mount-read-only", "no",
			"compress", "no", "sector-size", "512", "raid-type", "raid1", "raid-device-count", "2")}},
		{"print-disk-copy.txt", []Record{record(
			"type", "file", "slot", "snap-7f3a", "slot-default", "", "parent", "", "fs", "-",
			"model", "storage-pool/snapshots/snap-7f3a.img", "size", "1 610 612 736",
			"mount-filesystem", "yes", "mount-read-only", "no", "nvme-tcp-export", "no",
			"nvme-tcp-server-port", "4420", "nvme-tcp-server-nqn", "", "nvme-tcp-server-allow-host-name", "",
			"file-path", "storage-pool/snapshots/snap-7f3a.img", "file-size", "1.5GiB", "file-offset", "0")}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := ParseRecords(fixture(t, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

// A wrapped output must read exactly as the same output printed on a console
// wide enough for every record to fit on one line.
func TestWrappedOutputReadsLikeItsUnwrappedTwin(t *testing.T) {
	tests := []struct{ wrapped, flat string }{
		{"print-disk-wrap80-cut.txt", "print-disk-nowrap.txt"},
		{"print-disk-wrap80-packed.txt", "print-disk-nowrap.txt"},
		{"print-disk-list-crlf.txt", "print-disk-list.txt"},
	}
	for _, tt := range tests {
		t.Run(tt.wrapped, func(t *testing.T) {
			want, err := ParseRecords(fixture(t, tt.flat))
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseRecords(fixture(t, tt.wrapped))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %q\nwant %q", got, want)
			}
		})
	}
}

func TestParseRecordsHandlesLayoutQuirks(t *testing.T) {
	tests := []struct {
		name, out string
		want      []Record
	}{
		{"nothing at all", "", []Record{}},
		{"flags header that wraps", "Flags: X - disabled; E - empty; B - block-\n       device; M - mounted\n", []Record{}},
		{"flag letters after the index",
			" 0 BM  type=file slot=\"a\"\n        size=4096\n",
			[]Record{record("type", "file", "slot", "a", "size", "4096")}},
		{"comment line before the fields",
			" 0   ;;; keep me\n      type=file slot=\"a\"\n",
			[]Record{record("comment", "keep me", "type", "file", "slot", "a")}},
		{"records without a blank line between them",
			" 0  slot=\"a\"\n     size=1\n 1  slot=\"b\"\n",
			[]Record{record("slot", "a", "size", "1"), record("slot", "b")}},
		{"indices past nine",
			" 9  slot=\"a\"\n\n10  slot=\"b\"\n",
			[]Record{record("slot", "a"), record("slot", "b")}},
		{"RouterOS escapes in quoted values",
			`slot="a\"b\\c\$d\?e\_f\C3\A9"` + "\n",
			[]Record{record("slot", "a\"b\\c$d?e f\u00e9")}},
		{"empty unquoted value",
			"comment= slot=\"a\"\n",
			[]Record{record("comment", "", "slot", "a")}},
		// Both lines reach the inferred width, so the cut inside the key is
		// visible and the two halves are glued back together.
		{"key cut at the width",
			" 0  slot=\"ab\" nvme-t\n    cp-server-port=1\n",
			[]Record{record("slot", "ab", "nvme-tcp-server-port", "1")}},
		// The middle line is all letters, digits and '-', like the front of
		// a key, but its '.' shows it continues the path.
		{"cut path with a line that looks like a key",
			"file-path=/storage-pool/abc-\n    defghijklmnopqrstuvwxyza\n    bc.img file-size=1B\n",
			[]Record{record("file-path", "/storage-pool/abc-defghijklmnopqrstuvwxyzabc.img", "file-size", "1B")}},
		// "-defghijk…" is all key bytes, but it ends the path, not a key:
		// the next field must stay a field.
		{"cut path whose last piece looks like the end of a key",
			"file-path=/storage-pool/abc\n    -defghijklmnopqrstuvwxy\n    file-size=1B\n",
			[]Record{record("file-path", "/storage-pool/abc-defghijklmnopqrstuvwxy", "file-size", "1B")}},
		{"integer cut before a space",
			"size=53 687 091\n     200 x=1\n    z=3\n",
			[]Record{record("size", "53 687 091 200", "x", "1", "z", "3")}},
		{"integer cut after a space",
			"size=53 687 091 \n    200 x=1\n",
			[]Record{record("size", "53 687 091 200", "x", "1")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRecords(tt.out)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestParseRecordsRejectsWhatItCannotReadWithCertainty(t *testing.T) {
	tests := []struct{ name, out string }{
		{"continuation after a short line", " 0  size=53 687\n               091 200 x=1\n               y=2 zz=3 aaa=4\n"},
		{"quoted value broken on a short line", " 0  slot=\"pvc-\n               a\" x=1 yyyyyyyyyyyyyyyyyyyy=2\n"},
		// Either the path ends in "abc-" and a key "defg…afile-size" starts
		// on the full middle line, or the path ends in "…za": only knowing
		// the keys could tell, so neither is returned.
		{"cut path whose tail looks like a key",
			"file-path=/storage-pool/abc-\n    defghijklmnopqrstuvwxyza\n    file-size=1B x=1\n"},
		{"unterminated quote", "slot=\"pvc-a\n"},
		{"text glued to a closing quote", "slot=\"a\"b x=1\n"},
		{"unknown escape", "slot=\"a\\qb\"\n"},
		{"lower-case hex escape", "slot=\"a\\c3\"\n"},
		{"key printed twice", "size=1 size=2\n"},
		{"no key", " 0  hello world\n"},
		{"index without fields", " 0\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := ParseRecords(tt.out); err == nil {
				t.Errorf("got %q, want an error", got)
			}
		})
	}
}

func TestParseBytes(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"4096", 4096, true},
		{"512", 512, true},
		{"53 687 091 200", 53687091200, true},
		{"1 000", 1000, true},
		{"53687091200", 53687091200, true},
		{"9 223 372 036 854 775 807", 1<<63 - 1, true},
		{"9 223 372 036 854 775 808", 0, false},
		{"", 0, false},
		{"50.0GiB", 0, false},
		{"53 68 7", 0, false},
		{"1  000", 0, false},
		{"1 0000", 0, false},
		{"1000 000", 0, false},
		{" 1 000", 0, false},
		{"1 000 ", 0, false},
		{"1 000B", 0, false},
		{"+1", 0, false},
		{"-1", 0, false},
		{"007", 0, false},
		{"0 000", 0, false},
		{"1\t000", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseBytes(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestParseHumanSize(t *testing.T) {
	tests := []struct {
		in               string
		value, precision float64
		ok               bool
	}{
		{"50.0GiB", 50 << 30, 1 << 30 / 10.0, true},
		{"1024.0MiB", 1 << 30, 1 << 20 / 10.0, true},
		{"5.5TiB", 5.5 * (1 << 40), 1 << 40 / 10.0, true},
		{"512B", 512, 1, true},
		{"10KiB", 10 << 10, 1 << 10, true},
		{"1.25PiB", 1.25 * (1 << 50), 1 << 50 / 100.0, true},
		{"", 0, 0, false},
		{"GiB", 0, 0, false},
		{"50.GiB", 0, 0, false},
		{".5GiB", 0, 0, false},
		{"50.0 GiB", 0, 0, false},
		{"50.0gib", 0, 0, false},
		{"50.0G", 0, 0, false},
		{"1e3GiB", 0, 0, false},
		{"-1.0GiB", 0, 0, false},
		{"53 687 091 200", 0, 0, false},
	}
	for _, tt := range tests {
		v, p, err := ParseHumanSize(tt.in)
		if (err == nil) != tt.ok || v != tt.value || p != tt.precision {
			t.Errorf("ParseHumanSize(%q) = %v, %v, %v; want %v, %v, ok=%v", tt.in, v, p, err, tt.value, tt.precision, tt.ok)
		}
	}
}

func TestParseDisk(t *testing.T) {
	first := func(file string) Record {
		recs, err := ParseRecords(fixture(t, file))
		if err != nil || len(recs) == 0 {
			t.Fatalf("%s: %v", file, err)
		}
		return recs[0]
	}
	with := func(r Record, kv ...string) Record {
		out := record()
		for _, k := range r.Keys {
			out.Keys = append(out.Keys, k)
			out.Fields[k] = r.Fields[k]
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if _, ok := out.Fields[kv[i]]; !ok {
				out.Keys = append(out.Keys, kv[i])
			}
			out.Fields[kv[i]] = kv[i+1]
		}
		return out
	}
	without := func(r Record, key string) Record {
		out := with(r)
		delete(out.Fields, key)
		return out
	}
	tests := []struct {
		name string
		in   Record
		want Disk
		ok   bool
	}{
		{"single disk", first("print-disk-single.txt"), Disk{
			Slot: "pvc-test-123", Type: "file", FilePath: "/storage-pool/test.img",
			NQN: "nqn.2000-02.com.mikrotik:pvc-test-123", Size: 53687091200, Export: true, Port: 4420}, true},
		{"copy without a leading slash, not exported", first("print-disk-copy.txt"), Disk{
			Slot: "snap-7f3a", Type: "file", FilePath: "/storage-pool/snapshots/snap-7f3a.img",
			Size: 1610612736, Port: 4420}, true},
		{"unexported disk without port or file-size", listDisks[1], Disk{
			Slot: "pvc-test-2", Type: "file", FilePath: "/storage-pool/test2.img", Size: 107374182400}, true},
		{"allow list and mount point", with(listDisks[0], "nvme-tcp-server-allow-host-name", "nqn.2014-08.org.nvmexpress:uuid:1", "mount-point", "pvc-test-1"), Disk{
			Slot: "pvc-test-1", Type: "file", FilePath: "/storage-pool/test1.img", NQN: "nqn.2000-02.com.mikrotik:pvc-test-1",
			AllowHostName: "nqn.2014-08.org.nvmexpress:uuid:1", MountPoint: "pvc-test-1", Size: 53687091200, Export: true, Port: 4420}, true},
		{"file-size rounded up agrees", with(listDisks[1], "size", "1 610 612 735", "file-size", "1.5GiB"), Disk{
			Slot: "pvc-test-2", Type: "file", FilePath: "/storage-pool/test2.img", Size: 1610612735}, true},
		{"exact file-size in bytes agrees", with(listDisks[1], "size", "512", "file-size", "512B"), Disk{
			Slot: "pvc-test-2", Type: "file", FilePath: "/storage-pool/test2.img", Size: 512}, true},
		{"missing size", without(listDisks[0], "size"), Disk{}, false},
		{"size printed in human units", with(listDisks[0], "size", "50.0GiB"), Disk{}, false},
		{"size grouped wrongly", with(listDisks[0], "size", "53 687 091200"), Disk{}, false},
		{"size that disagrees with file-size", with(listDisks[0], "file-size", "49.9GiB"), Disk{}, false},
		{"size one GiB short of a truncated file-size", with(listDisks[1], "size", "1 073 741 824", "file-size", "2GiB"), Disk{}, false},
		{"one byte off an exact file-size", with(listDisks[1], "size", "513", "file-size", "512B"), Disk{}, false},
		{"unreadable file-size", with(listDisks[0], "file-size", "50.0 GiB"), Disk{}, false},
		{"file disk without a path", without(listDisks[0], "file-path"), Disk{}, false},
		{"path that swallowed a word", with(listDisks[0], "file-path", "/storage-pool/test1.img nvme-t"), Disk{}, false},
		{"slot that swallowed a word", with(listDisks[0], "slot", "pvc-test-1 x"), Disk{}, false},
		{"no slot", without(listDisks[0], "slot"), Disk{}, false},
		{"exported without a port", without(listDisks[0], "nvme-tcp-server-port"), Disk{}, false},
		{"port with junk", with(listDisks[0], "nvme-tcp-server-port", "4420 x"), Disk{}, false},
		{"port out of range", with(listDisks[0], "nvme-tcp-server-port", "65536"), Disk{}, false},
		{"export neither yes nor no", with(listDisks[0], "nvme-tcp-export", "maybe"), Disk{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseDisk(tt.in)
			if (err == nil) != tt.ok || got != tt.want {
				t.Errorf("got %+v, %v; want %+v, ok=%v", got, err, tt.want, tt.ok)
			}
		})
	}
}

func TestParseFile(t *testing.T) {
	recs, err := ParseRecords(fixture(t, "print-file-dates.txt"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		in   Record
		want File
		ok   bool
	}{
		{"name without a leading slash", recs[0], File{Name: "/storage-pool/metal-csi/pvc-a.img", Type: ".img file"}, true},
		{"quoted name with escapes", recs[1], File{Name: `/storage-pool/odd "name" $x?\.img`, Type: ".img file"}, true},
		{"name with a leading slash", record("name", "/a/b", "type", "directory"), File{Name: "/a/b", Type: "directory"}, true},
		{"no name", record("type", "directory"), File{}, false},
		{"root only", record("name", "/"), File{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseFile(tt.in)
			if (err == nil) != tt.ok || got != tt.want {
				t.Errorf("got %+v, %v; want %+v, ok=%v", got, err, tt.want, tt.ok)
			}
		})
	}
}

func TestParsePool(t *testing.T) {
	recs, err := ParseRecords(fixture(t, "print-pool.txt"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		in   Record
		want Pool
		ok   bool
	}{
		{"pool fixture", recs[0], Pool{Size: 7681574174720, Free: 5632440000000}, true},
		{"full pool", record("size", "4 096", "free", "0"), Pool{Size: 4096}, true},
		{"no free", record("size", "4 096"), Pool{}, false},
		{"no size", record("free", "0"), Pool{}, false},
		{"free in human units", record("size", "4 096", "free", "1.0KiB"), Pool{}, false},
		{"more free than size", record("size", "4 096", "free", "4 097"), Pool{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePool(tt.in)
			if (err == nil) != tt.ok || got != tt.want {
				t.Errorf("got %+v, %v; want %+v, ok=%v", got, err, tt.want, tt.ok)
			}
		})
	}
}

// The parser must not merely fail safe on wrapped output: from the narrowest
// console on which a key can be told from a value cut at the width (35
// columns with RouterOS' 15-column indent) to the widest, in both wrapping
// styles, with and without an index, a disk reads back exactly. Narrower
// consoles may make it refuse, never misread.
func TestWrappedDisksReadBackExactlyAtEveryWidth(t *testing.T) {
	disks := []diskView{
		{slot: "pvc-ccdecfad-a8bf-572e-9120-464c4d99f12f", path: "storage-pool/metal-csi/pvc-ccdecfad-a8bf-572e-9120-464c4d99f12f.img", size: 10 << 30, port: 4420},
		{slot: "pvc-a1", path: "/storage-pool/csi/pvc-a1.img", size: 1610612736, port: 4421, quotePath: true},
		{slot: "snap-1", path: "/p/abc-def", size: 1<<30 - 1, port: 4420, noFileSize: true},
	}
	for width := 20; width <= 200; width++ {
		for _, cut := range []bool{false, true} {
			for _, prefix := range []string{"", " 0  "} {
				for _, d := range disks {
					c := console{width: width, indent: 15, cut: cut}
					out := c.print(flagsHeader, c.item(prefix, d.fields()))
					got, err := readDisk(out)
					want := Disk{Slot: d.slot, Type: "file", FilePath: "/" + strings.TrimPrefix(d.path, "/"),
						NQN: "nqn.2000-02.com.mikrotik:" + d.slot, Size: d.size, Export: true, Port: d.port}
					if err == nil && got != want || err != nil && width >= 35 {
						t.Fatalf("width %d cut=%v prefix=%q:\n%s\ngot %+v, %v\nwant %+v", width, cut, prefix, out, got, err, want)
					}
				}
			}
		}
	}
}

func readDisk(out string) (Disk, error) {
	recs, err := ParseRecords(out)
	if err != nil {
		return Disk{}, err
	}
	if len(recs) != 1 {
		return Disk{}, fmt.Errorf("%d records", len(recs))
	}
	return ParseDisk(recs[0])
}
