package cluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// stopGrace is how long Stop waits after SIGTERM before SIGKILL.
	stopGrace = 10 * time.Second
	// reapTimeout bounds the wait for a killed process group to be reaped.
	reapTimeout = 10 * time.Second
	// restartBackoff and maxRestartBackoff pace restarts of a supervised
	// process, like the kubelet's crash-loop back-off but shorter.
	restartBackoff    = 500 * time.Millisecond
	maxRestartBackoff = 5 * time.Second
)

// ProcessSpec describes a program the test bed runs.
type ProcessSpec struct {
	// Name names the process in logs; its output goes to <LogDir>/<Name>.log.
	Name   string
	Path   string
	Args   []string
	LogDir string
	// Restart starts the program again whenever it exits until Stop or Kill,
	// as the kubelet restarts a container. The CSI sidecars need it: they
	// exit when they lose the connection to the driver.
	Restart bool
}

// Process is a running program in its own process group, its output
// appended to a log file. It is killed with the test binary (Pdeathsig)
// and stopped by the test's cleanup.
type Process struct {
	spec    ProcessSpec
	logPath string

	mu      sync.Mutex
	current *exec.Cmd     // the child of the latest start
	exited  chan struct{} // closed when current exits
	stop    chan struct{} // closed by Stop or Kill; nil while not running
	done    chan struct{} // closed when the supervising goroutine ends
	starts  int
}

// NewProcess returns a process that has not started yet.
func NewProcess(spec ProcessSpec) *Process {
	return &Process{spec: spec, logPath: logPath(spec.LogDir, spec.Name)}
}

// Name returns the process's name.
func (p *Process) Name() string { return p.spec.Name }

// LogPath returns the file the process's output goes to.
func (p *Process) LogPath() string { return p.logPath }

// Start starts the program. It may be called again after Stop or Kill.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stop != nil {
		return fmt.Errorf("%s is already running", p.spec.Name)
	}
	if err := p.spawn(); err != nil {
		return err
	}
	p.stop = make(chan struct{})
	p.done = make(chan struct{})
	go p.supervise(p.current, p.exited, p.stop, p.done)
	return nil
}

// Starts returns how often the program was started, restarts included.
func (p *Process) Starts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.starts
}

// Exited returns a channel closed when the latest start of the program has
// exited (a supervised program may have been started again since).
func (p *Process) Exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exited
}

// spawn starts one child. p.mu must be held.
func (p *Process) spawn() error {
	log, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer func() { _ = log.Close() }() // the child has its own descriptor
	if _, err := fmt.Fprintf(log, "=== test bed: start %d of %s: %s %s\n", p.starts+1, p.spec.Name, p.spec.Path, strings.Join(p.spec.Args, " ")); err != nil {
		return err
	}
	cmd := exec.Command(p.spec.Path, p.spec.Args...)
	cmd.Stdout = log
	cmd.Stderr = log
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true,
		// A test binary killed by its -timeout runs no cleanup; its
		// children must not live on holding ports and files.
		Pdeathsig: syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", p.spec.Name, err)
	}
	p.starts++
	p.current = cmd
	p.exited = make(chan struct{})
	return nil
}

// supervise waits for the child and, for a Restart process, starts it again
// until stop is closed.
func (p *Process) supervise(cmd *exec.Cmd, exited, stop, done chan struct{}) {
	defer close(done)
	backoff := restartBackoff
	for {
		err := cmd.Wait()
		close(exited)
		select {
		case <-stop:
			p.note("=== test bed: %s stopped (%s)", p.spec.Name, describeExit(err))
			return
		default:
		}
		if !p.spec.Restart {
			p.note("=== test bed: %s exited by itself (%s)", p.spec.Name, describeExit(err))
			return
		}
		p.note("=== test bed: %s exited (%s); starting it again in %s", p.spec.Name, describeExit(err), backoff)
		select {
		case <-stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxRestartBackoff)
		p.mu.Lock()
		select {
		case <-stop:
			p.mu.Unlock()
			return
		default:
		}
		err = p.spawn()
		cmd, exited = p.current, p.exited
		p.mu.Unlock()
		if err != nil {
			p.note("=== test bed: restarting %s failed: %v", p.spec.Name, err)
			return
		}
	}
}

// Stop sends SIGTERM to the process group, then SIGKILL after a grace
// period, and returns once the process is reaped. A supervised program is
// not started again. Stopping a stopped process does nothing.
func (p *Process) Stop() error { return p.halt(syscall.SIGTERM, stopGrace) }

// Kill ends the process group with SIGKILL at once, as a crash would.
func (p *Process) Kill() error { return p.halt(syscall.SIGKILL, 0) }

func (p *Process) halt(sig syscall.Signal, grace time.Duration) error {
	p.mu.Lock()
	if p.stop == nil {
		p.mu.Unlock()
		return nil
	}
	close(p.stop)
	p.stop = nil
	pid, done := p.current.Process.Pid, p.done
	p.mu.Unlock()

	// A group that is already gone answers ESRCH, which is fine.
	_ = syscall.Kill(-pid, sig)
	if grace > 0 {
		select {
		case <-done:
			return nil
		case <-time.After(grace):
		}
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
	select {
	case <-done:
		return nil
	case <-time.After(reapTimeout):
		return fmt.Errorf("%s (pid %d) was not reaped %s after SIGKILL", p.spec.Name, pid, reapTimeout)
	}
}

func (p *Process) note(format string, args ...any) {
	log, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	// A lost note only makes the log less helpful.
	_, _ = fmt.Fprintf(log, format+"\n", args...)
	_ = log.Close()
}

func describeExit(err error) string {
	var exit *exec.ExitError
	switch {
	case err == nil:
		return "exit status 0"
	case errors.As(err, &exit):
		return exit.String()
	default:
		return err.Error()
	}
}
