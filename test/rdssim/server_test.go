package rdssim

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func TestLoginIsRefusedWithoutTheRightUserAndKey(t *testing.T) {
	f := start(t, func(c *Config) { c.User = "csi" })
	cases := []struct {
		name  string
		user  string
		key   ssh.Signer
		allow bool
	}{
		{"the configured user and key", "csi", f.key, true},
		{"the configured user with console options", "csi+ct4096w", f.key, true},
		{"an unknown key", "csi", newSigner(t), false},
		{"an unknown user", "admin", f.key, false},
		{"an unknown user with options", "admin+ct", f.key, false},
		{"an unknown console option", "csi+z", f.key, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := f.dialAs(tc.user, tc.key)
			if err == nil {
				_ = c.Close()
			}
			if (err == nil) != tc.allow {
				t.Errorf("login %q: err = %v, want allowed %v", tc.user, err, tc.allow)
			}
			if err != nil && !strings.Contains(err.Error(), "unable to authenticate") {
				t.Errorf("login %q: unexpected error %v", tc.user, err)
			}
		})
	}
}

func TestPasswordAuthIsNotOffered(t *testing.T) {
	f := start(t, nil)
	_, err := ssh.Dial("tcp", f.sim.Addr(), &ssh.ClientConfig{
		User:            DefaultUser,
		Auth:            []ssh.AuthMethod{ssh.Password("admin")},
		HostKeyCallback: ssh.FixedHostKey(f.sim.HostKey()),
	})
	if err == nil {
		t.Fatal("password login accepted")
	}
}

