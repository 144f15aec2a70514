package command

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

var anyTool = runner{allowed: func(string) bool { return true }}

func TestRunReturnsOutputAndExitCodes(t *testing.T) {
	tests := []struct {
		name       string
		script     string
		wantStdout string
		wantCode   int // 0 means success expected
		wantStderr string
	}{
		{name: "a successful tool returns its stdout", script: "echo hello", wantStdout: "hello\n"},
		{name: "a failing tool returns its exit code and trimmed stderr", script: "echo '  broken disk  ' >&2; exit 3", wantCode: 3, wantStderr: "broken disk"},
		{name: "a tool runs in the C locale", script: "echo $LC_ALL", wantStdout: "C\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, _, err := anyTool.run(t.Context(), 10*time.Second, "sh", "-c", tt.script)
			if tt.wantCode == 0 {
				if err != nil {
					t.Fatalf("run: %v", err)
				}
				if string(stdout) != tt.wantStdout {
					t.Fatalf("stdout = %q, want %q", stdout, tt.wantStdout)
				}
				return
			}
			var exitErr *ExitError
			if !errors.As(err, &exitErr) {
				t.Fatalf("error %v is not an *ExitError", err)
			}
			if exitErr.Code != tt.wantCode || exitErr.Stderr != tt.wantStderr {
				t.Fatalf("got code %d stderr %q, want %d %q", exitErr.Code, exitErr.Stderr, tt.wantCode, tt.wantStderr)
			}
			if !strings.Contains(err.Error(), "code 3") {
				t.Fatalf("error %q does not name the exit code", err)
			}
		})
	}
}

func TestRunKillsTheWholeProcessGroupAtTheDeadline(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "grandchild.pid")
	// The grandchild writes its own pid so the test can check it died too.
	script := `sh -c 'echo $$ > ` + pidFile + `; exec sleep 100' & sleep 100`
	started := time.Now()
	_, _, err := anyTool.run(t.Context(), 300*time.Millisecond, "sh", "-c", script)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v does not wrap context.DeadlineExceeded", err)
	}
	if !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("error %q does not say it timed out", err)
	}
	if elapsed := time.Since(started); elapsed > 5*time.Second {
		t.Fatalf("run returned after %s, the deadline was not enforced", elapsed)
	}
	raw, readErr := os.ReadFile(pidFile)
	if readErr != nil {
		t.Fatalf("grandchild never started: %v", readErr)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
	deadline := time.Now().Add(5 * time.Second)
	for {
		// A killed child of a dead shell is reparented and reaped by init;
		// until then it may show as a zombie, which counts as dead.
		state, statErr := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if statErr != nil || strings.Contains(string(state), ") Z ") {
			return
		}
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("grandchild %d survived the deadline", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRunHonoursAnAlreadyCancelledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, _, err := anyTool.run(ctx, time.Second, "true")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v does not wrap context.Canceled", err)
	}
}

func TestRunCapsOutput(t *testing.T) {
	stdout, _, err := anyTool.run(t.Context(), 10*time.Second, "head", "-c", strconv.Itoa(3*MaxOutput), "/dev/zero")
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if len(stdout) != MaxOutput {
		t.Fatalf("kept %d bytes, want %d", len(stdout), MaxOutput)
	}
}

func TestRunRefusesToolsOutsideTheAllowedList(t *testing.T) {
	for _, name := range []string{"sh", "mount", "nvme", "/usr/sbin/blkid", "../blkid"} {
		t.Run(name, func(t *testing.T) {
			_, _, err := Run(t.Context(), time.Second, name, "-c", "true")
			if !errors.Is(err, ErrNotAllowed) {
				t.Fatalf("error %v does not wrap ErrNotAllowed", err)
			}
		})
	}
}

func TestAllowedListsExactlyTheFilesystemTools(t *testing.T) {
	got := strings.Join(Allowed(), " ")
	want := "blkid mkfs.ext4 mkfs.xfs resize2fs xfs_growfs"
	if got != want {
		t.Fatalf("Allowed() = %q, want %q", got, want)
	}
	Allowed()[0] = "sh"
	if isAllowed("sh") {
		t.Fatal("changing the returned slice widened the allowed list")
	}
}

func TestRunExecutesAnAllowedTool(t *testing.T) {
	// blkid on a file with no signature exits 2: proves the real path runs.
	if _, err := exec.LookPath("blkid"); err != nil {
		t.Skip("blkid is not installed on this machine")
	}
	f := filepath.Join(t.TempDir(), "blank")
	if err := os.WriteFile(f, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := Run(t.Context(), 10*time.Second, "blkid", "-p", f)
	var exitErr *ExitError
	if !errors.As(err, &exitErr) || exitErr.Code != 2 {
		t.Fatalf("blkid on a blank file: %v, want exit code 2", err)
	}
}
