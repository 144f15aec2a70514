// Package routeros speaks the RouterOS CLI of the RDS: it builds commands from
// validated values, classifies failures, and parses `print detail` output.
//
// # Reading print detail output
//
// RouterOS packs an item's key=value fields onto lines of the terminal width,
// indents continuation lines, and cuts a field that does not fit at exactly
// the width, mid-value. The client asks for a very wide console, but the
// parser neither relies on getting one nor needs to be told the width: each
// boundary between two lines of a record is a soft wrap (the next line starts
// a field: join with a space) or a hard cut (join with nothing), decided from
// the text alone.
//
// The width is inferred as the length of the longest line, trusted when two
// lines reach it or when one that does is followed by a line that cannot
// start a field; only a line of that width can end in a cut. After such a
// line the boundary is a cut when the text so far ends inside a quoted value,
// or with a word that can only be the front of a cut key ("nvme-t" +
// "cp-server-port=4420"), or when the next line cannot begin a field. It is a
// wrap when the text ends with a closing quote or the next line begins with
// key= (the key possibly cut over several lines). After a shorter line it is
// always a wrap, and an error if the next line cannot begin a field. A line of
// only letters, digits and '-' that could continue a value as well as start a
// cut key is undecidable and an error; it takes a console narrower than about
// 35 columns or an odd value to print one.
//
// The misreadings that remain possible (a value holding "word=" cut just
// before it, a multi-word value ending in a lower-case word at the width) can
// only lose a key or glue a word onto a value, and ParseDisk turns those into
// errors rather than wrong values: size= is required and strictly grouped,
// file-size= must agree with it, a file disk needs its path and an exported
// one its port, and slot, path and NQN may not contain spaces.
package routeros

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Record is one item of `print detail` output, values unquoted and unescaped.
type Record struct {
	Keys   []string // in the order printed
	Fields map[string]string
}

// ParseRecords splits `print detail` output into records. A `Flags:` header
// with nothing after it is zero records, not an error.
func ParseRecords(out string) ([]Record, error) {
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimSuffix(l, "\r")
	}
	groups := groupRecords(lines)
	w := measureWrap(lines, groups)
	recs := make([]Record, 0, len(groups))
	for _, g := range groups {
		text, err := w.join(lines, g)
		if err != nil {
			return nil, err
		}
		rec, err := parseFields(text)
		if err != nil {
			return nil, fmt.Errorf("routeros: record at line %d: %w", g[0]+1, err)
		}
		recs = append(recs, rec)
	}
	return recs, nil
}

// groupRecords returns [first, end) line ranges, one per record. A record
// starts after a blank line or header, or at a line indented no deeper than
// the current record's first line: continuation lines, including the rest of a
// cut value that happens to begin with digits, are always indented deeper.
func groupRecords(lines []string) [][2]int {
	var groups [][2]int
	open, header := false, false
	firstIndent := 0
	for i, l := range lines {
		if strings.TrimSpace(l) == "" {
			open, header = false, false
			continue
		}
		ind := indentOf(l)
		if strings.HasPrefix(l[ind:], "Flags:") {
			open, header = false, true
			continue
		}
		if header {
			// The flag legend may itself wrap; its lines never start with key=.
			if c := recordContent(l); keyLen(c) == 0 && !strings.HasPrefix(c, ";;;") {
				continue
			}
			header = false
		}
		if open && ind > firstIndent {
			groups[len(groups)-1][1] = i + 1
			continue
		}
		groups = append(groups, [2]int{i, i + 1})
		open, firstIndent = true, ind
	}
	return groups
}

// recordContent strips a record's first line of its index and flag letters.
func recordContent(l string) string {
	s := strings.TrimLeft(l, " ")
	if n := spanOf(s, asciiDigit); n > 0 && (n == len(s) || s[n] == ' ') {
		s = strings.TrimLeft(s[n:], " ")
	}
	for {
		n := spanOf(s, asciiUpper)
		if n == 0 || n < len(s) && s[n] != ' ' {
			return s
		}
		s = strings.TrimLeft(s[n:], " ")
	}
}

