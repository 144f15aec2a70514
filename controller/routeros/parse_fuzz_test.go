package routeros

import (
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func fixtureOutputs(f *testing.F) []string {
	names, err := filepath.Glob(filepath.Join("testdata", "print-*.txt"))
	if err != nil || len(names) == 0 {
		f.Fatalf("no fixtures: %v", err)
	}
	var outs []string
	for _, n := range names {
		outs = append(outs, fixture(f, filepath.Base(n)))
	}
	return outs
}

// printedBytes reports whether v is how RouterOS prints n.
func printedBytes(v string, n int64) bool {
	return v == groupDigits(n) || v == strconv.FormatInt(n, 10)
}

func FuzzParseRecords(f *testing.F) {
	for _, out := range fixtureOutputs(f) {
		f.Add(out)
	}
	f.Fuzz(func(t *testing.T, out string) {
		recs, err := ParseRecords(out)
		if err != nil {
			return
		}
		for _, r := range recs {
			if len(r.Keys) == 0 || len(r.Keys) != len(r.Fields) {
				t.Fatalf("keys %q do not match fields %q", r.Keys, r.Fields)
			}
			for _, k := range r.Keys {
				if _, ok := r.Fields[k]; !ok || keyLen(k+"=") != len(k) {
					t.Fatalf("bad key %q in %q", k, r.Keys)
				}
			}
			if d, err := ParseDisk(r); err == nil {
				if !printedBytes(r.Fields["size"], d.Size) {
					t.Fatalf("size=%q read as %d", r.Fields["size"], d.Size)
				}
				if !strings.HasPrefix(d.FilePath, "/") && d.FilePath != "" {
					t.Fatalf("path %q without a leading slash", d.FilePath)
				}
			}
			if p, err := ParsePool(r); err == nil && (!printedBytes(r.Fields["size"], p.Size) || !printedBytes(r.Fields["free"], p.Free)) {
				t.Fatalf("pool %q read as %+v", r.Fields, p)
			}
			if fl, err := ParseFile(r); err == nil && !strings.HasPrefix(fl.Name, "/") {
				t.Fatalf("file name %q without a leading slash", fl.Name)
			}
		}
	})
}

func FuzzParseBytes(f *testing.F) {
	for _, s := range []string{"0", "4096", "53 687 091 200", "1  000", "53 68 7", "50.0GiB", "512B", "007", "9 223 372 036 854 775 808"} {
		f.Add(s)
	}
	for _, out := range fixtureOutputs(f) {
		recs, _ := ParseRecords(out)
		for _, r := range recs {
			for _, k := range []string{"size", "free", "file-size"} {
				if v, ok := r.Fields[k]; ok {
					f.Add(v)
				}
			}
		}
	}
	f.Fuzz(func(t *testing.T, v string) {
		n, err := ParseBytes(v)
		if err == nil && (n < 0 || !printedBytes(v, n)) {
			t.Fatalf("ParseBytes(%q) = %d", v, n)
		}
		if err != nil && n != 0 {
			t.Fatalf("ParseBytes(%q) = %d with error %v", v, n, err)
		}
		if value, prec, err := ParseHumanSize(v); err == nil && (value < 0 || math.IsInf(value, 0) || !(prec > 0)) {
			t.Fatalf("ParseHumanSize(%q) = %v, %v", v, value, prec)
		}
	})
}

const (
	pathBytes       = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/"
	quotedPathBytes = pathBytes + `"\$? `
)

// fuzzPath turns arbitrary bytes into a path RouterOS could print: unquoted
// paths hold no character RouterOS would quote.
func fuzzPath(raw string, quoted, slash bool) string {
	alphabet := pathBytes
	if quoted {
		alphabet = quotedPathBytes
	}
	var b strings.Builder
	for i := 0; i < len(raw) && i < 300; i++ {
		c := raw[i]
		if strings.IndexByte(alphabet, c) < 0 {
			c = alphabet[int(c)%len(alphabet)]
		}
		b.WriteByte(c)
	}
	p := strings.TrimLeft(b.String(), "/")
	if p == "" {
		p = "x"
	}
	if slash {
		p = "/" + p
	}
	return p
}

// FuzzDiskRoundTrip prints a disk the way RouterOS does, at any width and in
// either wrapping style, and reads it back: the exact size, path, slot, NQN
// and port, or an error, never a different value.
func FuzzDiskRoundTrip(f *testing.F) {
	for _, out := range fixtureOutputs(f) {
		recs, _ := ParseRecords(out)
		for _, r := range recs {
			if d, err := ParseDisk(r); err == nil && d.FilePath != "" {
				for _, style := range []uint8{0, 0x08, 0x3f, 0x7f} {
					f.Add(uint64(d.Size), d.FilePath, uint8(80-20), style)
				}
			}
		}
	}
	f.Fuzz(func(t *testing.T, size uint64, rawPath string, width, style uint8) {
		bit := func(n uint) bool { return style&(1<<n) != 0 }
		d := diskView{
			slot:       "pvc-" + strconv.FormatUint(size, 36),
			size:       int64(size % uint64(MaxSize+1)),
			port:       4420 + int(width),
			quotePath:  bit(0),
			noFileSize: bit(1),
		}
		d.path = fuzzPath(rawPath, d.quotePath, bit(2))
		c := console{width: 20 + int(width)%181, indent: 15, cut: bit(3), crlf: bit(4)}
		prefix, header := "", ""
		if bit(5) {
			prefix = " 0  "
		}
		if bit(6) {
			header = flagsHeader
		}
		out := c.print(header, c.item(prefix, d.fields()))
		got, err := readDisk(out)
		if err != nil {
			return
		}
		want := Disk{Slot: d.slot, Type: "file", FilePath: "/" + strings.TrimPrefix(d.path, "/"),
			NQN: "nqn.2000-02.com.mikrotik:" + d.slot, Size: d.size, Export: true, Port: d.port}
		if got != want {
			t.Fatalf("read back a different disk:\n%s\ngot  %+v\nwant %+v", out, got, want)
		}
	})
}
