package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestASupervisedProcessIsStartedAgainUntilStopped(t *testing.T) {
	p := NewProcess(ProcessSpec{Name: "crasher", Path: "/bin/sh", Args: []string{"-c", "exit 3"}, LogDir: t.TempDir(), Restart: true})
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	err := WaitFor(t.Context(), 20*time.Second, "three starts", func(context.Context) (bool, string, error) {
		return p.Starts() >= 3, fmt.Sprintf("%d starts", p.Starts()), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped := p.Starts()
	time.Sleep(2 * maxRestartBackoff) // longer than any back-off
	if p.Starts() != stopped {
		t.Errorf("started again after Stop: %d starts, %d at Stop", p.Starts(), stopped)
	}
	log, err := os.ReadFile(p.LogPath())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), "exit status 3") || !strings.Contains(string(log), "starting it again") {
		t.Errorf("the log should record each exit and restart:\n%s", log)
	}
}

func TestAnUnsupervisedProcessStaysDown(t *testing.T) {
	p := NewProcess(ProcessSpec{Name: "once", Path: "/bin/sh", Args: []string{"-c", "exit 0"}, LogDir: t.TempDir()})
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Exited():
	case <-time.After(10 * time.Second):
		t.Fatal("a process that exits at once did not exit")
	}
	time.Sleep(2 * restartBackoff)
	if p.Starts() != 1 {
		t.Errorf("%d starts, want 1", p.Starts())
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
}

func TestStopEndsTheWholeProcessGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	p := NewProcess(ProcessSpec{Name: "parent", Path: "/bin/sh", Args: []string{"-c", "sleep 300 & echo $! > " + pidFile + "; wait"}, LogDir: dir})
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	var child int
	err := WaitFor(t.Context(), 10*time.Second, "the child's pid", func(context.Context) (bool, string, error) {
		data, err := os.ReadFile(pidFile)
		if err != nil || !strings.HasSuffix(string(data), "\n") {
			return false, fmt.Sprint(err), nil
		}
		child, err = strconv.Atoi(strings.TrimSpace(string(data)))
		return err == nil, "", err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	// The orphaned child is reaped by init; until then it is a zombie, so
	// wait for it to vanish rather than only to die.
	err = WaitFor(t.Context(), 10*time.Second, "the background child gone", func(context.Context) (bool, string, error) {
		err := syscall.Kill(child, 0)
		return errors.Is(err, syscall.ESRCH), fmt.Sprintf("kill -0 %d: %v", child, err), nil
	})
	if err != nil {
		_ = syscall.Kill(child, syscall.SIGKILL)
		t.Fatal(err)
	}
}

func TestAKilledProcessStartsAgain(t *testing.T) {
	p := NewProcess(ProcessSpec{Name: "sleeper", Path: "/bin/sleep", Args: []string{"300"}, LogDir: t.TempDir()})
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err == nil {
		t.Error("a second Start of a running process succeeded")
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Exited():
	default:
		t.Fatal("Kill returned before the process exited")
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if p.Starts() != 2 {
		t.Errorf("%d starts, want 2", p.Starts())
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(); err != nil {
		t.Errorf("stopping a stopped process: %v", err)
	}
}
