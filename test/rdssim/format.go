package rdssim

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// This file is everything about how output looks. The quirks reproduced here
// are the ones reported from hardware (docs/routeros.md): space-grouped
// integers, human-rounded sizes, inconsistent quoting, unquoted values with
// spaces, and wrapping at the login width that cuts values mid-word.

// prop is one property of a printed record: raw is what where/find compare
// against, shown is how print renders it.
type prop struct{ name, raw, shown string }

type record []prop

func (r record) get(name string) (string, bool) {
	for _, p := range r {
		if p.name == name {
			return p.raw, true
		}
	}
	return "", false
}

func plain(name, v string) prop  { return prop{name, v, v} }
func quoted(name, v string) prop { return prop{name, v, quoteValue(v)} }
func yesNo(name string, b bool) prop {
	if b {
		return plain(name, "yes")
	}
	return plain(name, "no")
}
func grouped(name string, n int64) prop {
	return prop{name, strconv.FormatInt(n, 10), groupDigits(n)}
}
func human(name string, n int64) prop {
	return prop{name, strconv.FormatInt(n, 10), humanSize(n)}
}

// quoteValue renders a string the way print shows quoted values.
func quoteValue(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`
}

// groupDigits writes 53687091200 as "53 687 091 200".
func groupDigits(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(' ')
		}
		b.WriteRune(c)
	}
	return b.String()
}

var binaryUnits = []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}

// humanSize renders n bytes with one decimal in the largest binary unit that
// n strictly exceeds, so exactly 1 GiB prints as "1024.0MiB" (a reported
// hardware sample) and 50 GiB as "50.0GiB".
func humanSize(n int64) string {
	if n <= 1024 {
		return strconv.FormatInt(n, 10) + "B"
	}
	v, unit := float64(n), ""
	for _, u := range binaryUnits {
		if v <= 1024 {
			break
		}
		v, unit = v/1024, u
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + unit
}

// formatRate renders bits per second in decimal units: 0bps, 12.8Mbps.
func formatRate(bps int64) string {
	if bps < 1000 {
		return strconv.FormatInt(bps, 10) + "bps"
	}
	v := float64(bps)
	unit := ""
	for _, u := range []string{"k", "M", "G", "T"} {
		if v < 1000 {
			break
		}
		v, unit = v/1000, u
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + unit + "bps"
}

// timeLayout is the last-modified format of /file; RouterOS also has a
// "jan/01/2025 00:00:00" style elsewhere, which no simulated field uses.
const timeLayout = "2006-01-02 15:04:05"

// fileDiskRecord is a file-backed disk, fields in the order seen on hardware.
func fileDiskRecord(d *diskState) record {
	return record{
		plain("type", "file"),
		quoted("slot", d.Slot),
		quoted("slot-default", ""),
		quoted("parent", ""),
		plain("fs", "-"),
		quoted("model", d.FilePath),
		grouped("size", d.FileSize),
		yesNo("mount-filesystem", d.MountFilesystem),
		yesNo("mount-read-only", false),
		yesNo("compress", false),
		plain("sector-size", "512"),
		plain("raid-master", "none"),
		yesNo("nvme-tcp-export", d.Export),
		plain("nvme-tcp-server-port", strconv.Itoa(d.Port)),
		quoted("nvme-tcp-server-nqn", d.NQN),
		quoted("nvme-tcp-server-allow-host-name", d.AllowHostName),
		yesNo("iscsi-export", false),
		yesNo("nfs-sharing", false),
		yesNo("smb-sharing", false),
		yesNo("media-sharing", false),
		plain("media-interface", "none"),
		yesNo("swap", false),
		plain("file-path", d.FilePath),
		human("file-size", d.FileSize),
		plain("file-offset", "0"),
	}
}

// poolRecord is the disk the file disks live on: its size= and free= are
// the pool's capacity.
func poolRecord(mountPoint string, size, free int64) record {
	// Rounded to the nearest percent: the hardware sample's 27% is
	// 26.7% of its size and free values.
	use := int64(0)
	if size > 0 {
		use = ((size-free)*100 + size/2) / size
	}
	return record{
		plain("type", "raid"),
		quoted("slot", mountPoint),
		quoted("slot-default", ""),
		quoted("parent", ""),
		plain("fs", "btrfs"),
		quoted("model", ""),
		grouped("size", size),
		grouped("free", free),
		prop{"use", strconv.FormatInt(use, 10), strconv.FormatInt(use, 10) + "%"},
		quoted("mount-point", mountPoint),
		yesNo("mount-filesystem", true),
		yesNo("mount-read-only", false),
		yesNo("compress", false),
		plain("sector-size", "4096"),
		plain("raid-master", "none"),
		yesNo("nvme-tcp-export", false),
		yesNo("iscsi-export", false),
		yesNo("nfs-sharing", false),
		yesNo("smb-sharing", false),
		yesNo("media-sharing", false),
		plain("media-interface", "none"),
		yesNo("swap", false),
	}
}

// diskProps is every property a /disk where or find may name.
var diskProps = propNames(fileDiskRecord(&diskState{}), poolRecord("", 0, 0))

// fileEntry is one row of /file.
type fileEntry struct {
	name     string // relative, no leading slash: storage-pool/csi/x.img
	kind     string // "disk" for a mount point, "directory", or "file"
	ext      string // ".img" for x.img
	size     int64
	modified time.Time
}

// fileRecord renders a /file row: the type of a regular file is its
// extension followed by " file", unquoted, space and all.
func fileRecord(e fileEntry) record {
	r := record{plain("name", e.name)}
	switch e.kind {
	case "file":
		r = append(r, plain("type", strings.TrimSpace(e.ext+" file")), human("size", e.size))
	default:
		r = append(r, plain("type", e.kind))
	}
	return append(r, plain("last-modified", e.modified.Format(timeLayout)))
}

var fileProps = propNames(record{plain("name", ""), plain("type", ""), plain("size", ""), plain("last-modified", "")})

func propNames(recs ...record) map[string]bool {
	names := map[string]bool{}
	for _, r := range recs {
		for _, p := range r {
			names[p.name] = true
		}
	}
	return names
}

// layout is how a menu's print detail lays out records: the gap after the
// index and the indentation of continuation lines.
type layout struct {
	header string // printed first, even when nothing matched
	gap    string
	indent int
}

var (
	diskLayout = layout{
		header: "Flags: X - DISABLED; E - EMPTY; B - BLOCK-DEVICE; M - MOUNTED; F - FORMATTING",
		gap:    "  ",
		indent: 15,
	}
	fileLayout = layout{gap: "   ", indent: 5}
)

// MinWidth is the narrowest console the simulator lays out for; a narrower
// login width is raised to it so continuation lines keep room for values.
const MinWidth = 40

// renderRecords lays out records for a console width columns wide, one
// string per line. Fields are packed onto a line while the line stays
// shorter than the width (a line of exactly the width is never packed,
// matching the hardware samples); a field that does not fit starts a new
// continuation line; a field that does not fit even there is cut hard at
// exactly the width, mid-value, and continues on the next continuation line.
// A blank line follows every record.
func renderRecords(recs []record, l layout, width int) []string {
	var lines []string
	if l.header != "" {
		lines = append(lines, l.header)
	}
	width = max(width, MinWidth)
	idxWidth := max(2, len(strconv.Itoa(len(recs)-1)))
	for i, r := range recs {
		prefix := fmt.Sprintf("%*d%s", idxWidth, i, l.gap)
		indent := strings.Repeat(" ", max(l.indent, len(prefix)))
		cur, placed := prefix, false
		for _, p := range r {
			text := p.name + "=" + p.shown
			if placed && len(cur)+1+len(text) < width {
				cur += " " + text
				continue
			}
			if placed {
				lines = append(lines, cur)
				cur = indent
			}
			cur += text
			placed = true
			for len(cur) > width {
				lines = append(lines, cur[:width])
				cur = indent + cur[width:]
			}
		}
		lines = append(lines, cur, "")
	}
	return lines
}

// renderMonitor lays out a monitor command's "key: value" lines with the
// keys right-aligned, as RouterOS monitors do.
func renderMonitor(kv [][2]string) []string {
	w := 0
	for _, p := range kv {
		w = max(w, len(p[0]))
	}
	lines := make([]string, 0, len(kv))
	for _, p := range kv {
		lines = append(lines, fmt.Sprintf("%*s: %s", w+2, p[0], p[1]))
	}
	return lines
}