type wrap struct {
	width  int // inferred terminal width; 0 when no line is known to be cut
	indent int // indentation of continuation lines
}

func measureWrap(lines []string, groups [][2]int) wrap {
	longest, atLongest := 0, 0
	for _, l := range lines {
		switch n := utf8.RuneCountInString(l); {
		case strings.TrimSpace(l) == "":
		case n > longest:
			longest, atLongest = n, 1
		case n == longest:
			atLongest++
		}
	}
	w := wrap{indent: -1}
	for _, g := range groups {
		for i := g[0] + 1; i < g[1]; i++ {
			if ind := indentOf(lines[i]); w.indent < 0 || ind < w.indent {
				w.indent = ind
			}
		}
	}
	cutSeen := false
	for _, g := range groups {
		for i := g[0] + 1; i < g[1]; i++ {
			if utf8.RuneCountInString(lines[i-1]) == longest && keyLen(lines[i][w.indent:]) == 0 {
				cutSeen = true
			}
		}
	}
	if atLongest >= 2 || cutSeen {
		w.width = longest
	}
	return w
}

// join rebuilds the one logical line of fields a record was wrapped from.
func (w wrap) join(lines []string, g [2]int) (string, error) {
	starts := w.fieldStarts(lines, g)
	var j joined
	first := recordContent(lines[g[0]])
	if c, ok := strings.CutPrefix(first, ";;;"); ok {
		first = "comment=" + strings.TrimLeft(c, " ")
	}
	j.add(first)
	for i := g[0] + 1; i < g[1]; i++ {
		prev, full, start := lines[i-1], w.full(lines[i-1]), starts[i-g[0]]
		soft := false
		switch {
		case j.inQuote:
			if !full {
				return "", fmt.Errorf("routeros: line %d: a quoted value breaks on a line shorter than the width", i)
			}
		case j.afterQuote:
			// Nothing may follow a closing quote but a new field.
			soft = true
		case full && j.keyFront:
		case !full:
			if start == notField {
				return "", fmt.Errorf("routeros: line %d: continuation is neither a new field nor the rest of a cut one", i+1)
			}
			soft = true
		case start == maybeField:
			return "", fmt.Errorf("routeros: line %d: cannot tell whether it continues a value or starts a field cut at the width", i+1)
		default:
			soft = start == isField
		}
		if soft && !strings.HasSuffix(prev, " ") {
			j.add(" ")
		}
		j.add(lines[i][w.indent:])
	}
	return string(j.text), nil
}

func (w wrap) full(line string) bool {
	return w.width > 0 && utf8.RuneCountInString(line) == w.width
}

type fieldStart int

const (
	notField fieldStart = iota
	isField
	maybeField
)

// fieldStarts tells for each continuation line of a record whether it can
// begin a field: it starts with key=, or with a key cut at the width whose
// '=' comes on a later line. It is maybeField when that depends on a later
// line that may start a field of its own, which happens when the console is
// narrower than a key or a line is all letters, digits and '-'.
func (w wrap) fieldStarts(lines []string, g [2]int) []fieldStart {
	starts := make([]fieldStart, g[1]-g[0])
	arriving := notField // what a key-like run reaching the start of the next line makes of it
	for i := g[1] - 1; i > g[0]; i-- {
		c := lines[i][w.indent:]
		var run fieldStart
		switch n := spanOf(c, isKeyByte); {
		case n < len(c) && c[n] == '=':
			run = isField
		case n < len(c), !w.full(lines[i]), i == g[1]-1:
			run = notField
		case starts[i+1-g[0]] != notField:
			run = maybeField
		default:
			run = arriving
		}
		if c != "" && asciiLower(c[0]) {
			starts[i-g[0]] = run
		}
		arriving = run
	}
	return starts
}

