package rdssim

import (
	"context"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// engine runs parsed commands against the store. mu serialises commands, as
// the RDS applies them one at a time; streaming commands take it per update.
type engine struct {
	mu       sync.Mutex
	st       *store
	exporter Exporter
	identity string
	// copyDelay > 0 copies in the background (Config.CopyDelay); the
	// copies run under ctx and are waited for through wg.
	copyDelay time.Duration
	ctx       context.Context
	wg        *sync.WaitGroup
}

// run executes one command line. emit receives output lines (without line
// endings) as they are produced; a returned error is the text RouterOS would
// print instead.
func (e *engine) run(ctx context.Context, line string, width int, emit func([]string)) *cmdError {
	cmd, err := parse(line)
	if err != nil {
		return err
	}
	if cmd.menu == "disk" && cmd.verb == "monitor-traffic" {
		return e.diskMonitor(ctx, cmd, emit)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	var lines []string
	switch cmd.menu + " " + cmd.verb {
	case "disk add":
		err = e.diskAdd(cmd)
	case "disk set":
		err = e.diskSet(cmd)
	case "disk remove":
		err = e.diskRemove(cmd)
	case "disk print":
		lines, err = e.diskPrint(cmd, width)
	case "file print":
		lines, err = e.filePrint(cmd, width)
	case "file remove":
		err = e.fileRemove(cmd)
	case "system identity print":
		if len(cmd.items) > 0 {
			return failf(ErrTextEndOfCommand, cmd.items[0].col)
		}
		lines = renderMonitor([][2]string{{"name", e.identity}})
	default:
		return failf(ErrTextNotSimulated, cmd.menu+" "+cmd.verb)
	}
	if err != nil {
		return err
	}
	emit(lines)
	return nil
}

// args collects name=value arguments. RouterOS reads unknown names and stray
// words as the point where the command should have ended; a repeated name is
// refused the same way rather than guessing which one wins.
func args(items []item, allowed ...string) (map[string]item, *cmdError) {
	got := map[string]item{}
	for _, it := range items {
		switch {
		case it.kind != itemPair || !slices.Contains(allowed, it.name):
			return nil, failf(ErrTextEndOfCommand, it.col)
		case it.regex:
			return nil, failf(ErrTextSyntax, it.col+len(it.name))
		}
		if _, dup := got[it.name]; dup {
			return nil, failf(ErrTextEndOfCommand, it.col)
		}
		got[it.name] = it
	}
	return got, nil
}

// selector splits "set [find ...] a=b" into the find and the rest.
// Item numbers from an earlier print are not simulated: the driver never
// keeps a print's numbering across sessions.
func selector(cmd *command) ([]cond, []item, *cmdError) {
	if len(cmd.items) == 0 {
		return nil, nil, failf(ErrTextMissingValue, "numbers")
	}
	first := cmd.items[0]
	if first.kind != itemFind {
		return nil, nil, failf(ErrTextNotSimulated, "items named other than by [find ...]")
	}
	return first.find, cmd.items[1:], nil
}

// printConds reads "detail [where cond...]". Print without detail (the table
// form) is not simulated.
func printConds(cmd *command) ([]cond, *cmdError) {
	if len(cmd.items) == 0 || cmd.items[0].kind != itemWord || cmd.items[0].name != "detail" {
		return nil, failf(ErrTextNotSimulated, "print without detail")
	}
	rest := cmd.items[1:]
	if len(rest) == 0 {
		return nil, nil
	}
	if rest[0].kind != itemWord || rest[0].name != "where" {
		return nil, failf(ErrTextEndOfCommand, rest[0].col)
	}
	if len(rest) == 1 {
		return nil, failf(ErrTextSyntax, cmd.end)
	}
	var conds []cond
	for _, it := range rest[1:] {
		if it.kind != itemPair || it.find != nil {
			return nil, failf(ErrTextSyntax, it.col)
		}
		conds = append(conds, cond{prop: it.name, regex: it.regex, value: it.value, col: it.col})
	}
	return conds, nil
}

// match returns the indexes of the records that satisfy every condition.
// A property the menu does not have is a syntax error; a record that lacks a
// property the menu has simply does not match.
func match(recs []record, conds []cond, known map[string]bool) ([]int, *cmdError) {
	res := make([]*regexp.Regexp, len(conds))
	for i, c := range conds {
		if !known[c.prop] {
			return nil, failf(ErrTextSyntax, c.col)
		}
		if c.regex {
			re, err := regexp.Compile(c.value)
			if err != nil {
				return nil, fail(ErrTextBadRegex)
			}
			res[i] = re
		}
	}
	var hits []int
	for i, r := range recs {
		ok := true
		for j, c := range conds {
			v, has := r.get(c.prop)
			switch {
			case !has:
				ok = false
			case res[j] != nil:
				ok = res[j].MatchString(v)
			default:
				ok = v == c.value
			}
			if !ok {
				break
			}
		}
		if ok {
			hits = append(hits, i)
		}
	}
	return hits, nil
}

func pick(recs []record, idx []int) []record {
	out := make([]record, 0, len(idx))
	for _, i := range idx {
		out = append(out, recs[i])
	}
	return out
}

func parseYesNo(it item) (bool, *cmdError) {
	switch it.value {
	case "yes":
		return true, nil
	case "no":
		return false, nil
	}
	return false, failf(ErrTextInvalidValue, it.name)
}

// maxSize bounds a size so it stays exact in an int64 after the unit.
const maxSize = int64(1) << 50

// parseSize reads a size in bytes, or a whole number with a binary unit
// letter (10G = 10 GiB). Fractions ("1.5G") are refused: the earlier driver
// lost data by rounding sizes to units.
func parseSize(it item) (int64, *cmdError) {
	s := it.value
	mult := int64(1)
	if s != "" {
		if i := strings.IndexByte("kKMGT", s[len(s)-1]); i >= 0 {
			mult = []int64{1 << 10, 1 << 10, 1 << 20, 1 << 30, 1 << 40}[i]
			s = s[:len(s)-1]
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || strings.HasPrefix(s, "+") || n > maxSize/mult {
		return 0, failf(ErrTextInvalidValue, it.name)
	}
	return n * mult, nil
}

func parsePort(it item) (int, *cmdError) {
	n, err := strconv.Atoi(it.value)
	if err != nil || n < 1 || n > 65535 || strings.HasPrefix(it.value, "+") {
		return 0, failf(ErrTextInvalidValue, it.name)
	}
	return n, nil
}

// sleepCtx waits d or until ctx ends, and reports whether d elapsed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
