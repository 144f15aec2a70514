package rdssim

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/crypto/ssh"
)

// HostKeyFile is the name of the generated host key inside StateDir.
const HostKeyFile = "ssh_host_ed25519_key"

// loadOrCreateHostKey keeps one host key per state directory, so a
// restarted simulator presents the key its clients pinned.
func loadOrCreateHostKey(dir string) (ssh.Signer, error) {
	p := filepath.Join(dir, HostKeyFile)
	data, err := os.ReadFile(p)
	if err == nil {
		return ssh.ParsePrivateKey(data)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, "rds-sim host key")
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(p, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, err
	}
	return ssh.NewSignerFromKey(priv)
}