// joined is the text rebuilt so far, with what the next line boundary needs
// to know about how it ends. A quote opens a value only right after '=', as
// in parseFields.
type joined struct {
	text       []byte
	inQuote    bool // inside a quoted value
	escaped    bool // right after a backslash inside one
	afterQuote bool // right after a closing quote, maybe followed by spaces
	// keyFront: the last word may be the front of a key cut at the width.
	// The word is taken from the joined text, not the line, so the tail of a
	// cut path ("…/abc-def") is never mistaken for one. Words inside values
	// that look like this ("type=.img file") are rare; digits, dates and
	// paths never do.
	keyFront bool
}

func (j *joined) add(s string) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		prev := byte(' ')
		if len(j.text) > 0 {
			prev = j.text[len(j.text)-1]
		}
		j.afterQuote = j.afterQuote && c == ' '
		switch {
		case j.escaped:
			j.escaped = false
		case j.inQuote && c == '\\':
			j.escaped = true
		case j.inQuote && c == '"':
			j.inQuote, j.afterQuote = false, true
		case !j.inQuote && c == '"' && prev == '=':
			j.inQuote = true
		}
		switch {
		case c == ' ':
			j.keyFront = false
		case prev == ' ':
			j.keyFront = asciiLower(c)
		default:
			j.keyFront = j.keyFront && isKeyByte(c)
		}
		j.text = append(j.text, c)
	}
}

// keyLen returns the length of the key if s starts with key=, else 0.
func keyLen(s string) int {
	if s == "" || !asciiLower(s[0]) {
		return 0
	}
	n := spanOf(s, isKeyByte)
	if n == len(s) || s[n] != '=' {
		return 0
	}
	return n
}

// parseFields reads key=value fields. An unquoted value runs up to the next
// key=, so it may hold spaces ("53 687 091 200", "2025-11-11 14:32:41").
func parseFields(s string) (Record, error) {
	rec := Record{Fields: map[string]string{}}
	i := skipSpaces(s, 0)
	for i < len(s) {
		n := keyLen(s[i:])
		if n == 0 {
			return Record{}, fmt.Errorf("expected key=value at %q", clip(s[i:]))
		}
		key := s[i : i+n]
		i += n + 1
		var val string
		if i < len(s) && s[i] == '"' {
			v, end, err := unquoteValue(s, i)
			if err != nil {
				return Record{}, fmt.Errorf("%s: %w", key, err)
			}
			if end < len(s) && s[end] != ' ' {
				return Record{}, fmt.Errorf("%s: text right after the closing quote: %q", key, clip(s[end:]))
			}
			val, i = v, end
		} else {
			end := valueEnd(s, i)
			val, i = strings.TrimRight(s[i:end], " "), end
		}
		if _, dup := rec.Fields[key]; dup {
			return Record{}, fmt.Errorf("%s printed twice", key)
		}
		rec.Keys = append(rec.Keys, key)
		rec.Fields[key] = val
		i = skipSpaces(s, i)
	}
	if len(rec.Keys) == 0 {
		return Record{}, errors.New("no fields")
	}
	return rec, nil
}

func valueEnd(s string, i int) int {
	for j := i; j < len(s); j++ {
		if s[j] == ' ' {
			k := skipSpaces(s, j)
			if keyLen(s[k:]) > 0 {
				return k
			}
			j = k - 1
		}
	}
	return len(s)
}

