package routeros

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

func newTestSigner(t *testing.T) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return signer
}

// writeKnownHosts writes a known_hosts file pinning key for address.
func writeKnownHosts(t *testing.T, address string, key ssh.PublicKey) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "known_hosts")
	line := knownhosts.Line([]string{knownhosts.Normalize(address)}, key)
	if err := os.WriteFile(path, []byte("# RDS\n"+line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

var rdsAddr = &net.TCPAddr{IP: net.IPv4(192, 0, 2, 10), Port: 2222}

func TestHostKeyCallbackFingerprint(t *testing.T) {
	rds := newTestSigner(t).PublicKey()
	impostor := newTestSigner(t).PublicKey()
	fp := ssh.FingerprintSHA256(rds)

	for _, pinned := range []string{fp, fp + "=", " " + fp + "\n"} {
		check, err := HostKeyCallback("", pinned, false)
		if err != nil {
			t.Fatalf("HostKeyCallback(fingerprint %q): %v", pinned, err)
		}
		if err := check(rdsAddr.String(), rdsAddr, rds); err != nil {
			t.Errorf("pinned %q: the right key was refused: %v", pinned, err)
		}
		err = check(rdsAddr.String(), rdsAddr, impostor)
		if !errors.Is(err, ErrHostKeyMismatch) {
			t.Fatalf("pinned %q: a different key was accepted or refused oddly: %v", pinned, err)
		}
		if !strings.Contains(err.Error(), ssh.FingerprintSHA256(impostor)) {
			t.Errorf("refusal %q does not name the presented key's fingerprint", err)
		}
	}
}

func TestHostKeyCallbackRejectsMalformedFingerprints(t *testing.T) {
	for _, fp := range []string{
		"uS2jABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmno",       // no prefix
		"MD5:16:27:ac:a5:76:28:2d:36:63:1b:56:4d:eb:df:a6:48", // wrong algorithm
		"SHA256:tooshort",
		"SHA256:!!!!ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklm",
	} {
		if _, err := HostKeyCallback("", fp, false); err == nil {
			t.Errorf("fingerprint %q was accepted", fp)
		}
	}
}

func TestHostKeyCallbackKnownHosts(t *testing.T) {
	rds := newTestSigner(t).PublicKey()
	impostor := newTestSigner(t).PublicKey()
	path := writeKnownHosts(t, rdsAddr.String(), rds)

	check, err := HostKeyCallback(path, "", false)
	if err != nil {
		t.Fatal(err)
	}
	if err := check(rdsAddr.String(), rdsAddr, rds); err != nil {
		t.Errorf("the listed key was refused: %v", err)
	}

	err = check(rdsAddr.String(), rdsAddr, impostor)
	if !errors.Is(err, ErrHostKeyMismatch) || !strings.Contains(err.Error(), ssh.FingerprintSHA256(impostor)) {
		t.Errorf("a different key: got %v, want a mismatch naming %s", err, ssh.FingerprintSHA256(impostor))
	}
	if !strings.Contains(err.Error(), "does not match") {
		t.Errorf("a different key for a listed host should read as a mismatch: %v", err)
	}

	other := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 11), Port: 2222}
	err = check(other.String(), other, rds)
	if !errors.Is(err, ErrHostKeyMismatch) || !strings.Contains(err.Error(), "not listed") {
		t.Errorf("an unlisted host: got %v, want a refusal saying it is not listed", err)
	}
}

func TestHostKeyCallbackNeedsExactlyOneChoice(t *testing.T) {
	rds := newTestSigner(t).PublicKey()
	path := writeKnownHosts(t, rdsAddr.String(), rds)
	fp := ssh.FingerprintSHA256(rds)

	for _, c := range []struct {
		name        string
		file, print string
		insecure    bool
	}{
		{"none", "", "", false},
		{"file and fingerprint", path, fp, false},
		{"file and insecure", path, "", true},
		{"fingerprint and insecure", "", fp, true},
	} {
		if cb, err := HostKeyCallback(c.file, c.print, c.insecure); err == nil || cb != nil {
			t.Errorf("%s: got a callback, want an error", c.name)
		}
	}
}

func TestHostKeyCallbackMissingKnownHostsFile(t *testing.T) {
	if _, err := HostKeyCallback(filepath.Join(t.TempDir(), "absent"), "", false); err == nil {
		t.Fatal("a missing known_hosts file was accepted")
	}
}

func TestHostKeyCallbackInsecureAcceptsAnyKey(t *testing.T) {
	check, err := HostKeyCallback("", "", true)
	if err != nil {
		t.Fatal(err)
	}
	if err := check(rdsAddr.String(), rdsAddr, newTestSigner(t).PublicKey()); err != nil {
		t.Fatalf("insecure mode refused a key: %v", err)
	}
}