func TestHostKeyIsGeneratedOnceOrTakenFromConfig(t *testing.T) {
	f := start(t, nil)
	data, err := os.ReadFile(filepath.Join(f.cfg.StateDir, HostKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(data)
	if err != nil {
		t.Fatal(err)
	}
	if signer.PublicKey().Type() != ssh.KeyAlgoED25519 || ssh.FingerprintSHA256(signer.PublicKey()) != ssh.FingerprintSHA256(f.sim.HostKey()) {
		t.Errorf("stored key %s is not the served key %s", ssh.FingerprintSHA256(signer.PublicKey()), ssh.FingerprintSHA256(f.sim.HostKey()))
	}

	given := newSigner(t)
	g := start(t, func(c *Config) { c.HostKey = given })
	if ssh.FingerprintSHA256(g.sim.HostKey()) != ssh.FingerprintSHA256(given.PublicKey()) {
		t.Error("Config.HostKey not served")
	}
	if _, err := os.Stat(filepath.Join(g.cfg.StateDir, HostKeyFile)); !os.IsNotExist(err) {
		t.Errorf("a host key was written although one was given: %v", err)
	}
	ok(t, g.dial(t, ""), `/system identity print`) // the client pins the given key
}

func TestServerRefusesShellsPTYsKeepalivesAndASecondExec(t *testing.T) {
	f := start(t, nil)
	c := f.dial(t, "")

	if ok, _, err := c.SendRequest("keepalive@openssh.com", true, nil); ok || err != nil {
		t.Errorf("keepalive: ok=%v err=%v, want refused", ok, err)
	}
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.RequestPty("xterm", 24, 80, ssh.TerminalModes{}); err == nil {
		t.Error("pty-req accepted")
	}
	if err := sess.Shell(); err == nil {
		t.Error("shell accepted")
	}
	_ = sess.Close()

	ch, reqs, err := c.OpenChannel("session", nil)
	if err != nil {
		t.Fatal(err)
	}
	go ssh.DiscardRequests(reqs)
	payload := ssh.Marshal(struct{ Command string }{"/system identity print"})
	if ok, err := ch.SendRequest("exec", true, payload); !ok || err != nil {
		t.Fatalf("first exec: ok=%v err=%v", ok, err)
	}
	if ok, _ := ch.SendRequest("exec", true, payload); ok {
		t.Error("second exec on one session accepted")
	}
	_ = ch.Close()

	if _, _, err := c.OpenChannel("direct-tcpip", nil); err == nil {
		t.Error("port forwarding channel accepted")
	}
}

func TestMaxSessionsBoundsConcurrentSessionsPerConnection(t *testing.T) {
	f := start(t, func(c *Config) { c.MaxSessions = 2 })
	c := f.dial(t, "")
	// Sessions run back to back never trip the limit: a finished session's
	// slot is free by the time the client sees it closed.
	for range 50 {
		ok(t, c, `/system identity print`)
	}
	var open []*ssh.Session
	for range 2 {
		s, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, s)
	}
	_, err := c.NewSession()
	var openErr *ssh.OpenChannelError
	if !errors.As(err, &openErr) || openErr.Reason != ssh.ResourceShortage {
		t.Fatalf("third session: %v, want a resource shortage rejection", err)
	}
	// Another connection has its own budget.
	ok(t, f.dial(t, ""), `/system identity print`)

	_ = open[0].Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, err := c.NewSession()
		if err == nil {
			_ = s.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a closed session never freed its slot: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestErrorModes(t *testing.T) {
	bad := addCmd(strings.Repeat("s", 33), "1G")
	cases := []struct {
		name                 string
		tweak                func(*Config)
		stdout, stderr       string
		exit, successfulExit int
	}{
		{"default: like a console, on stdout with exit 0", nil, ErrTextSlotTooLong + "\r\n", "", 0, 0},
		{"on stderr", func(c *Config) { c.ErrorsOnStderr = true }, "", ErrTextSlotTooLong + "\r\n", 0, 0},
		{"with exit status 1", func(c *Config) { c.ErrorExitStatus = true }, ErrTextSlotTooLong + "\r\n", "", 1, 0},
		{"on stderr with exit status 1", func(c *Config) { c.ErrorsOnStderr, c.ErrorExitStatus = true, true }, "", ErrTextSlotTooLong + "\r\n", 1, 0},
		{"with no exit status at all", func(c *Config) { c.OmitExitStatus = true }, ErrTextSlotTooLong + "\r\n", "", -1, -1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := start(t, tc.tweak)
			c := f.dial(t, "")
			r := exec(t, c, bad)
			if r.err != nil || r.stdout != tc.stdout || r.stderr != tc.stderr || r.exit != tc.exit {
				t.Errorf("failed command: %+v, want stdout %q stderr %q exit %d", r, tc.stdout, tc.stderr, tc.exit)
			}
			r = exec(t, c, `/system identity print`)
			if r.err != nil || r.stdout != "  name: rds-sim\r\n" || r.stderr != "" || r.exit != tc.successfulExit {
				t.Errorf("successful command: %+v, want exit %d", r, tc.successfulExit)
			}
		})
	}
}

func TestStartValidatesTheConfig(t *testing.T) {
	key := newSigner(t).PublicKey()
	for name, cfg := range map[string]Config{
		"no state dir":       {AuthorizedKeys: []ssh.PublicKey{key}},
		"no authorized keys": {StateDir: t.TempDir()},
		"a bad mount point":  {StateDir: t.TempDir(), AuthorizedKeys: []ssh.PublicKey{key}, PoolMountPoint: "a/b"},
		"a negative pool":    {StateDir: t.TempDir(), AuthorizedKeys: []ssh.PublicKey{key}, PoolSize: -1},
	} {
		if sim, err := Start(t.Context(), cfg); err == nil {
			_ = sim.Close()
			t.Errorf("%s: started", name)
		}
	}
}

func TestCancellingTheStartContextClosesTheSimulator(t *testing.T) {
	key := newSigner(t)
	ctx, cancel := context.WithCancel(t.Context())
	sim, err := Start(ctx, Config{StateDir: t.TempDir(), AuthorizedKeys: []ssh.PublicKey{key.PublicKey()}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sim.Close() }()
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", sim.Addr())
		if err != nil {
			break
		}
		_ = c.Close()
		if time.Now().After(deadline) {
			t.Fatal("still listening after the context ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
