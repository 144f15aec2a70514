// Package fabrics connects and disconnects NVMe over Fabrics controllers
// through the kernel's own interfaces — /dev/nvme-fabrics and sysfs — so the
// node needs no nvme-cli.
//
// The kernel's connect and delete are blocking system calls that a signal or
// a deadline cannot cut short. Connect and Disconnect therefore run them on a
// goroutine and return as soon as the context ends, with an error wrapping
// ctx.Err(); the abandoned call finishes on its own and closes its file. A
// connect abandoned this way may still create its controller: a retried
// Connect then gets EALREADY and adopts it.
package fabrics

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"

	"k8s.io/klog/v2"

	"github.com/rds-csi/rds-csi/kernel/internal/deadline"
	"github.com/rds-csi/rds-csi/kernel/sysfs"
)

// DefaultDevice is the fabrics control device (misc 10:124).
const DefaultDevice = "/dev/nvme-fabrics"

// maxConnectAttempts bounds retries after EINTR: a signal during the write
// aborts the kernel's connect, which is then safe to repeat. os.File already
// restarts a write that fails with EINTR; the retry here keeps the guarantee
// for any other Open and states the intent.
const maxConnectAttempts = 3

// maxReply bounds what is read back from the device; real replies are
// about 30 bytes, the token list a few hundred.
const maxReply = 4096

// Fabrics connects through Device and confirms and disconnects through Sysfs.
type Fabrics struct {
	Device string // DefaultDevice when empty
	Sysfs  sysfs.Tree
	// Open opens Device read-write; os.OpenFile when nil. Tests inject fakes
	// to produce kernel replies and errnos.
	Open func(path string) (io.ReadWriteCloser, error)
}

// Connected identifies the controller a connect produced or found.
type Connected struct {
	Controller string // "nvme3"
	Instance   int
	CntlID     int
	// Already is true when the kernel refused a duplicate (EALREADY) and an
	// existing controller with the same identity was confirmed in sysfs.
	Already bool
}

func (f *Fabrics) device() string {
	if f.Device == "" {
		return DefaultDevice
	}
	return f.Device
}

func (f *Fabrics) open() (io.ReadWriteCloser, error) {
	if f.Open != nil {
		return f.Open(f.device())
	}
	return os.OpenFile(f.device(), os.O_RDWR, 0)
}

// Connect creates a controller for o. If an equivalent controller exists
// (EALREADY) it is returned with Already set, but only after sysfs confirms
// one with the same transport, address, port, subsystem and host identity;
// otherwise Connect fails. Kernel errnos stay reachable with errors.Is.
func (f *Fabrics) Connect(ctx context.Context, o Options) (Connected, error) {
	if err := o.Validate(); err != nil {
		return Connected{}, err
	}
	opts := o.String()
	for attempt := 1; ; attempt++ {
		reply, err := deadline.Run(ctx, "connect "+o.NQN, func() (string, error) {
			reply, err := f.writeConnect(opts)
			if ctx.Err() != nil {
				// Nobody waits for this result any more, but a late success
				// created a controller: say so for whoever wonders where it came from.
				klog.InfoS("NVMe-oF connect finished after its caller gave up", "nqn", o.NQN, "reply", reply, "err", err)
			}
			return reply, err
		})
		switch {
		case err == nil:
			instance, cntlid, perr := parseConnectReply(reply)
			if perr != nil {
				return Connected{}, fmt.Errorf("connect %s: %w", o.NQN, perr)
			}
			return Connected{Controller: "nvme" + strconv.Itoa(instance), Instance: instance, CntlID: cntlid}, nil
		case errors.Is(err, syscall.EINTR) && attempt < maxConnectAttempts && ctx.Err() == nil:
			klog.V(2).InfoS("NVMe-oF connect interrupted, retrying", "nqn", o.NQN, "attempt", attempt)
		case errors.Is(err, syscall.EALREADY):
			return f.confirmExisting(o, err)
		default:
			return Connected{}, fmt.Errorf("connect %s at %s:%s: %w", o.NQN, o.TrAddr, o.TrSvcID, err)
		}
	}
}

