// Package command runs the few external tools the node needs, and nothing
// else. It is the only place in the tree that starts a process, so that every
// child is bounded in time, killed with everything it spawned, and limited to
// a list the container image must ship.
package command

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"
)

// MaxOutput caps what is kept of each of stdout and stderr. The tools called
// here print a few lines; a runaway one must not grow the agent's memory.
const MaxOutput = 1 << 20

// waitDelay bounds how long Run waits for the output pipes to close once the
// child has exited or been killed. A descendant that left the process group
// could otherwise hold them open forever.
const waitDelay = 2 * time.Second

// allowed is the closed list of tools the node may run. The container image
// must ship exactly these (checked by a test on the Dockerfile), so adding a
// tool here is a packaging change too.
var allowed = []string{"blkid", "mkfs.ext4", "mkfs.xfs", "resize2fs", "xfs_growfs"}

// Allowed returns the sorted names of the tools Run accepts. It returns a copy
// so that no caller can widen the list at run time.
func Allowed() []string {
	return slices.Clone(allowed)
}

// ErrNotAllowed is returned for a tool outside Allowed.
var ErrNotAllowed = errors.New("command not in the allowed list")

// ExitError reports a tool that ran and exited with a non-zero status, or was
// killed by a signal other than ours (Code is then -1).
type ExitError struct {
	Name   string
	Code   int
	Stderr string // trimmed
}

func (e *ExitError) Error() string {
	if e.Stderr == "" {
		return fmt.Sprintf("%s exited with code %d", e.Name, e.Code)
	}
	return fmt.Sprintf("%s exited with code %d: %s", e.Name, e.Code, e.Stderr)
}

// Run runs name with args and returns its output. The deadline is the earlier
// of ctx's and timeout; when it passes, the whole process group is killed and
// the error wraps context.DeadlineExceeded (or context.Canceled). A non-zero
// exit returns an *ExitError. Only names listed by Allowed, given as bare
// names looked up in PATH, are run.
func Run(ctx context.Context, timeout time.Duration, name string, args ...string) (stdout, stderr []byte, err error) {
	return runner{allowed: isAllowed}.run(ctx, timeout, name, args...)
}

func isAllowed(name string) bool {
	return slices.Contains(allowed, name)
}

// runner exists so tests can run tools outside the allowed list (sh, sleep)
// through the same code path as production.
type runner struct {
	allowed func(name string) bool
}

func (r runner) run(ctx context.Context, timeout time.Duration, name string, args ...string) ([]byte, []byte, error) {
	if !r.allowed(name) {
		return nil, nil, fmt.Errorf("run %q: %w", name, ErrNotAllowed)
	}
	if timeout <= 0 {
		return nil, nil, fmt.Errorf("run %s: timeout must be positive, got %s", name, timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("run %s: not started: %w", name, err)
	}

	var stdout, stderr cappedBuffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	// C locale: callers parse the output, which must not change with the
	// node's language settings.
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	// Own process group, so one kill reaches the tool's children too: a
	// shell script that backgrounded a helper must not outlive its deadline.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = waitDelay

	started := time.Now()
	err := cmd.Run()
	if ctxErr := ctx.Err(); ctxErr != nil && cmd.ProcessState != nil && !cmd.ProcessState.Success() {
		return stdout.Bytes(), stderr.Bytes(), fmt.Errorf("run %s: killed after %s (timed out): %w",
			name, time.Since(started).Round(time.Millisecond), ctxErr)
	}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return stdout.Bytes(), stderr.Bytes(), nil
	case errors.As(err, &exitErr):
		return stdout.Bytes(), stderr.Bytes(), &ExitError{
			Name:   name,
			Code:   exitErr.ExitCode(),
			Stderr: strings.TrimSpace(string(stderr.Bytes())),
		}
	case errors.Is(err, exec.ErrWaitDelay):
		// The tool succeeded but something it started kept the output open;
		// kill the group so that straggler does not linger.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		return stdout.Bytes(), stderr.Bytes(), nil
	default:
		return stdout.Bytes(), stderr.Bytes(), fmt.Errorf("run %s: %w", name, err)
	}
}

// cappedBuffer keeps the first MaxOutput bytes and silently drops the rest,
// while still accepting every write so the child never blocks on a full pipe.
type cappedBuffer struct {
	buf bytes.Buffer
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	if room := MaxOutput - c.buf.Len(); room > 0 {
		c.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func (c *cappedBuffer) Bytes() []byte {
	return c.buf.Bytes()
}
