// Package harness starts the RouterOS simulator and a pinned RouterOS client
// for tests and benchmarks of the controller.
package harness

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/rds-csi/rds-csi/controller/routeros"
	"github.com/rds-csi/rds-csi/test/rdssim"
)

// User is the RouterOS user of the simulated RDS.
const User = "csi"

// RDS is a running simulator and a client connected to it.
type RDS struct {
	Sim    *rdssim.Sim
	Client *routeros.Client
	Disks  *routeros.Disks
	// Key is the client's private key, for a controller started as a
	// process (it reads the key from a file).
	Key ed25519.PrivateKey
}

// StartRDS starts a simulator with cfg (StateDir, User and AuthorizedKeys are
// filled in) and a client that pins its host key. Both stop when tb ends.
func StartRDS(tb testing.TB, cfg rdssim.Config, client routeros.ClientConfig) *RDS {
	tb.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		tb.Fatal(err)
	}
	if cfg.StateDir == "" {
		cfg.StateDir = tb.TempDir()
	}
	cfg.User = User
	cfg.AuthorizedKeys = append(cfg.AuthorizedKeys, signer.PublicKey())
	// The simulator lives as long as its context: the test's cleanup ends it.
	sim, err := rdssim.Start(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = sim.Close() })

	hostKey, err := routeros.HostKeyCallback("", ssh.FingerprintSHA256(sim.HostKey()), false)
	if err != nil {
		tb.Fatal(err)
	}
	client.Address = sim.Addr()
	client.User = User
	client.Signer = signer
	client.HostKeyCallback = hostKey
	c, err := routeros.NewClient(client)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return &RDS{Sim: sim, Client: c, Disks: routeros.NewDisks(c), Key: priv}
}
