//go:build faultinject

package fault

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Enabled tells whether this build can crash at a point.
const Enabled = true

// Armed tells whether the environment names point.
func Armed(point string) bool { return os.Getenv(Env) == point }

// Crash kills the process and its children with SIGKILL if the environment
// names point. Children are killed first: they run in process groups of
// their own (kernel/command), so a signal to ours would miss them.
func Crash(point string) {
	if !Armed(point) {
		return
	}
	fmt.Fprintf(os.Stderr, "FAULT: killed at %s\n", point)
	self := os.Getpid()
	for _, pid := range children(self) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	_ = syscall.Kill(self, syscall.SIGKILL)
	select {} // the signal is on its way
}

// children lists the processes whose parent is pid, from /proc.
func children(pid int) []int {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var out []int
	for _, s := range stats {
		b, err := os.ReadFile(s)
		if err != nil {
			continue
		}
		// "pid (comm) state ppid …": comm may hold spaces and parentheses.
		rest := string(b)
		if i := strings.LastIndexByte(rest, ')'); i >= 0 {
			rest = rest[i+1:]
		}
		f := strings.Fields(rest)
		if len(f) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(f[1]); err == nil && ppid == pid {
			if child, err := strconv.Atoi(filepath.Base(filepath.Dir(s))); err == nil {
				out = append(out, child)
			}
		}
	}
	return out
}
