package rdssim

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func newSigner(t *testing.T) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// fixture is a running simulator plus the key that may log in to it.
type fixture struct {
	sim *Sim
	key ssh.Signer
	cfg Config
}

// start runs a simulator on a fresh state directory; tweak adjusts the
// config before it starts. The simulator is closed when the test ends.
func start(t *testing.T, tweak func(*Config)) *fixture {
	t.Helper()
	key := newSigner(t)
	cfg := Config{StateDir: t.TempDir(), AuthorizedKeys: []ssh.PublicKey{key.PublicKey()}}
	if tweak != nil {
		tweak(&cfg)
	}
	return startWith(t, key, cfg)
}

func startWith(t *testing.T, key ssh.Signer, cfg Config) *fixture {
	t.Helper()
	sim, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	return &fixture{sim: sim, key: key, cfg: cfg}
}

func (f *fixture) dialAs(user string, key ssh.Signer) (*ssh.Client, error) {
	return ssh.Dial("tcp", f.sim.Addr(), &ssh.ClientConfig{
		User:            user,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(key)},
		HostKeyCallback: ssh.FixedHostKey(f.sim.HostKey()),
	})
}

// dial logs in as the configured user with the given console options
// ("" for none, "ct4096w" for a wide console).
func (f *fixture) dial(t *testing.T, opts string) *ssh.Client {
	t.Helper()
	user := DefaultUser
	if opts != "" {
		user += "+" + opts
	}
	c, err := f.dialAs(user, f.key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

type result struct {
	stdout, stderr string
	exit           int // -1 when the server sent no exit status
	err            error
}

// exec runs one command in its own session, like the driver does.
func exec(t *testing.T, c *ssh.Client, cmd string) result {
	t.Helper()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sess.Close() }()
	var out, errOut bytes.Buffer
	sess.Stdout, sess.Stderr = &out, &errOut
	err = sess.Run(cmd)
	r := result{stdout: out.String(), stderr: errOut.String()}
	var exitErr *ssh.ExitError
	var missing *ssh.ExitMissingError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		r.exit = exitErr.ExitStatus()
	case errors.As(err, &missing):
		r.exit = -1
	default:
		r.err = err
	}
	return r
}

// ok runs a command that must succeed and returns its stdout.
func ok(t *testing.T, c *ssh.Client, cmd string) string {
	t.Helper()
	r := exec(t, c, cmd)
	if r.err != nil || r.exit != 0 || r.stderr != "" || startsLikeFailure(r.stdout) {
		t.Fatalf("%s: want success, got %+v", cmd, r)
	}
	return r.stdout
}

func startsLikeFailure(out string) bool {
	for _, lead := range []string{"failure:", "syntax error", "expected end", "bad command", "no such item", "invalid value", "missing value", "rds-sim:"} {
		if strings.HasPrefix(out, lead) {
			return true
		}
	}
	return false
}

// addCmd builds the /disk add the driver sends for slot with size bytes.
func addCmd(slot string, size string) string {
	return `/disk add type=file file-path="/storage-pool/csi/` + slot + `.img" file-size=` + size +
		` slot="` + slot + `" mount-filesystem=no nvme-tcp-export=yes nvme-tcp-server-port=4420 nvme-tcp-server-nqn="nqn.2000-02.com.mikrotik:` + slot + `"`
}