// writeConnect is one connect attempt: a fresh handle, one write, one reply.
func (f *Fabrics) writeConnect(opts string) (string, error) {
	dev, err := f.open()
	if err != nil {
		return "", fmt.Errorf("open %s: %w", f.device(), err)
	}
	defer func() { _ = dev.Close() }()
	// One write: the kernel parses each write as a complete option string.
	n, err := dev.Write([]byte(opts))
	if err != nil {
		return "", fmt.Errorf("write %s: %w", f.device(), err)
	}
	if n != len(opts) {
		return "", fmt.Errorf("write %s: short write (%d of %d bytes)", f.device(), n, len(opts))
	}
	return readReply(dev)
}

func readReply(r io.Reader) (string, error) {
	s, err := bufio.NewReader(io.LimitReader(r, maxReply)).ReadString('\n')
	switch {
	case err == nil, errors.Is(err, io.EOF) && s != "":
		// A reply need not end in a newline; it ends where the handle does.
		return s, nil
	default:
		return "", fmt.Errorf("read reply: %w", err)
	}
}

// parseConnectReply accepts exactly "instance=N,cntlid=M" with an optional
// trailing newline, as the kernel prints it. Anything else — the token list
// a handle without a controller prints included — is refused.
func parseConnectReply(s string) (instance, cntlid int, err error) {
	malformed := fmt.Errorf("malformed connect reply %q", s)
	body := strings.TrimSuffix(s, "\n")
	first, second, ok := strings.Cut(body, ",")
	if !ok {
		return 0, 0, malformed
	}
	iv, ok1 := strings.CutPrefix(first, "instance=")
	cv, ok2 := strings.CutPrefix(second, "cntlid=")
	if !ok1 || !ok2 {
		return 0, 0, malformed
	}
	instance, ok1 = canonicalUint(iv, 1<<31-1)
	cntlid, ok2 = canonicalUint(cv, 0xffff)
	if !ok1 || !ok2 {
		return 0, 0, malformed
	}
	return instance, cntlid, nil
}

