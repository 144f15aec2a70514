package rdssim

import (
	"fmt"
	"regexp"
	"time"

	"k8s.io/klog/v2"
)

// receive records a command and decides what the fault levers do to it.
func (s *Sim) receive(line string) (latency time.Duration, failure *string, hang bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.commands = append(s.commands, line)
	if s.cfg.CommandLog != nil {
		if _, err := fmt.Fprintln(s.cfg.CommandLog, line); err != nil {
			klog.ErrorS(err, "Writing the command log failed")
		}
	}
	f := &s.faults
	f.received++
	if out, ok := f.failAt[f.received]; ok {
		delete(f.failAt, f.received)
		failure = &out
	}
	if f.hangNext {
		f.hangNext, hang = false, true
	}
	if f.hangRE != nil && f.hangRE.MatchString(line) {
		hang = true
	}
	klog.V(4).InfoS("Command", "n", f.received, "text", line, "injectedFailure", failure != nil, "hang", hang)
	return f.latency, failure, hang
}

// SetLatency delays every command from now on by d before it runs.
func (s *Sim) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.latency = d
}

// FailNth makes the nth command from now (1 is the next one) fail without
// running: output is printed as the simulator prints errors (stdout or
// stderr, exit status per Config).
func (s *Sim) FailNth(n int, output string) {
	if n < 1 {
		panic(fmt.Sprintf("rdssim: FailNth(%d): n counts from 1", n))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.failAt[s.faults.received+n] = output
}

// HangNext makes the next command never answer: it neither runs nor
// returns until its session or connection is closed, or the simulator is.
func (s *Sim) HangNext() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.hangNext = true
}

// HangCommands makes every command whose text matches re hang like
// HangNext, until called again with nil.
func (s *Sim) HangCommands(re *regexp.Regexp) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.hangRE = re
}

// DropConnections closes every live SSH connection at once, as a network
// cut or an RDS reboot would; commands in flight get no answer.
func (s *Sim) DropConnections() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		_ = c.Close()
	}
}

// SetRefuseConnections makes new connections be reset right after they are
// accepted (true) or served again (false). Live connections are untouched.
func (s *Sim) SetRefuseConnections(refuse bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.refuse = refuse
}