// unquoteValue reads the quoted value opening at s[i], undoing RouterOS escapes.
// An escape it does not know is an error, not a guess.
func unquoteValue(s string, i int) (val string, end int, err error) {
	var b strings.Builder
	for j := i + 1; j < len(s); j++ {
		c := s[j]
		switch {
		case c == '"':
			return b.String(), j + 1, nil
		case c != '\\':
			b.WriteByte(c)
		case j+1 >= len(s):
			return "", 0, errors.New("unterminated escape")
		default:
			j++
			switch e := s[j]; e {
			case '"', '\\', '$', '?':
				b.WriteByte(e)
			case '_':
				b.WriteByte(' ')
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			default:
				// Bytes RouterOS will not print raw come as two upper-case hex digits.
				if j+1 >= len(s) || !upperHexDigit(e) || !upperHexDigit(s[j+1]) {
					return "", 0, fmt.Errorf("unknown escape \\%c", e)
				}
				v, _ := strconv.ParseUint(s[j:j+2], 16, 8)
				b.WriteByte(byte(v))
				j++
			}
		}
	}
	return "", 0, errors.New("unterminated quoted value")
}

// ParseBytes parses an exact integer byte count as RouterOS prints it
// ("53 687 091 200", "0", "4096"): plain digits or strict groups of three,
// never a human unit ("50.0GiB" is an error).
func ParseBytes(v string) (int64, error) {
	groups := strings.Split(v, " ")
	ok := v == "0" || v != "" && v[0] != '0'
	for i, g := range groups {
		ok = ok && g != "" && spanOf(g, asciiDigit) == len(g) &&
			(len(groups) == 1 || i == 0 && len(g) <= 3 || i > 0 && len(g) == 3)
	}
	if !ok {
		return 0, fmt.Errorf("routeros: %q is not an exact byte count", clip(v))
	}
	n, err := strconv.ParseInt(strings.Join(groups, ""), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("routeros: byte count %q out of range", clip(v))
	}
	return n, nil
}

var humanUnits = []struct {
	suffix string
	bytes  float64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"PiB", 1 << 50}, {"EiB", 1 << 60}, {"B", 1},
}

// ParseHumanSize parses a rounded size ("50.0GiB", "1024.0MiB", "5.5TiB",
// "512B") into its value in bytes and the place value, in bytes, of its last
// printed digit. An exact size s agrees with the figure when
// |s - value| < precision, which holds whether RouterOS rounded or truncated.
func ParseHumanSize(v string) (value, precision float64, err error) {
	for _, u := range humanUnits {
		num, ok := strings.CutSuffix(v, u.suffix)
		if !ok {
			continue
		}
		whole, frac, dot := strings.Cut(num, ".")
		if whole == "" || spanOf(whole, asciiDigit) != len(whole) || dot && (frac == "" || spanOf(frac, asciiDigit) != len(frac)) {
			break
		}
		f, err := strconv.ParseFloat(num, 64)
		if err != nil || math.IsInf(f*u.bytes, 0) {
			break
		}
		return f * u.bytes, u.bytes / math.Pow10(len(frac)), nil
	}
	return 0, 0, fmt.Errorf("routeros: %q is not a size", clip(v))
}

// Disk is a /disk record as the controller needs it.
type Disk struct {
	Slot, Type, FilePath, NQN, AllowHostName, MountPoint string // FilePath always with a leading "/"
	Size                                                 int64  // exact bytes from size=
	Export                                               bool   // nvme-tcp-export=yes
	Port                                                 int    // nvme-tcp-server-port (0 if absent)
}