// canonicalUint parses decimal digits as the kernel's %d prints them: no
// sign, no leading zeros, at most limit.
func canonicalUint(s string, limit int) (int, bool) {
	if s == "" || len(s) > 10 || (len(s) > 1 && s[0] == '0') || strings.TrimLeft(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	if err != nil || n > limit {
		return 0, false
	}
	return n, true
}

// confirmExisting turns EALREADY into success only when sysfs shows exactly
// one controller the kernel would have considered a duplicate. A refusal that
// cannot be explained stays an error: reporting a connect that did not happen
// would stage a volume with no device behind it.
func (f *Fabrics) confirmExisting(o Options, connectErr error) (Connected, error) {
	ctrls, err := f.Sysfs.ControllersOf(o.NQN)
	if err != nil {
		return Connected{}, fmt.Errorf("connect %s: %w; confirming the existing controller: %w", o.NQN, connectErr, err)
	}
	var found []sysfs.Controller
	for _, c := range ctrls {
		if sameController(o, c) {
			found = append(found, c)
		}
	}
	switch len(found) {
	case 1:
		c := found[0]
		klog.V(2).InfoS("NVMe-oF controller already connected", "nqn", o.NQN, "controller", c.Name, "state", c.State)
		return Connected{Controller: c.Name, Instance: c.Instance, CntlID: c.CntlID, Already: true}, nil
	case 0:
		return Connected{}, fmt.Errorf("connect %s: %w, but no matching controller is in sysfs", o.NQN, connectErr)
	default:
		names := make([]string, len(found))
		for i, c := range found {
			names[i] = c.Name
		}
		return Connected{}, fmt.Errorf("connect %s: %w, and %d controllers match (%s): %w",
			o.NQN, connectErr, len(found), strings.Join(names, ", "), sysfs.ErrAmbiguous)
	}
}

// sameController mirrors the kernel's duplicate check for IP transports:
// same subsystem and host identity, same target, the same host_traddr and
// host_iface (both unset or both equal), and not on its way out.
func sameController(o Options, c sysfs.Controller) bool {
	switch c.State {
	case sysfs.StateDeleting, sysfs.StateDeletingNoIO, sysfs.StateDead:
		return false
	}
	return c.Transport == o.Transport &&
		c.SubsysNQN == o.NQN &&
		c.HostNQN == o.HostNQN &&
		strings.EqualFold(c.HostID, o.HostID) &&
		sameIP(c.TrAddr, o.TrAddr) &&
		samePort(c.TrSvcID, o.TrSvcID) &&
		sameOptionalIP(c.HostTrAddr, o.HostTrAddr) &&
		c.HostIface == o.HostIface
}

// sameIP compares addresses by value: sysfs prints what was written, which
// another tool may have spelled differently (IPv6 case, zero compression).
func sameIP(a, b string) bool {
	x, err1 := netip.ParseAddr(a)
	y, err2 := netip.ParseAddr(b)
	if err1 != nil || err2 != nil {
		return a == b
	}
	return x == y
}

func sameOptionalIP(a, b string) bool {
	if a == "" || b == "" {
		return a == b
	}
	return sameIP(a, b)
}

func samePort(a, b string) bool {
	x, err1 := strconv.Atoi(a)
	y, err2 := strconv.Atoi(b)
	return err1 == nil && err2 == nil && x == y
}

// Disconnect deletes the controller through sysfs. It decides no policy —
// which controllers may be disconnected is the caller's business — but it
// refuses a name that is not a controller name. A controller that is already
// gone gives an error wrapping fs.ErrNotExist; any failed write (EBUSY for a
// controller that never started, for one) is an error.
func (f *Fabrics) Disconnect(ctx context.Context, controller string) error {
	if !sysfs.ValidControllerName(controller) {
		return fmt.Errorf("disconnect: invalid controller name %q", controller)
	}
	_, err := deadline.Run(ctx, "disconnect "+controller, func() (struct{}, error) {
		return struct{}{}, f.Sysfs.DeleteController(controller)
	})
	if err != nil {
		return fmt.Errorf("disconnect %s: %w", controller, err)
	}
	return nil
}

// SupportedOptions lists the option tokens the kernel accepts, read from a
// fresh handle before anything is written. The 6.1 and 6.12 kernels tested
// print the list; older kernels refuse the read, which is returned as an error.
func (f *Fabrics) SupportedOptions(ctx context.Context) ([]string, error) {
	reply, err := deadline.Run(ctx, "read supported options", func() (string, error) {
		dev, err := f.open()
		if err != nil {
			return "", fmt.Errorf("open %s: %w", f.device(), err)
		}
		defer func() { _ = dev.Close() }()
		return readReply(dev)
	})
	if err != nil {
		return nil, err
	}
	return parseTokenList(reply)
}

// parseTokenList reads "instance=-1,cntlid=-1,transport=%s,traddr=%s,...,
// hdr_digest,data_digest\n": the two placeholders first, then the kernel's
// option patterns, from which only the names are kept.
func parseTokenList(s string) ([]string, error) {
	parts := strings.Split(strings.TrimSuffix(s, "\n"), ",")
	if len(parts) < 3 || parts[0] != "instance=-1" || parts[1] != "cntlid=-1" {
		return nil, fmt.Errorf("unexpected option list %q", s)
	}
	var out []string
	for _, p := range parts[2:] {
		name, _, _ := strings.Cut(p, "=")
		if name == "" {
			return nil, fmt.Errorf("unexpected option list %q", s)
		}
		out = append(out, name)
	}
	return out, nil
}
