package routeros

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
	"k8s.io/klog/v2"
)

// Defaults for the ClientConfig fields left zero.
const (
	DefaultWidth          = 4096
	DefaultCommandTimeout = 30 * time.Second
	DefaultDialTimeout    = 10 * time.Second
	DefaultMaxSessions    = 8
	DefaultBackoffInitial = 500 * time.Millisecond
	DefaultBackoffMax     = 30 * time.Second
)

// defaultCloseGrace is how long a session abandoned at its deadline may take
// to close before the whole connection is presumed hung and dropped.
const defaultCloseGrace = 2 * time.Second

// Backoff spaces out reconnection attempts after failed dials: Initial after
// the first failure, doubling up to Max.
type Backoff struct {
	Initial time.Duration
	Max     time.Duration
}

// ClientConfig configures a Client. Zero durations and counts take the
// Default* values.
type ClientConfig struct {
	// Address is the RDS SSH endpoint, host:port.
	Address string
	// User is the plain RouterOS user; the client appends the console
	// options "+ct<Width>w" (no colours, no terminal detection, a wide
	// console) so that output is neither decorated nor wrapped.
	User string
	// Width is the console width asked for.
	Width int
	// Signer is the private key for public-key authentication.
	Signer ssh.Signer
	// HostKeyCallback verifies the RDS host key; see HostKeyCallback.
	HostKeyCallback ssh.HostKeyCallback
	// CommandTimeout bounds every command whose context has a later
	// deadline or none.
	CommandTimeout time.Duration
	// DialTimeout bounds the TCP connect and the SSH handshake.
	DialTimeout time.Duration
	// MaxSessions bounds the exec sessions open at once on the connection.
	MaxSessions int
	// Backoff spaces out reconnection attempts.
	Backoff Backoff
	// Metrics may be nil.
	Metrics *Metrics
}

// Client runs RouterOS commands over one long-lived SSH connection, one exec
// session per command. It is safe for concurrent use.
//
// Reconnection: a connection found dead is dropped and the next command
// dials again at once. When dials fail, further attempts wait Backoff.Initial,
// doubling up to Backoff.Max; a command asked for inside that window fails at
// once with KindUnavailable rather than waiting, so that callers (which retry
// on Unavailable anyway) never pile up on an unreachable RDS.
type Client struct {
	cfg        ClientConfig
	login      string
	sessions   chan struct{}
	closeGrace time.Duration

	mu       sync.Mutex
	conn     *connection
	dialing  chan struct{} // closed when the dial in progress ends
	failures int           // consecutive failed dials
	retryAt  time.Time     // no dial before this
	lastErr  error         // why the last dial failed
	closed   bool
}

// connection is one SSH connection and the socket under it.
type connection struct {
	ssh  *ssh.Client
	wire *wireConn
	lost sync.Once
}

// wireConn remembers whether the socket has failed. The SSH library reports
// a broken connection to a running session the same way as a server that
// closed the channel without an exit status; the socket's own error tells
// the two apart. A read error is recorded before the library closes the
// session channels, so the flag is set by the time a session sees them close.
type wireConn struct {
	net.Conn
	broken atomic.Bool
}

func (w *wireConn) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	if err != nil {
		w.broken.Store(true)
	}
	return n, err
}

func (w *wireConn) Write(p []byte) (int, error) {
	n, err := w.Conn.Write(p)
	if err != nil {
		w.broken.Store(true)
	}
	return n, err
}

