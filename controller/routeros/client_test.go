package routeros

import (
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/ssh"
)

// reply scripts how the test server answers one command text.
type reply struct {
	stdout, stderr string
	exit           uint32
	noExit         bool          // close the channel without an exit status
	delay          time.Duration // answer late
	hang           bool          // never answer; wait for the client to close the channel
	freeze         bool          // stop reading the connection: a hung RDS
	dropConn       bool          // close the whole TCP connection instead of answering
}

// testServer is a scripted SSH exec server standing in for RouterOS.
type testServer struct {
	t         *testing.T
	listener  net.Listener
	addr      string
	hostKey   ssh.Signer
	clientKey ssh.Signer
	config    *ssh.ServerConfig
	wg        sync.WaitGroup

	// channelClosed receives the text of a hung command once the client has
	// closed its channel (or its connection).
	channelClosed chan string

	mu        sync.Mutex
	replies   map[string]reply
	users     []string
	commands  []string
	conns     []*gateConn
	accepted  int
	active    int
	maxActive int
}

// gateConn lets a test freeze a server connection: once frozen it swallows
// everything the client sends, as a hung RDS would, and only notices the
// client closing the socket.
type gateConn struct {
	net.Conn
	frozen atomic.Bool
}

func (g *gateConn) Read(p []byte) (int, error) {
	for {
		n, err := g.Conn.Read(p)
		if err != nil || !g.frozen.Load() {
			return n, err
		}
	}
}

func newTestServer(t *testing.T, replies map[string]reply) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{
		t:             t,
		listener:      ln,
		addr:          ln.Addr().String(),
		hostKey:       newTestSigner(t),
		clientKey:     newTestSigner(t),
		channelClosed: make(chan string, 16),
		replies:       replies,
	}
	allowed := s.clientKey.PublicKey().Marshal()
	s.config = &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if string(key.Marshal()) != string(allowed) {
				return nil, errors.New("unknown key")
			}
			return nil, nil
		},
	}
	s.config.AddHostKey(s.hostKey)
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(s.Close)
	return s
}

func (s *testServer) serve() {
	defer s.wg.Done()
	for {
		nc, err := s.listener.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go s.handleConn(nc)
	}
}

func (s *testServer) handleConn(nc net.Conn) {
	defer s.wg.Done()
	gc := &gateConn{Conn: nc}
	s.mu.Lock()
	s.accepted++
	s.conns = append(s.conns, gc)
	s.mu.Unlock()
	defer func() { _ = gc.Close() }()

	sc, chans, reqs, err := ssh.NewServerConn(gc, s.config)
	if err != nil {
		return
	}
	s.mu.Lock()
	s.users = append(s.users, sc.User())
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ssh.DiscardRequests(reqs)
	}()
	for nch := range chans {
		ch, creqs, err := nch.Accept()
		if err != nil {
			continue
		}
		s.wg.Add(1)
		go s.handleSession(gc, ch, creqs)
	}
}

func (s *testServer) handleSession(gc *gateConn, ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer s.wg.Done()
	defer func() { _ = ch.Close() }()
	var command string
	for req := range reqs {
		var exec struct{ Command string }
		if req.Type != "exec" || ssh.Unmarshal(req.Payload, &exec) != nil {
			_ = req.Reply(false, nil)
			continue
		}
		_ = req.Reply(true, nil)
		command = exec.Command
		break
	}
	if command == "" {
		return
	}
	// The requests channel closes when the client closes the session
	// channel or the connection ends: that is the "session gone" signal.
	closed := make(chan struct{})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ssh.DiscardRequests(reqs)
		close(closed)
	}()

	s.mu.Lock()
	r, ok := s.replies[command]
	s.commands = append(s.commands, command)
	s.active++
	s.maxActive = max(s.maxActive, s.active)
	s.mu.Unlock()
	// The session stops counting before its answer goes out, so that the
	// client cannot start another one while this one still counts.
	endActive := sync.OnceFunc(func() {
		s.mu.Lock()
		s.active--
		s.mu.Unlock()
	})
	defer endActive()

	if !ok {
		r = reply{stderr: "bad command name " + command + " (line 1 column 1)\n", exit: 1}
	}
	switch {
	case r.dropConn:
		_ = gc.Close()
		return
	case r.freeze:
		gc.frozen.Store(true)
		<-closed
		s.channelClosed <- command
		return
	case r.hang:
		<-closed
		s.channelClosed <- command
		return
	case r.delay > 0:
		select {
		case <-time.After(r.delay):
		case <-closed:
			return
		}
	}
	endActive()
	_, _ = io.WriteString(ch, r.stdout)
	_, _ = io.WriteString(ch.Stderr(), r.stderr)
	if !r.noExit {
		_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{r.exit}))
	}
}

