package rdssim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"k8s.io/klog/v2"
)

// serverVersion is the banner RouterOS' SSH server presents.
const serverVersion = "SSH-2.0-ROSSSH"

// handshakeTimeout keeps a client that connects and says nothing from
// holding a goroutine forever.
const handshakeTimeout = 10 * time.Second

func (s *Sim) serverConfig() *ssh.ServerConfig {
	cfg := &ssh.ServerConfig{
		ServerVersion: serverVersion,
		PublicKeyCallback: func(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			opts, err := parseLogin(meta.User())
			if err != nil {
				return nil, err
			}
			if opts.user != s.cfg.User {
				return nil, fmt.Errorf("unknown user %q", opts.user)
			}
			for _, k := range s.cfg.AuthorizedKeys {
				if bytes.Equal(k.Marshal(), key.Marshal()) {
					return &ssh.Permissions{Extensions: map[string]string{"width": strconv.Itoa(opts.width)}}, nil
				}
			}
			return nil, errors.New("key not authorized")
		},
	}
	cfg.AddHostKey(s.hostKey)
	return cfg
}

func (s *Sim) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return // the listener was closed
		}
		s.mu.Lock()
		refuse, closed := s.faults.refuse, s.closed
		if !refuse && !closed {
			s.conns[c] = struct{}{}
			s.wg.Add(1)
		}
		s.mu.Unlock()
		if refuse || closed {
			// A reset, not a polite close: what a client sees when the
			// RDS's SSH service is down.
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			_ = c.Close()
			continue
		}
		go s.handleConn(c)
	}
}

func (s *Sim) handleConn(nc net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, nc)
		s.mu.Unlock()
		_ = nc.Close()
	}()
	_ = nc.SetDeadline(time.Now().Add(handshakeTimeout))
	sc, chans, reqs, err := ssh.NewServerConn(nc, s.sshCfg)
	if err != nil {
		klog.V(2).InfoS("SSH handshake failed", "remote", nc.RemoteAddr(), "err", err)
		return
	}
	defer func() { _ = sc.Close() }()
	_ = nc.SetDeadline(time.Time{})
	width, _ := strconv.Atoi(sc.Permissions.Extensions["width"])
	klog.V(2).InfoS("SSH login", "remote", nc.RemoteAddr(), "user", sc.User(), "width", width)

	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Keepalives and every other global request are refused, as
		// RouterOS reportedly does.
		for r := range reqs {
			if r.WantReply {
				_ = r.Reply(false, nil)
			}
		}
	}()

	// One token per open session. A session gives its token back before it
	// closes its channel, so a client that opens a new session as soon as
	// it sees the old one closed always finds the slot free.
	slots := make(chan struct{}, s.cfg.MaxSessions)
	for nch := range chans {
		if nch.ChannelType() != "session" {
			_ = nch.Reject(ssh.UnknownChannelType, "only sessions are supported")
			continue
		}
		if !acquire(slots) {
			_ = nch.Reject(ssh.ResourceShortage, "too many sessions")
			continue
		}
		ch, creqs, err := nch.Accept()
		if err != nil {
			<-slots
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.session(ctx, ch, creqs, width, &wg, func() { <-slots })
		}()
	}
	// chans closes when the connection ends: stop what still runs on it.
	cancel()
}

// sessionGrace is how long a session open waits for a slot before it is
// rejected. When a client closes a session itself, the server learns it on
// another goroutine; the grace keeps a client that reopens at once from
// being refused a slot that is about to be free, as OpenSSH (which handles
// the close first, in order) would not refuse it either.
const sessionGrace = 100 * time.Millisecond

func acquire(slots chan struct{}) bool {
	select {
	case slots <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(sessionGrace)
	defer t.Stop()
	select {
	case slots <- struct{}{}:
		return true
	case <-t.C:
		return false
	}
}

// session serves one channel: exactly one exec, no PTY, no shell. release
// gives the session's slot back, before the channel closes.
func (s *Sim) session(parent context.Context, ch ssh.Channel, reqs <-chan *ssh.Request, width int, wg *sync.WaitGroup, release func()) {
	defer func() { _ = ch.Close() }()
	defer release()
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	execs := make(chan string, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		// The request stream closes when the client closes the channel or
		// the connection ends: that is how a hung command learns to stop.
		defer cancel()
		ran := false
		for r := range reqs {
			var payload struct{ Command string }
			if r.Type != "exec" || ran || ssh.Unmarshal(r.Payload, &payload) != nil {
				// pty-req, shell, env, subsystem, a second exec: declined.
				_ = r.Reply(false, nil)
				continue
			}
			ran = true
			_ = r.Reply(true, nil)
			execs <- payload.Command
		}
	}()
	select {
	case line := <-execs:
		s.execute(ctx, ch, line, width)
	case <-ctx.Done():
	}
}

// execute runs one command through the fault levers and writes its output.
func (s *Sim) execute(ctx context.Context, ch ssh.Channel, line string, width int) {
	latency, failure, hang := s.receive(line)
	if !sleepCtx(ctx, latency) {
		return
	}
	if hang {
		<-ctx.Done()
		return
	}
	errText := ""
	if failure != nil {
		errText = *failure
	} else if err := s.eng.run(ctx, line, width, func(lines []string) { writeLines(ch, lines) }); err != nil {
		errText = err.text
	}
	if ctx.Err() != nil {
		return // the client left mid-stream: nobody to answer
	}
	status := uint32(0)
	if errText != "" {
		var out io.Writer = ch
		if s.cfg.ErrorsOnStderr {
			out = ch.Stderr()
		}
		writeLines(out, strings.Split(errText, "\n"))
		if s.cfg.ErrorExitStatus {
			status = 1
		}
	}
	if !s.cfg.OmitExitStatus {
		_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{status}))
	}
	_ = ch.CloseWrite()
}

// writeLines writes lines with RouterOS' CRLF endings.
func writeLines(w io.Writer, lines []string) {
	if len(lines) == 0 {
		return
	}
	_, _ = w.Write([]byte(strings.Join(lines, "\r\n") + "\r\n"))
}