// NewClient validates cfg and returns a Client. It does not dial: the first
// command does, so a controller can start while the RDS is down.
func NewClient(cfg ClientConfig) (*Client, error) {
	if _, _, err := net.SplitHostPort(cfg.Address); err != nil {
		return nil, fmt.Errorf("RouterOS address %q: want host:port: %w", cfg.Address, err)
	}
	if cfg.User == "" || strings.ContainsAny(cfg.User, "+ \t\r\n") {
		return nil, fmt.Errorf("RouterOS user %q: want a plain user name without '+' (console options are added by the client) or spaces", cfg.User)
	}
	if cfg.Signer == nil {
		return nil, errors.New("RouterOS client: a private key is required (public-key authentication only)")
	}
	if cfg.HostKeyCallback == nil {
		return nil, errors.New("RouterOS client: a host key callback is required (see HostKeyCallback)")
	}
	if cfg.Width < 0 || cfg.CommandTimeout < 0 || cfg.DialTimeout < 0 || cfg.MaxSessions < 0 || cfg.Backoff.Initial < 0 || cfg.Backoff.Max < 0 {
		return nil, errors.New("RouterOS client: width, timeouts, session limit and backoff must not be negative")
	}
	defaultTo(&cfg.Width, DefaultWidth)
	defaultTo(&cfg.CommandTimeout, DefaultCommandTimeout)
	defaultTo(&cfg.DialTimeout, DefaultDialTimeout)
	defaultTo(&cfg.MaxSessions, DefaultMaxSessions)
	defaultTo(&cfg.Backoff.Initial, DefaultBackoffInitial)
	defaultTo(&cfg.Backoff.Max, DefaultBackoffMax)
	if cfg.Backoff.Max < cfg.Backoff.Initial {
		return nil, fmt.Errorf("RouterOS client: backoff maximum %s is below its initial %s", cfg.Backoff.Max, cfg.Backoff.Initial)
	}
	return &Client{
		cfg:        cfg,
		login:      cfg.User + "+ct" + strconv.Itoa(cfg.Width) + "w",
		sessions:   make(chan struct{}, cfg.MaxSessions),
		closeGrace: defaultCloseGrace,
	}, nil
}

func defaultTo[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// Run runs cmd and returns its standard output. Every failure is an *Error:
// KindTimeout when the deadline (the earlier of ctx's and CommandTimeout)
// passes, KindUnavailable when the RDS cannot be reached or the connection
// breaks (the command is then not retried: it may have taken effect), and
// otherwise the kind RouterOS' own message says (see Classify).
func (c *Client) Run(ctx context.Context, cmd Command) (string, error) {
	start := time.Now()
	out, err := c.run(ctx, cmd)
	c.cfg.Metrics.observeCommand(cmd.Kind(), err, time.Since(start))
	if err != nil {
		klog.V(4).InfoS("RouterOS command failed", "command", cmd.Kind(), "kind", KindOf(err), "duration", time.Since(start))
	} else {
		klog.V(4).InfoS("RouterOS command done", "command", cmd.Kind(), "duration", time.Since(start))
	}
	return out, err
}

// Ping checks that RouterOS answers a command; SSH keepalive requests are
// not supported there.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.Run(ctx, Identity())
	return err
}

// Close closes the connection. Commands running on it fail with
// KindUnavailable; later ones fail at once.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	conn := c.conn
	c.conn = nil
	c.mu.Unlock()
	if conn == nil {
		return nil
	}
	return conn.ssh.Close()
}

func (c *Client) run(ctx context.Context, cmd Command) (string, error) {
	if cmd.String() == "" {
		return "", &Error{Kind: KindInvalid, Command: cmd.Kind(), Err: errors.New("empty command")}
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.CommandTimeout)
	defer cancel()

	select {
	case c.sessions <- struct{}{}:
	case <-ctx.Done():
		return "", timeoutError(cmd, ctx.Err(), "waiting for a free session")
	}
	releaseSlot := true
	defer func() {
		if releaseSlot {
			<-c.sessions
		}
	}()

	klog.V(4).InfoS("RouterOS command", "command", cmd.Kind())
	klog.V(6).InfoS("RouterOS command text", "command", cmd.Kind(), "text", cmd.String())

	conn, sess, err := c.openSession(ctx, cmd)
	if err != nil {
		return "", err
	}

	var stdout, stderr bytes.Buffer
	sess.Stdout = &stdout
	sess.Stderr = &stderr
	done := make(chan error, 1)
	go func() { done <- sess.Run(cmd.String()) }()

	select {
	case runErr := <-done:
		_ = sess.Close()
		if runErr != nil && conn.wire.broken.Load() {
			c.drop(conn, runErr)
			return "", &Error{Kind: KindUnavailable, Command: cmd.Kind(), Output: capOutput(stderr.String()), Err: fmt.Errorf("%w: %w", errConnLost, runErr)}
		}
		if err := Classify(cmd.Kind(), runErr, stdout.String(), stderr.String()); err != nil {
			return "", err
		}
		return stdout.String(), nil
	case <-ctx.Done():
		// The session still counts against MaxSessions until it is gone,
		// so its slot goes with it to the cleanup.
		releaseSlot = false
		go c.abandon(cmd, conn, sess, done)
		return "", timeoutError(cmd, ctx.Err(), "")
	}
}

