// Package rdssim is an SSH server that behaves like the RouterOS CLI of a
// MikroTik RDS for the commands the driver sends, printing what the hardware
// reportedly prints, quirks included. It is the project's only stand-in for
// an RDS, so it is strict: whatever it is unsure RouterOS accepts, it
// refuses. docs/routeros.md lists the commands, the formats and the guesses.
package rdssim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// Config configures a simulator. StateDir and AuthorizedKeys are required.
type Config struct {
	// Addr is the listen address; "127.0.0.1:0" when empty.
	Addr string
	// StateDir holds the persisted state (state.json), the generated host
	// key and the backing files under files/, mirroring RouterOS paths.
	StateDir string
	// User is the login name before any "+options"; "admin" when empty.
	User string
	// AuthorizedKeys are the public keys allowed to log in.
	AuthorizedKeys []ssh.PublicKey
	// HostKey is the server's key. When nil an ed25519 key is loaded from
	// StateDir, or generated there on first start, so clients can pin it.
	HostKey ssh.Signer
	// Identity is what /system identity print shows; "rds-sim" when empty.
	Identity string
	// PoolMountPoint is the pool the file disks live on; "storage-pool"
	// when empty.
	PoolMountPoint string
	// PoolSize is the pool's capacity in bytes; 1 TiB when zero.
	PoolSize int64
	// MaxSessions bounds concurrent sessions per connection; over it a
	// session open is rejected. 10 (OpenSSH's default) when zero.
	MaxSessions int
	// ErrorsOnStderr sends error text to stderr instead of stdout.
	ErrorsOnStderr bool
	// ErrorExitStatus makes failed commands exit 1 instead of 0.
	ErrorExitStatus bool
	// OmitExitStatus sends no exit status at all, which some SSH servers do.
	OmitExitStatus bool
	// Latency delays every command before it runs.
	Latency time.Duration
	// CopyDelay, when positive, makes /disk add copy-from=... return at
	// once and copy in the background for about that long, the disk's
	// size= growing with the bytes copied (docs/routeros.md, item 6).
	// Zero copies synchronously, a reflink where the filesystem allows.
	CopyDelay time.Duration
	// Exporter serves exported disks; a no-op when nil.
	Exporter Exporter
	// CommandLog, when set, receives every command received, one a line.
	CommandLog io.Writer
}

// Default values of Config fields left empty.
const (
	DefaultUser        = "admin"
	DefaultIdentity    = "rds-sim"
	DefaultMountPoint  = "storage-pool"
	DefaultPoolSize    = int64(1) << 40
	DefaultMaxSessions = 10
)

// Sim is a running simulator. Its methods are safe for concurrent use.
type Sim struct {
	cfg     Config
	ln      net.Listener
	sshCfg  *ssh.ServerConfig
	hostKey ssh.Signer
	eng     *engine

	ctx       context.Context // ends when the simulator closes
	cancel    context.CancelFunc
	stopAfter func() bool
	closeOnce sync.Once
	wg        sync.WaitGroup

	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	closed   bool
	commands []string
	faults   faults
}

// faults are the levers tests pull; guarded by Sim.mu.
type faults struct {
	latency  time.Duration
	refuse   bool
	received int            // commands received so far
	failAt   map[int]string // command number -> output it fails with
	hangNext bool
	hangRE   *regexp.Regexp
}

// Start opens the state, listens and serves until Close or until ctx ends.
func Start(ctx context.Context, cfg Config) (*Sim, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	hostKey := cfg.HostKey
	if hostKey == nil {
		var err error
		if hostKey, err = loadOrCreateHostKey(cfg.StateDir); err != nil {
			return nil, fmt.Errorf("host key: %w", err)
		}
	}
	st, err := openStore(cfg.StateDir, cfg.PoolMountPoint, cfg.PoolSize)
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	eng := &engine{st: st, exporter: cfg.Exporter, identity: cfg.Identity, copyDelay: cfg.CopyDelay}
	// A restarted RDS serves its exported disks again. A copy the restart
	// interrupted stays as far as it got, never exported.
	for _, d := range st.disks {
		if d.Export && !d.Copying {
			if err := eng.exporter.Export(eng.exported(d)); err != nil {
				return nil, fmt.Errorf("export %s: %w", d.Slot, err)
			}
		}
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, err
	}
	s := &Sim{
		cfg:     cfg,
		ln:      ln,
		hostKey: hostKey,
		eng:     eng,
		conns:   map[net.Conn]struct{}{},
		faults:  faults{latency: cfg.Latency, failAt: map[int]string{}},
	}
	s.sshCfg = s.serverConfig()
	s.ctx, s.cancel = context.WithCancel(context.Background())
	eng.ctx, eng.wg = s.ctx, &s.wg
	s.stopAfter = context.AfterFunc(ctx, func() { _ = s.Close() })
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

func (c *Config) setDefaults() error {
	if c.StateDir == "" {
		return errors.New("rdssim: StateDir is required")
	}
	if len(c.AuthorizedKeys) == 0 {
		return errors.New("rdssim: AuthorizedKeys is empty: nobody could log in")
	}
	if c.Addr == "" {
		c.Addr = "127.0.0.1:0"
	}
	if c.User == "" {
		c.User = DefaultUser
	}
	if c.Identity == "" {
		c.Identity = DefaultIdentity
	}
	if c.PoolMountPoint == "" {
		c.PoolMountPoint = DefaultMountPoint
	}
	if !pathPartRE.MatchString(c.PoolMountPoint) || c.PoolMountPoint == "." || c.PoolMountPoint == ".." {
		return fmt.Errorf("rdssim: bad PoolMountPoint %q", c.PoolMountPoint)
	}
	if c.PoolSize == 0 {
		c.PoolSize = DefaultPoolSize
	}
	if c.PoolSize < 0 {
		return fmt.Errorf("rdssim: negative PoolSize %d", c.PoolSize)
	}
	if c.MaxSessions == 0 {
		c.MaxSessions = DefaultMaxSessions
	}
	if c.Exporter == nil {
		c.Exporter = noExport{}
	}
	return nil
}

// Addr is the address the simulator listens on.
func (s *Sim) Addr() string { return s.ln.Addr().String() }

// HostKey is the server's public host key, for clients to pin.
func (s *Sim) HostKey() ssh.PublicKey { return s.hostKey.PublicKey() }

// Commands returns every command text received so far, in order, including
// the ones that failed, hung or were refused.
func (s *Sim) Commands() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.commands...)
}

// Disks returns the file disks as they are now, in print order.
func (s *Sim) Disks() []Disk {
	s.eng.mu.Lock()
	defer s.eng.mu.Unlock()
	out := make([]Disk, 0, len(s.eng.st.disks))
	for _, d := range s.eng.st.disks {
		out = append(out, s.eng.exported(d))
	}
	return out
}

// Close stops listening, ends every connection (hung commands included) and
// waits until every goroutine of the simulator has returned.
func (s *Sim) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.stopAfter()
		s.mu.Lock()
		s.closed = true
		for c := range s.conns {
			_ = c.Close()
		}
		s.mu.Unlock()
		err = s.ln.Close()
		s.cancel()
		s.wg.Wait()
	})
	return err
}
