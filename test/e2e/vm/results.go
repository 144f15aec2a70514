package vm

import (
	"regexp"
	"strconv"
	"strings"
)

// GuestTest is one top-level test of the guest binary.
type GuestTest struct {
	Name string
	// Status is PASS, FAIL or SKIP; empty when the test started but never
	// reported, because the binary panicked, timed out or the guest died.
	Status string
	// Elapsed is the duration the guest reported, "(1.23s)".
	Elapsed string
	// Output is everything printed while it ran, its subtests included,
	// kernel messages too.
	Output []string
}

// GuestRun is what one boot reported.
type GuestRun struct {
	// Kernel is the KernelMarker line's text: uname -r and multipath.
	Kernel string
	// ExitCode is the test binary's, or -1 when the end marker is missing.
	ExitCode int
	Tests    []*GuestTest
	// Lines is the console with kernel messages moved out of the lines
	// they split.
	Lines []string
}

// A printk timestamp; the kernel writes its messages into the console in
// the middle of whatever line user space was writing.
var printkRE = regexp.MustCompile(`(?m)^([^\n]*?)(\[ *[0-9]+\.[0-9]{6}\] [^\n]*)\n`)

// unsplit moves every kernel message that landed inside a line to its own
// line before it, joining the halves of the line it split.
func unsplit(s string) string {
	for range 8 {
		next := printkRE.ReplaceAllStringFunc(s, func(m string) string {
			sub := printkRE.FindStringSubmatch(m)
			if sub[1] == "" {
				return m
			}
			return sub[2] + "\n" + sub[1]
		})
		if next == s {
			break
		}
		s = next
	}
	return s
}

var (
	endRE    = regexp.MustCompile(regexp.QuoteMeta(EndMarker) + `([0-9]+)`)
	resultRE = regexp.MustCompile(`^--- (PASS|FAIL|SKIP): (\S+)(?: (\([0-9.]+s\)))?`)
	switchRE = regexp.MustCompile(`^=== (RUN|CONT|NAME|PAUSE)\s+(\S+)`)
)

// ParseConsole reads the guest's `go test -v` output out of its console.
func ParseConsole(console string) *GuestRun {
	r := &GuestRun{ExitCode: -1}
	console = unsplit(strings.ReplaceAll(console, "\r", ""))
	r.Lines = strings.Split(strings.TrimRight(console, "\n"), "\n")
	byName := map[string]*GuestTest{}
	var cur *GuestTest
	for _, line := range r.Lines {
		// SeaBIOS's terminal escapes share the first line with the marker.
		if i := strings.Index(line, KernelMarker); i >= 0 {
			r.Kernel = line[i+len(KernelMarker):]
			continue
		}
		if m := endRE.FindStringSubmatch(line); m != nil {
			r.ExitCode, _ = strconv.Atoi(m[1])
			cur = nil
			continue
		}
		if m := switchRE.FindStringSubmatch(line); m != nil {
			top, _, _ := strings.Cut(m[2], "/")
			cur = byName[top]
			if cur == nil {
				cur = &GuestTest{Name: top}
				byName[top] = cur
				r.Tests = append(r.Tests, cur)
			}
		}
		if cur != nil {
			cur.Output = append(cur.Output, line)
		}
		// Only an unindented result line is a top-level test's verdict.
		if m := resultRE.FindStringSubmatch(line); m != nil {
			if t := byName[m[2]]; t != nil {
				t.Status, t.Elapsed = m[1], m[3]
				cur = nil
			}
		}
	}
	return r
}

// Tail is the last n lines of the console.
func (r *GuestRun) Tail(n int) string {
	l := r.Lines
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