// abandon closes a session whose deadline passed. RouterOS has no way to
// interrupt a command, so closing the channel is all we can ask; if even that
// goes unanswered the connection is presumed hung and dropped, which ends
// every session on it and makes the next command redial.
func (c *Client) abandon(cmd Command, conn *connection, sess *ssh.Session, done <-chan error) {
	defer func() { <-c.sessions }()
	// Close may block on a hung socket; dropping the connection unblocks it.
	go func() { _ = sess.Close() }()
	grace := time.NewTimer(c.closeGrace)
	defer grace.Stop()
	select {
	case err := <-done:
		klog.V(4).InfoS("Abandoned RouterOS session ended", "command", cmd.Kind(), "err", err)
		return
	case <-grace.C:
	}
	klog.InfoS("RouterOS session did not close after its deadline; dropping the connection", "command", cmd.Kind(), "address", c.cfg.Address)
	c.drop(conn, errors.New("session did not close after its deadline"))
	grace.Reset(c.closeGrace)
	select {
	case err := <-done:
		klog.V(4).InfoS("Abandoned RouterOS session ended", "command", cmd.Kind(), "err", err)
	case <-grace.C:
		klog.ErrorS(nil, "RouterOS session still running after its connection was closed", "command", cmd.Kind())
	}
}

// openSession opens an exec session, dialling first when there is no live
// connection. Opening a session sends nothing of the command, so a failure
// there may be retried once on a fresh connection: it usually means the RDS
// closed an idle connection we had not noticed yet.
func (c *Client) openSession(ctx context.Context, cmd Command) (*connection, *ssh.Session, error) {
	for attempt := 1; ; attempt++ {
		conn, err := c.connection(ctx, cmd)
		if err != nil {
			return nil, nil, err
		}
		sess, err := conn.ssh.NewSession()
		if err == nil {
			return conn, sess, nil
		}
		var refused *ssh.OpenChannelError
		if errors.As(err, &refused) {
			// The connection is alive; RouterOS declined another session.
			return nil, nil, &Error{Kind: KindUnavailable, Command: cmd.Kind(), Err: fmt.Errorf("opening a session: %w", err)}
		}
		c.drop(conn, err)
		if attempt == 2 || ctx.Err() != nil {
			return nil, nil, &Error{Kind: KindUnavailable, Command: cmd.Kind(), Err: fmt.Errorf("opening a session: %w", err)}
		}
		klog.V(2).InfoS("RouterOS connection was dead when opening a session; reconnecting", "address", c.cfg.Address, "err", err)
	}
}