// dropConnections closes every connection, as an RDS reboot would.
func (s *testServer) dropConnections() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		_ = c.Close()
	}
}

func (s *testServer) Close() {
	_ = s.listener.Close()
	s.dropConnections()
	s.wg.Wait()
}

func (s *testServer) stats() (accepted, maxActive int, users, commands []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted, s.maxActive, append([]string(nil), s.users...), append([]string(nil), s.commands...)
}

// client returns a Client for s pinned to its host key; adjust changes the
// configuration before the client is made.
func (s *testServer) client(t *testing.T, adjust func(*ClientConfig)) *Client {
	t.Helper()
	hostKeyCheck, err := HostKeyCallback("", ssh.FingerprintSHA256(s.hostKey.PublicKey()), false)
	if err != nil {
		t.Fatal(err)
	}
	cfg := ClientConfig{
		Address:         s.addr,
		User:            "csi",
		Signer:          s.clientKey,
		HostKeyCallback: hostKeyCheck,
		CommandTimeout:  5 * time.Second,
		DialTimeout:     2 * time.Second,
	}
	if adjust != nil {
		adjust(&cfg)
	}
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func scripted(text string) Command { return Command{kind: "scripted", text: text} }

// waitForGoroutines fails the test unless the goroutine count falls back to
// baseline: every goroutine a command started has ended.
func waitForGoroutines(t *testing.T, baseline int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > baseline {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("%d goroutines still running, want at most %d:\n%s", runtime.NumGoroutine(), baseline, buf[:n])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func wantKind(t *testing.T, err error, want Kind) *Error {
	t.Helper()
	var re *Error
	if !errors.As(err, &re) {
		t.Fatalf("got error %v, want an *Error of kind %s", err, want)
	}
	if re.Kind != want {
		t.Fatalf("got kind %s (%v), want %s", re.Kind, err, want)
	}
	return re
}

func TestRunReturnsStdoutAndLogsInWithConsoleOptions(t *testing.T) {
	srv := newTestServer(t, map[string]reply{
		"/system identity print": {stdout: "  name: rds1\r\n"},
	})
	c := srv.client(t, nil)

	out, err := c.Run(context.Background(), Identity())
	if err != nil {
		t.Fatal(err)
	}
	if out != "  name: rds1\r\n" {
		t.Errorf("stdout = %q, want it unchanged", out)
	}
	if err := c.Ping(context.Background()); err != nil {
		t.Errorf("Ping: %v", err)
	}
	accepted, _, users, commands := srv.stats()
	if accepted != 1 {
		t.Errorf("server saw %d connections, want 1 shared by both commands", accepted)
	}
	if len(users) != 1 || users[0] != "csi+ct4096w" {
		t.Errorf("login users = %q, want [csi+ct4096w]", users)
	}
	if len(commands) != 2 || commands[0] != "/system identity print" {
		t.Errorf("commands = %q, want the identity command twice", commands)
	}
}

func TestLoginCarriesTheConfiguredWidth(t *testing.T) {
	srv := newTestServer(t, map[string]reply{"x": {}})
	c := srv.client(t, func(cfg *ClientConfig) { cfg.Width = 200 })
	if _, err := c.Run(context.Background(), scripted("x")); err != nil {
		t.Fatal(err)
	}
	if _, _, users, _ := srv.stats(); len(users) != 1 || users[0] != "csi+ct200w" {
		t.Errorf("login users = %q, want [csi+ct200w]", users)
	}
}

func TestRunClassifiesWhatTheServerSays(t *testing.T) {
	srv := newTestServer(t, map[string]reply{
		"stdout-missing":   {stdout: "failure: no such item\r\n"},
		"stderr-space":     {stderr: "failure: not enough space\n", exit: 1},
		"exit-only":        {exit: 3},
		"exit-syntax":      {stdout: "syntax error (line 1 column 5)\n", exit: 1},
		"exists-no-status": {stdout: "failure: already have disk with such slot\n", noExit: true},
		"ok-no-status":     {stdout: "name: rds1\n", noExit: true},
		"empty-ok":         {},
	})
	c := srv.client(t, nil)
	ctx := context.Background()

	cases := []struct {
		command string
		want    Kind
		exit    int // -1: no exit status expected in the error
	}{
		{"stdout-missing", KindNotFound, -1},
		{"stderr-space", KindNoSpace, 1},
		{"exit-only", KindInternal, 3},
		{"exit-syntax", KindInvalid, 1},
		{"exists-no-status", KindExists, -1},
		{"never-scripted", KindInvalid, 1},
	}
	for _, tc := range cases {
		t.Run(tc.command, func(t *testing.T) {
			out, err := c.Run(ctx, scripted(tc.command))
			re := wantKind(t, err, tc.want)
			if out != "" {
				t.Errorf("a failed command returned output %q", out)
			}
			if re.Command != "scripted" {
				t.Errorf("error names command %q, want the kind label", re.Command)
			}
			var exitErr *ssh.ExitError
			switch {
			case tc.exit < 0 && errors.As(err, &exitErr):
				t.Errorf("unexpected exit status in %v", err)
			case tc.exit >= 0 && (!errors.As(err, &exitErr) || exitErr.ExitStatus() != tc.exit):
				t.Errorf("error %v does not carry exit status %d", err, tc.exit)
			}
		})
	}

	for _, command := range []string{"ok-no-status", "empty-ok"} {
		if _, err := c.Run(ctx, scripted(command)); err != nil {
			t.Errorf("%s: %v, want success", command, err)
		}
	}
}

func TestDeadlineClosesTheSessionAndKeepsTheConnection(t *testing.T) {
	baseline := runtime.NumGoroutine()
	srv := newTestServer(t, map[string]reply{"hang": {hang: true}, "ok": {stdout: "ok"}})
	c := srv.client(t, nil)

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Run(ctx, scripted("hang"))
	_ = wantKind(t, err, KindTimeout)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("timeout %v does not wrap context.DeadlineExceeded", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("Run returned after %s, want about the 200ms deadline", took)
	}
	select {
	case got := <-srv.channelClosed:
		if got != "hang" {
			t.Errorf("closed session ran %q", got)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the server-side session was never closed")
	}

	if out, err := c.Run(context.Background(), scripted("ok")); err != nil || out != "ok" {
		t.Fatalf("next command: %q, %v", out, err)
	}
	if accepted, _, _, _ := srv.stats(); accepted != 1 {
		t.Errorf("server saw %d connections, want the first one kept", accepted)
	}

	_ = c.Close()
	srv.Close()
	waitForGoroutines(t, baseline)
}

func TestCommandTimeoutAppliesWithoutAContextDeadline(t *testing.T) {
	srv := newTestServer(t, map[string]reply{"hang": {hang: true}})
	c := srv.client(t, func(cfg *ClientConfig) { cfg.CommandTimeout = 150 * time.Millisecond })
	start := time.Now()
	_, err := c.Run(context.Background(), scripted("hang"))
	_ = wantKind(t, err, KindTimeout)
	if took := time.Since(start); took > time.Second {
		t.Errorf("Run returned after %s, want about the 150ms command timeout", took)
	}
}

func TestHungConnectionIsDroppedAndRedialled(t *testing.T) {
	baseline := runtime.NumGoroutine()
	srv := newTestServer(t, map[string]reply{"freeze": {freeze: true}, "ok": {stdout: "ok"}})
	c := srv.client(t, func(cfg *ClientConfig) { cfg.CommandTimeout = 200 * time.Millisecond })
	c.closeGrace = 200 * time.Millisecond

	_, err := c.Run(context.Background(), scripted("freeze"))
	_ = wantKind(t, err, KindTimeout)
	select {
	case <-srv.channelClosed:
	case <-time.After(3 * time.Second):
		t.Fatal("the hung connection was never dropped")
	}

	if out, err := c.Run(context.Background(), scripted("ok")); err != nil || out != "ok" {
		t.Fatalf("next command: %q, %v", out, err)
	}
	if accepted, _, _, _ := srv.stats(); accepted != 2 {
		t.Errorf("server saw %d connections, want a fresh one after the hung one", accepted)
	}

	_ = c.Close()
	srv.Close()
	waitForGoroutines(t, baseline)
}

func TestConnectionBrokenMidCommandIsUnavailableAndNotRetried(t *testing.T) {
	srv := newTestServer(t, map[string]reply{"drop": {dropConn: true}, "ok": {stdout: "ok"}})
	c := srv.client(t, nil)

	_, err := c.Run(context.Background(), scripted("drop"))
	_ = wantKind(t, err, KindUnavailable)
	if !errors.Is(err, errConnLost) {
		t.Errorf("error %v does not say the connection was lost mid-command", err)
	}
	if _, _, _, commands := srv.stats(); len(commands) != 1 {
		t.Fatalf("server ran %q, want the broken command sent once and not retried", commands)
	}

	if out, err := c.Run(context.Background(), scripted("ok")); err != nil || out != "ok" {
		t.Fatalf("next command: %q, %v", out, err)
	}
	if accepted, _, _, _ := srv.stats(); accepted != 2 {
		t.Errorf("server saw %d connections, want a reconnect", accepted)
	}
}

func TestIdleConnectionClosedByTheServerIsReplacedTransparently(t *testing.T) {
	srv := newTestServer(t, map[string]reply{"ok": {stdout: "ok"}})
	c := srv.client(t, nil)
	ctx := context.Background()
	if _, err := c.Run(ctx, scripted("ok")); err != nil {
		t.Fatal(err)
	}
	srv.dropConnections()
	// Whether the client has noticed yet or finds out when opening a
	// session, nothing of the command was sent, so it must succeed.
	if out, err := c.Run(ctx, scripted("ok")); err != nil || out != "ok" {
		t.Fatalf("command after an idle drop: %q, %v", out, err)
	}
	if accepted, _, _, commands := srv.stats(); accepted != 2 || len(commands) != 2 {
		t.Errorf("server saw %d connections and commands %q, want 2 and 2", accepted, commands)
	}
}

func TestServerDownIsUnavailableQuickly(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()

	c, err := NewClient(ClientConfig{
		Address:         addr,
		User:            "csi",
		Signer:          newTestSigner(t),
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	start := time.Now()
	err = c.Ping(context.Background())
	_ = wantKind(t, err, KindUnavailable)
	if took := time.Since(start); took > time.Second {
		t.Errorf("refused connection took %s to report", took)
	}
}

func TestFailedDialsBackOff(t *testing.T) {
	// A listener that accepts and hangs up at once: every dial fails in the
	// handshake, and the test counts how often the client tried.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var dials atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			dials.Add(1)
			_ = nc.Close()
		}
	}()
	defer func() { _ = ln.Close(); <-done }()

	c, err := NewClient(ClientConfig{
		Address:         ln.Addr().String(),
		User:            "csi",
		Signer:          newTestSigner(t),
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
		Backoff:         Backoff{Initial: 300 * time.Millisecond, Max: time.Hour},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	ctx := context.Background()

	_ = wantKind(t, c.Ping(ctx), KindUnavailable)
	if n := dials.Load(); n != 1 {
		t.Fatalf("dials = %d, want 1", n)
	}
	start := time.Now()
	err = c.Ping(ctx)
	_ = wantKind(t, err, KindUnavailable)
	if n := dials.Load(); n != 1 {
		t.Errorf("a command inside the backoff window dialled (dials = %d)", n)
	}
	if took := time.Since(start); took > 50*time.Millisecond {
		t.Errorf("a command inside the backoff window took %s, want an immediate answer", took)
	}
	if !strings.Contains(err.Error(), "not reconnecting") {
		t.Errorf("backoff error %q does not say why it did not dial", err)
	}

	time.Sleep(350 * time.Millisecond)
	_ = wantKind(t, c.Ping(ctx), KindUnavailable)
	if n := dials.Load(); n != 2 {
		t.Errorf("after the window: dials = %d, want 2", n)
	}
	// The second failure doubles the wait to 600ms.
	time.Sleep(350 * time.Millisecond)
	_ = wantKind(t, c.Ping(ctx), KindUnavailable)
	if n := dials.Load(); n != 2 {
		t.Errorf("350ms after the second failure: dials = %d, want still 2", n)
	}
}

func TestConcurrentSessionsStayWithinMaxSessions(t *testing.T) {
	srv := newTestServer(t, map[string]reply{"slow": {stdout: "done", delay: 100 * time.Millisecond}})
	c := srv.client(t, func(cfg *ClientConfig) { cfg.MaxSessions = 2 })

	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			out, err := c.Run(context.Background(), scripted("slow"))
			if err == nil && out != "done" {
				err = errors.New("wrong output " + out)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	accepted, maxActive, _, commands := srv.stats()
	if len(commands) != 8 {
		t.Errorf("server ran %d commands, want 8", len(commands))
	}
	if maxActive > 2 {
		t.Errorf("server saw %d sessions at once, want at most 2", maxActive)
	}
	if maxActive < 2 {
		t.Errorf("server saw at most %d session at once: the two slots were not used", maxActive)
	}
	if accepted != 1 {
		t.Errorf("server saw %d connections, want all sessions on one", accepted)
	}
}

func TestWaitingForASessionSlotRespectsTheContext(t *testing.T) {
	srv := newTestServer(t, map[string]reply{"hang": {hang: true}, "ok": {}})
	c := srv.client(t, func(cfg *ClientConfig) { cfg.MaxSessions = 1 })

	hangCtx, stopHang := context.WithCancel(context.Background())
	hangDone := make(chan error, 1)
	go func() {
		_, err := c.Run(hangCtx, scripted("hang"))
		hangDone <- err
	}()
	deadline := time.Now().Add(3 * time.Second)
	for {
		if _, _, _, commands := srv.stats(); len(commands) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the hanging command never reached the server")
		}
		time.Sleep(5 * time.Millisecond)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := c.Run(ctx, scripted("ok"))
	_ = wantKind(t, err, KindTimeout)
	if !strings.Contains(err.Error(), "waiting for a free session") {
		t.Errorf("error %q does not say it waited for a session", err)
	}
	if _, _, _, commands := srv.stats(); len(commands) != 1 {
		t.Errorf("server ran %q, want only the hanging command", commands)
	}

	stopHang()
	_ = wantKind(t, <-hangDone, KindTimeout)
}

func TestHostKeyPinningThroughTheClient(t *testing.T) {
	srv := newTestServer(t, map[string]reply{"ok": {stdout: "ok"}})
	impostor := newTestSigner(t).PublicKey()

	t.Run("wrong fingerprint is refused", func(t *testing.T) {
		check, err := HostKeyCallback("", ssh.FingerprintSHA256(impostor), false)
		if err != nil {
			t.Fatal(err)
		}
		c := srv.client(t, func(cfg *ClientConfig) { cfg.HostKeyCallback = check })
		_, err = c.Run(context.Background(), scripted("ok"))
		_ = wantKind(t, err, KindUnavailable)
		if !errors.Is(err, ErrHostKeyMismatch) {
			t.Errorf("error %v is not a host key mismatch", err)
		}
		if !strings.Contains(err.Error(), ssh.FingerprintSHA256(srv.hostKey.PublicKey())) {
			t.Errorf("error %q does not name the presented key", err)
		}
	})
	t.Run("known_hosts entry is accepted", func(t *testing.T) {
		check, err := HostKeyCallback(writeKnownHosts(t, srv.addr, srv.hostKey.PublicKey()), "", false)
		if err != nil {
			t.Fatal(err)
		}
		c := srv.client(t, func(cfg *ClientConfig) { cfg.HostKeyCallback = check })
		if _, err := c.Run(context.Background(), scripted("ok")); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("known_hosts mismatch is refused", func(t *testing.T) {
		check, err := HostKeyCallback(writeKnownHosts(t, srv.addr, impostor), "", false)
		if err != nil {
			t.Fatal(err)
		}
		c := srv.client(t, func(cfg *ClientConfig) { cfg.HostKeyCallback = check })
		_, err = c.Run(context.Background(), scripted("ok"))
		_ = wantKind(t, err, KindUnavailable)
		if !errors.Is(err, ErrHostKeyMismatch) {
			t.Errorf("error %v is not a host key mismatch", err)
		}
	})
	if _, _, _, commands := srv.stats(); len(commands) != 1 {
		t.Errorf("server ran %q, want only the command over the accepted key", commands)
	}
}

func TestRunAfterCloseIsUnavailable(t *testing.T) {
	srv := newTestServer(t, map[string]reply{"ok": {}})
	c := srv.client(t, nil)
	if _, err := c.Run(context.Background(), scripted("ok")); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := c.Run(context.Background(), scripted("ok"))
	_ = wantKind(t, err, KindUnavailable)
}

func TestNewClientValidates(t *testing.T) {
	good := ClientConfig{
		Address:         "192.0.2.10:22",
		User:            "csi",
		Signer:          newTestSigner(t),
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
	}
	c, err := NewClient(good)
	if err != nil {
		t.Fatalf("valid config: %v", err)
	}
	if c.login != "csi+ct4096w" || cap(c.sessions) != DefaultMaxSessions || c.cfg.CommandTimeout != DefaultCommandTimeout {
		t.Errorf("defaults not applied: login %q, sessions %d, timeout %s", c.login, cap(c.sessions), c.cfg.CommandTimeout)
	}

	for name, breakIt := range map[string]func(*ClientConfig){
		"no port":            func(cfg *ClientConfig) { cfg.Address = "192.0.2.10" },
		"no user":            func(cfg *ClientConfig) { cfg.User = "" },
		"user with options":  func(cfg *ClientConfig) { cfg.User = "csi+ct" },
		"no key":             func(cfg *ClientConfig) { cfg.Signer = nil },
		"no host key check":  func(cfg *ClientConfig) { cfg.HostKeyCallback = nil },
		"negative timeout":   func(cfg *ClientConfig) { cfg.CommandTimeout = -time.Second },
		"backoff max < init": func(cfg *ClientConfig) { cfg.Backoff = Backoff{Initial: time.Minute, Max: time.Second} },
	} {
		cfg := good
		breakIt(&cfg)
		if _, err := NewClient(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestMetricsRecordEachCommandByKindAndResult(t *testing.T) {
	srv := newTestServer(t, map[string]reply{
		"/system identity print": {stdout: "name: rds1"},
		"missing":                {stdout: "no such item"},
	})
	reg := prometheus.NewRegistry()
	c := srv.client(t, func(cfg *ClientConfig) { cfg.Metrics = NewMetrics(reg) })
	ctx := context.Background()
	_ = c.Ping(ctx)
	_ = c.Ping(ctx)
	_, _ = c.Run(ctx, scripted("missing"))

	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]uint64{}
	for _, f := range families {
		if f.GetName() != "rds_routeros_command_duration_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			counts[labels["command"]+"/"+labels["result"]] = m.GetHistogram().GetSampleCount()
		}
	}
	want := map[string]uint64{"identity/ok": 2, "scripted/not-found": 1}
	if len(counts) != len(want) {
		t.Errorf("series = %v, want %v", counts, want)
	}
	for series, n := range want {
		if counts[series] != n {
			t.Errorf("%s observed %d times, want %d", series, counts[series], n)
		}
	}
}
