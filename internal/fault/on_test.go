//go:build faultinject

package fault

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCrashKillsTheProcessAndItsChildren runs this test binary again as a
// child that starts a sleeping grandchild and reaches a point: the point
// named in the environment kills both, another point kills neither.
func TestCrashKillsTheProcessAndItsChildren(t *testing.T) {
	if os.Getenv("FAULT_TEST_CHILD") != "" {
		sleeper := exec.Command("sleep", "60")
		sleeper.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := sleeper.Start(); err != nil {
			os.Exit(3)
		}
		_ = os.WriteFile(os.Getenv("FAULT_TEST_CHILD"), []byte(strconv.Itoa(sleeper.Process.Pid)), 0o600)
		Crash(StageRecorded)
		_ = sleeper.Process.Kill()
		os.Exit(0)
	}
	for _, tc := range []struct {
		armed  string
		killed bool
	}{{StageRecorded, true}, {StageMounted, false}} {
		pidFile := t.TempDir() + "/pid"
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashKillsTheProcessAndItsChildren$")
		cmd.Env = append(os.Environ(), "FAULT_TEST_CHILD="+pidFile, Env+"="+tc.armed)
		err := cmd.Run()
		var exit *exec.ExitError
		signaled := errors.As(err, &exit) && exit.Sys().(syscall.WaitStatus).Signaled() && exit.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL
		if signaled != tc.killed {
			t.Fatalf("armed %s: killed by SIGKILL = %v (err %v), want %v", tc.armed, signaled, err, tc.killed)
		}
		if !tc.killed {
			continue
		}
		b, err := os.ReadFile(pidFile)
		if err != nil {
			t.Fatal(err)
		}
		pid, err := strconv.Atoi(string(b))
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for alive(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("the child's child %d outlived the crash", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// alive tells whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || !strings.HasPrefix(strings.TrimSpace(s[i+1:]), "Z")
}
