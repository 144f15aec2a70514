package rdssim

import (
	"bytes"
	"context"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// runAsync starts cmd in its own session and reports Run's result later.
func runAsync(t *testing.T, c *ssh.Client, cmd string) (*ssh.Session, <-chan error) {
	t.Helper()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sess.Run(cmd) }()
	return sess, done
}

func mustNotFinish(t *testing.T, done <-chan error, within time.Duration) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("a hung command answered: %v", err)
	case <-time.After(within):
	}
}

func mustFinish(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("command still running")
		return nil
	}
}

// waitGoroutines fails unless the goroutine count falls back to baseline:
// a hung command must not outlive its connection or the simulator.
func waitGoroutines(t *testing.T, baseline int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > baseline {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, want at most %d:\n%s", runtime.NumGoroutine(), baseline, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSetLatencyDelaysEveryCommand(t *testing.T) {
	f := start(t, func(c *Config) { c.Latency = 150 * time.Millisecond })
	c := f.dial(t, "")
	for _, d := range []time.Duration{150 * time.Millisecond, 300 * time.Millisecond} {
		if d != 150*time.Millisecond {
			f.sim.SetLatency(d)
		}
		begin := time.Now()
		ok(t, c, `/system identity print`)
		if took := time.Since(begin); took < d {
			t.Errorf("latency %v: the command took only %v", d, took)
		}
	}
}

func TestFailNthFailsExactlyThatCommandWithoutRunningIt(t *testing.T) {
	f := start(t, nil)
	c := f.dial(t, "ct4096w")
	f.sim.FailNth(2, "failure: injected")
	ok(t, c, addCmd("a", "1G"))
	r := exec(t, c, addCmd("b", "1G"))
	if r.stdout != "failure: injected\r\n" {
		t.Errorf("second command: %+v", r)
	}
	ok(t, c, addCmd("c", "1G"))
	out := ok(t, c, `/disk print detail`)
	if !strings.Contains(out, `slot="a"`) || strings.Contains(out, `slot="b"`) || !strings.Contains(out, `slot="c"`) {
		t.Errorf("the failed command ran, or a neighbour did not:\n%s", out)
	}
}

func TestFailNthUsesTheErrorMode(t *testing.T) {
	f := start(t, func(c *Config) { c.ErrorsOnStderr, c.ErrorExitStatus = true, true })
	c := f.dial(t, "")
	f.sim.FailNth(1, "no such item")
	if r := exec(t, c, `/system identity print`); r.stdout != "" || r.stderr != "no such item\r\n" || r.exit != 1 {
		t.Errorf("injected failure: %+v", r)
	}
}

func TestHangNextHangsOneCommandUntilItsSessionCloses(t *testing.T) {
	f := start(t, func(c *Config) { c.MaxSessions = 2 })
	c := f.dial(t, "")
	f.sim.HangNext()
	sess, done := runAsync(t, c, addCmd("a", "1G"))
	mustNotFinish(t, done, 300*time.Millisecond)

	// Other sessions on the same connection still work while it hangs.
	ok(t, c, `/system identity print`)
	_ = sess.Close()
	if err := mustFinish(t, done); err == nil {
		t.Error("a hung command reported success")
	}
	// The server side ends too: with MaxSessions 2, two more sessions fit
	// at once only when the hung one is really gone.
	deadline := time.Now().Add(5 * time.Second)
	for {
		s1, err1 := c.NewSession()
		s2, err2 := c.NewSession()
		for _, s := range []*ssh.Session{s1, s2} {
			if s != nil {
				_ = s.Close()
			}
		}
		if err1 == nil && err2 == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the hung command still holds its session: %v %v", err1, err2)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if out := ok(t, c, `/disk print detail where slot="a"`); strings.Contains(out, `slot="a"`) {
		t.Error("the hung command ran")
	}
}

func TestHangCommandsHangsMatchingCommandsUntilCleared(t *testing.T) {
	f := start(t, nil)
	c := f.dial(t, "")
	f.sim.HangCommands(regexp.MustCompile(`^/disk add `))
	_, done1 := runAsync(t, c, addCmd("a", "1G"))
	_, done2 := runAsync(t, c, addCmd("b", "1G"))
	ok(t, c, `/disk print detail`)
	mustNotFinish(t, done1, 200*time.Millisecond)
	mustNotFinish(t, done2, 0)

	f.sim.HangCommands(nil)
	ok(t, c, addCmd("c", "1G"))

	// Dropping the connection ends the hung ones.
	f.sim.DropConnections()
	_ = mustFinish(t, done1)
	_ = mustFinish(t, done2)
}

func TestCloseEndsHungCommandsAndLeaksNoGoroutine(t *testing.T) {
	baseline := runtime.NumGoroutine()
	key := newSigner(t)
	sim, err := Start(context.Background(), Config{StateDir: t.TempDir(), AuthorizedKeys: []ssh.PublicKey{key.PublicKey()}})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{sim: sim, key: key}
	c, err := f.dialAs(DefaultUser, key)
	if err != nil {
		t.Fatal(err)
	}
	sim.HangNext()
	_, done := runAsync(t, c, `/system identity print`)
	idle, err := c.NewSession() // a session that never runs anything
	if err != nil {
		t.Fatal(err)
	}
	mustNotFinish(t, done, 200*time.Millisecond)

	closed := make(chan error, 1)
	go func() { closed <- sim.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close blocked on a hung command")
	}
	if err := mustFinish(t, done); err == nil {
		t.Error("the hung command reported success after Close")
	}
	_ = idle.Close()
	_ = c.Close()
	waitGoroutines(t, baseline)
}

func TestMonitorWithoutOnceStreamsUntilTheSessionCloses(t *testing.T) {
	baseline := runtime.NumGoroutine()
	f := start(t, nil)
	c := f.dial(t, "")
	ok(t, c, addCmd("a", "1G"))
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, err := sess.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.Start(`/disk monitor-traffic a`); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	buf := make([]byte, 4096)
	for strings.Count(got.String(), "write-rate: 0bps") < 2 {
		n, err := out.Read(buf)
		if err != nil {
			t.Fatalf("stream ended after %q: %v", got.String(), err)
		}
		got.Write(buf[:n])
	}
	_ = sess.Close()
	_ = c.Close()
	_ = f.sim.Close()
	waitGoroutines(t, baseline)
}

func TestDropConnectionsClosesLiveConnections(t *testing.T) {
	f := start(t, nil)
	c := f.dial(t, "")
	ok(t, c, `/system identity print`)
	f.sim.DropConnections()
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	_ = mustFinish(t, done)
	if _, err := c.NewSession(); err == nil {
		t.Error("a dropped connection still opens sessions")
	}
	ok(t, f.dial(t, ""), `/system identity print`) // reconnecting works
}

func TestSetRefuseConnectionsRefusesNewConnectionsOnly(t *testing.T) {
	f := start(t, nil)
	live := f.dial(t, "")
	f.sim.SetRefuseConnections(true)
	if c, err := f.dialAs(DefaultUser, f.key); err == nil {
		_ = c.Close()
		t.Fatal("connected while refusing")
	}
	ok(t, live, `/system identity print`)
	f.sim.SetRefuseConnections(false)
	ok(t, f.dial(t, ""), `/system identity print`)
}

// syncBuffer is a command log safe to read while the server writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestCommandsRecordsEveryCommandInOrder(t *testing.T) {
	var log syncBuffer
	f := start(t, func(c *Config) { c.CommandLog = &log })
	c := f.dial(t, "")
	f.sim.FailNth(2, "failure: injected")
	sent := []string{`/system identity print`, addCmd("a", "1G"), `/disk frob`, `/disk remove [find slot="a"]`}
	for _, cmd := range sent {
		exec(t, c, cmd)
	}
	if got := f.sim.Commands(); strings.Join(got, "\n") != strings.Join(sent, "\n") {
		t.Errorf("Commands() = %q, want %q", got, sent)
	}
	if got := log.String(); got != strings.Join(sent, "\n")+"\n" {
		t.Errorf("command log = %q", got)
	}
}
