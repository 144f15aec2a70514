//go:build faultinject

package fault

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
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

// CrashAfterPartialWrite, when point is armed, leaves device the way an
// mkfs killed after its first writes does (bytes in the first MiB, no
// superblock: 64 KiB of 0xa5 at 64 KiB, synced) and crashes. The device is
// written instead of running mkfs, so that the state is the same on every
// run rather than depending on how far mkfs got.
func CrashAfterPartialWrite(point, device string) {
	if !Armed(point) {
		return
	}
	f, err := os.OpenFile(device, os.O_WRONLY, 0)
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAULT: %s: %v\n", point, err)
		return
	}
	block := make([]byte, 64<<10)
	for i := range block {
		block[i] = 0xa5
	}
	if _, err := f.WriteAt(block, 64<<10); err != nil || f.Sync() != nil {
		fmt.Fprintf(os.Stderr, "FAULT: %s: write: %v\n", point, err)
		return
	}
	Crash(point)
}

// CrashWhileRunning, when point is armed, starts name with args as a child
// (in its own process group, as kernel/command does), waits until it runs
// name (it has exec'd), and crashes: the child dies with the agent, wherever
// it got to. The caller would have run the same command next.
func CrashWhileRunning(point, name string, args ...string) {
	if !Armed(point) {
		return
	}
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "FAULT: %s: %v\n", point, err)
		return
	}
	comm := "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/comm"
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		// A child that already exited stays a zombie (never waited for),
		// with its comm readable: the check cannot miss it.
		if b, err := os.ReadFile(comm); err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), filepath.Base(name)[:min(len(filepath.Base(name)), 15)]) {
			Crash(point)
		}
	}
	fmt.Fprintf(os.Stderr, "FAULT: %s: %s never ran\n", point, name)
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