// ParseDisk reads a /disk record. It fails rather than guess: size= is
// required, must agree with file-size= when both are printed, and an exported
// disk must print its port.
func ParseDisk(r Record) (Disk, error) {
	f := r.Fields
	d := Disk{
		Slot:          f["slot"],
		Type:          f["type"],
		NQN:           f["nvme-tcp-server-nqn"],
		AllowHostName: f["nvme-tcp-server-allow-host-name"],
		MountPoint:    f["mount-point"],
	}
	if d.Slot == "" {
		return Disk{}, errors.New("routeros: disk record without slot=")
	}
	fail := func(format string, a ...any) (Disk, error) {
		return Disk{}, fmt.Errorf("routeros: disk %q: "+format, append([]any{clip(d.Slot)}, a...)...)
	}
	size, ok := f["size"]
	if !ok {
		return fail("no size=")
	}
	var err error
	if d.Size, err = ParseBytes(size); err != nil {
		return fail("%w", err)
	}
	if human, ok := f["file-size"]; ok {
		b, prec, err := ParseHumanSize(human)
		if err != nil {
			return fail("file-size: %w", err)
		}
		if math.Abs(float64(d.Size)-b) >= prec {
			return fail("size=%d disagrees with file-size=%s", d.Size, human)
		}
	}
	if p := f["file-path"]; p != "" {
		d.FilePath = "/" + strings.TrimPrefix(p, "/")
	} else if d.Type == "file" {
		return fail("file disk without file-path=")
	}
	// None of these can hold a space; one that does has swallowed a word
	// from a wrapped line.
	for _, v := range []string{d.Slot, d.FilePath, d.NQN} {
		if strings.ContainsAny(v, " \t\r\n") {
			return fail("value with a space: %q", clip(v))
		}
	}
	switch e := f["nvme-tcp-export"]; e {
	case "yes":
		d.Export = true
	case "", "no":
	default:
		return fail("nvme-tcp-export=%q", clip(e))
	}
	if p, ok := f["nvme-tcp-server-port"]; ok {
		if p == "" || len(p) > 5 || spanOf(p, asciiDigit) != len(p) {
			return fail("nvme-tcp-server-port=%q", clip(p))
		}
		if d.Port, _ = strconv.Atoi(p); d.Port > 65535 {
			return fail("nvme-tcp-server-port=%s", p)
		}
	}
	if d.Export && d.Port == 0 {
		return fail("exported without a port")
	}
	return d, nil
}

// File is a /file record. Name always has a leading "/" (RouterOS prints none).
type File struct{ Name, Type string }

// ParseFile reads a /file record.
func ParseFile(r Record) (File, error) {
	name := r.Fields["name"]
	if strings.Trim(name, "/") == "" {
		return File{}, errors.New("routeros: file record without name=")
	}
	return File{Name: "/" + strings.TrimPrefix(name, "/"), Type: r.Fields["type"]}, nil
}

// Pool is the capacity of the disk the volumes live on.
type Pool struct{ Size, Free int64 }

// ParsePool reads size= and free= from the pool's /disk record.
func ParsePool(r Record) (Pool, error) {
	var p Pool
	for _, f := range []struct {
		key string
		dst *int64
	}{{"size", &p.Size}, {"free", &p.Free}} {
		v, ok := r.Fields[f.key]
		if !ok {
			return Pool{}, fmt.Errorf("routeros: pool record without %s=", f.key)
		}
		n, err := ParseBytes(v)
		if err != nil {
			return Pool{}, fmt.Errorf("routeros: pool %s: %w", f.key, err)
		}
		*f.dst = n
	}
	if p.Free > p.Size {
		return Pool{}, fmt.Errorf("routeros: pool free=%d exceeds size=%d", p.Free, p.Size)
	}
	return p, nil
}

func indentOf(l string) int          { return len(l) - len(strings.TrimLeft(l, " ")) }
func skipSpaces(s string, i int) int { return i + indentOf(s[i:]) }

func spanOf(s string, ok func(byte) bool) int {
	n := 0
	for n < len(s) && ok(s[n]) {
		n++
	}
	return n
}

func asciiDigit(c byte) bool    { return '0' <= c && c <= '9' }
func asciiLower(c byte) bool    { return 'a' <= c && c <= 'z' }
func asciiUpper(c byte) bool    { return 'A' <= c && c <= 'Z' }
func isKeyByte(c byte) bool     { return asciiLower(c) || asciiDigit(c) || c == '-' }
func upperHexDigit(c byte) bool { return asciiDigit(c) || 'A' <= c && c <= 'F' }

// clip keeps error messages short whatever RouterOS printed.
func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