// connection returns the live connection, dialling when there is none. One
// caller dials at a time; the others wait for its result.
func (c *Client) connection(ctx context.Context, cmd Command) (*connection, error) {
	for {
		c.mu.Lock()
		switch {
		case c.closed:
			c.mu.Unlock()
			return nil, &Error{Kind: KindUnavailable, Command: cmd.Kind(), Err: errors.New("client closed")}
		case c.conn != nil:
			conn := c.conn
			c.mu.Unlock()
			return conn, nil
		case c.dialing != nil:
			dialing := c.dialing
			c.mu.Unlock()
			select {
			case <-dialing:
				continue
			case <-ctx.Done():
				return nil, timeoutError(cmd, ctx.Err(), "waiting for a connection")
			}
		}
		if wait := time.Until(c.retryAt); wait > 0 {
			lastErr := c.lastErr
			c.mu.Unlock()
			return nil, &Error{Kind: KindUnavailable, Command: cmd.Kind(), Err: fmt.Errorf("not reconnecting to %s for another %s after a failed attempt: %w", c.cfg.Address, wait.Round(time.Millisecond), lastErr)}
		}
		dialing := make(chan struct{})
		c.dialing = dialing
		c.mu.Unlock()

		conn, err := c.dial(ctx)

		c.mu.Lock()
		c.dialing = nil
		close(dialing)
		if err == nil && c.closed {
			_ = conn.ssh.Close()
			err = errors.New("client closed")
		}
		switch {
		case err == nil:
			c.failures = 0
			c.lastErr = nil
			c.conn = conn
		case errors.Is(ctx.Err(), context.Canceled):
			// The caller gave up; that says nothing about the RDS.
		default:
			c.failures++
			c.lastErr = err
			c.retryAt = time.Now().Add(c.backoff(c.failures))
		}
		failures := c.failures
		c.mu.Unlock()

		if err != nil {
			klog.ErrorS(err, "Cannot connect to RouterOS", "address", c.cfg.Address, "consecutiveFailures", failures)
			if ctx.Err() != nil {
				return nil, timeoutError(cmd, ctx.Err(), "connecting")
			}
			return nil, &Error{Kind: KindUnavailable, Command: cmd.Kind(), Err: fmt.Errorf("connecting to %s: %w", c.cfg.Address, err)}
		}
		klog.InfoS("Connected to RouterOS", "address", c.cfg.Address, "user", c.login)
		go func() {
			// Wait ends when the connection does, for whatever reason.
			_ = conn.ssh.Wait()
			c.drop(conn, errors.New("connection closed"))
		}()
		return conn, nil
	}
}

// backoff is the wait after the n-th consecutive failed dial.
func (c *Client) backoff(n int) time.Duration {
	d := c.cfg.Backoff.Initial
	for i := 1; i < n && d < c.cfg.Backoff.Max; i++ {
		d *= 2
	}
	return min(d, c.cfg.Backoff.Max)
}

func (c *Client) dial(ctx context.Context) (*connection, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()

	var dialer net.Dialer
	raw, err := dialer.DialContext(ctx, "tcp", c.cfg.Address)
	if err != nil {
		return nil, err
	}
	// ssh.NewClientConn takes no context: the socket deadline bounds the
	// handshake, and cancellation expires the deadline at once.
	if deadline, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(deadline)
	}
	stop := context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Unix(1, 0)) })
	wire := &wireConn{Conn: raw}
	sshConn, chans, reqs, err := ssh.NewClientConn(wire, c.cfg.Address, &ssh.ClientConfig{
		User:            c.login,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(c.cfg.Signer)},
		HostKeyCallback: c.cfg.HostKeyCallback,
	})
	if !stop() && err == nil {
		// The context ended just as the handshake finished and has already
		// expired the socket: the connection is unusable.
		_ = sshConn.Close()
		return nil, ctx.Err()
	}
	if err != nil {
		_ = raw.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("SSH handshake cut short (%w): %w", ctx.Err(), err)
		}
		return nil, err
	}
	if err := raw.SetDeadline(time.Time{}); err != nil {
		_ = sshConn.Close()
		return nil, err
	}
	return &connection{ssh: ssh.NewClient(sshConn, chans, reqs), wire: wire}, nil
}

// drop forgets conn (if it is still the current one) and closes it. It runs
// once per connection however many sessions notice the failure.
func (c *Client) drop(conn *connection, reason error) {
	conn.lost.Do(func() {
		c.mu.Lock()
		if c.conn == conn {
			c.conn = nil
		}
		closed := c.closed
		c.mu.Unlock()
		_ = conn.ssh.Close()
		if !closed {
			klog.InfoS("RouterOS connection lost; the next command reconnects", "address", c.cfg.Address, "reason", reason.Error())
		}
	})
}

func timeoutError(cmd Command, ctxErr error, while string) error {
	err := ctxErr
	if while != "" {
		err = fmt.Errorf("%s: %w", while, ctxErr)
	}
	return &Error{Kind: KindTimeout, Command: cmd.Kind(), Err: err}
}
