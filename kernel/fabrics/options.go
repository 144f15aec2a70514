package fabrics

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// Options are the connect options written to /dev/nvme-fabrics. Every value
// ends up inside one comma-separated kernel option string, so Validate admits
// only values that cannot carry a separator: nothing a caller passes can add
// or change a token.
//
// Zero values are literal, not defaults: a CtrlLossTmo of 0 gives the
// controller up at the first loss and a FastIOFailTmo of 0 fails queued I/O
// at once. Callers set every tunable explicitly.
type Options struct {
	Transport string // "tcp" or "rdma"
	TrAddr    string // target IP address; the kernel does not resolve names
	TrSvcID   string // target port, decimal
	NQN       string // subsystem NQN
	HostNQN   string // always explicit: without it the kernel uses a random per-boot NQN
	HostID    string // UUID

	CtrlLossTmo    int // seconds; -1 reconnects forever
	ReconnectDelay int // seconds between reconnect attempts
	KeepAliveTmo   int // seconds
	FastIOFailTmo  int // seconds; -1 leaves it off (the token is omitted)

	// Optional; the zero value omits the token and leaves the kernel default.
	HostTrAddr string // local IP address to connect from
	HostIface  string // local interface to connect through (kernel >= 5.14)
	NrIOQueues int    // number of I/O queues
	QueueSize  int    // I/O queue depth
}

// ErrInvalidOptions is wrapped by every validation error.
var ErrInvalidOptions = errors.New("invalid NVMe-oF connect options")

// MaxNQNLen is the longest NQN the NVMe specification allows, in bytes.
const MaxNQNLen = 223

var (
	// An NQN in the NVMe "nqn.yyyy-mm.<reverse domain>:<string>" form, which
	// includes the "nqn.2014-08.org.nvmexpress:uuid:<uuid>" form. The user
	// part is narrowed to characters that cannot separate kernel options.
	nqnRE   = regexp.MustCompile(`^nqn\.[0-9]{4}-(0[1-9]|1[0-2])\.[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*:[A-Za-z0-9._:-]+$`)
	uuidRE  = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	ifaceRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,14}$`)
	portRE  = regexp.MustCompile(`^[1-9][0-9]{0,4}$`)
)

// Ranges of the tunables. They match the volume-context limits, so a value
// the controller accepted is never refused here.
const (
	maxCtrlLossTmo    = 86400
	maxReconnectDelay = 3600
	maxKeepAliveTmo   = 3600
	maxFastIOFailTmo  = 3600
	maxNrIOQueues     = 1024
	minQueueSize      = 16 // the kernel's NVMF_MIN_QUEUE_SIZE
	maxQueueSize      = 1024
)

// Validate checks every field. It is what makes String safe to hand to the
// kernel.
func (o Options) Validate() error {
	var errs []error
	bad := func(field, value, want string) {
		errs = append(errs, fmt.Errorf("%s %q: want %s", field, value, want))
	}
	if o.Transport != "tcp" && o.Transport != "rdma" {
		bad("transport", o.Transport, "tcp or rdma")
	}
	if !validIP(o.TrAddr) {
		bad("traddr", o.TrAddr, "an IPv4 or IPv6 address without zone")
	}
	if !validPort(o.TrSvcID) {
		bad("trsvcid", o.TrSvcID, "a port number 1-65535")
	}
	if !ValidNQN(o.NQN) {
		bad("nqn", o.NQN, "an NQN nqn.yyyy-mm.<domain>:<name> of at most 223 bytes")
	}
	if !ValidNQN(o.HostNQN) {
		bad("hostnqn", o.HostNQN, "an NQN nqn.yyyy-mm.<domain>:<name> of at most 223 bytes")
	}
	if !validHostID(o.HostID) {
		bad("hostid", o.HostID, "a non-nil UUID")
	}
	intRange := func(field string, v, lo, hi int) {
		if v < lo || v > hi {
			errs = append(errs, fmt.Errorf("%s %d: want %d to %d", field, v, lo, hi))
		}
	}
	intRange("ctrl_loss_tmo", o.CtrlLossTmo, -1, maxCtrlLossTmo)
	intRange("reconnect_delay", o.ReconnectDelay, 1, maxReconnectDelay)
	intRange("keep_alive_tmo", o.KeepAliveTmo, 1, maxKeepAliveTmo)
	intRange("fast_io_fail_tmo", o.FastIOFailTmo, -1, maxFastIOFailTmo)
	if o.HostTrAddr != "" && !validIP(o.HostTrAddr) {
		bad("host_traddr", o.HostTrAddr, "an IPv4 or IPv6 address without zone")
	}
	if o.HostIface != "" && !ifaceRE.MatchString(o.HostIface) {
		bad("host_iface", o.HostIface, "an interface name")
	}
	if o.NrIOQueues != 0 {
		intRange("nr_io_queues", o.NrIOQueues, 1, maxNrIOQueues)
	}
	if o.QueueSize != 0 {
		intRange("queue_size", o.QueueSize, minQueueSize, maxQueueSize)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalidOptions, errors.Join(errs...))
	}
	return nil
}

// ValidNQN reports whether s is an NQN this package will pass to the kernel.
func ValidNQN(s string) bool { return len(s) <= MaxNQNLen && nqnRE.MatchString(s) }

func validIP(s string) bool {
	a, err := netip.ParseAddr(s)
	// A zone could be any interface name, separators included; and the
	// unspecified address cannot be connected to.
	return err == nil && a.Zone() == "" && !a.IsUnspecified()
}

func validPort(s string) bool {
	if !portRE.MatchString(s) {
		return false
	}
	n, err := strconv.Atoi(s)
	return err == nil && n <= 65535
}

func validHostID(s string) bool {
	return uuidRE.MatchString(s) && s != "00000000-0000-0000-0000-000000000000"
}

// token is one key=value pair of the option string.
type token struct{ key, value string }

func (o Options) tokens() []token {
	ts := []token{
		{"transport", o.Transport},
		{"traddr", o.TrAddr},
		{"trsvcid", o.TrSvcID},
		{"nqn", o.NQN},
		{"hostnqn", o.HostNQN},
		{"hostid", o.HostID},
		{"ctrl_loss_tmo", strconv.Itoa(o.CtrlLossTmo)},
		{"reconnect_delay", strconv.Itoa(o.ReconnectDelay)},
		{"keep_alive_tmo", strconv.Itoa(o.KeepAliveTmo)},
	}
	if o.FastIOFailTmo >= 0 {
		ts = append(ts, token{"fast_io_fail_tmo", strconv.Itoa(o.FastIOFailTmo)})
	}
	if o.HostTrAddr != "" {
		ts = append(ts, token{"host_traddr", o.HostTrAddr})
	}
	if o.HostIface != "" {
		ts = append(ts, token{"host_iface", o.HostIface})
	}
	if o.NrIOQueues != 0 {
		ts = append(ts, token{"nr_io_queues", strconv.Itoa(o.NrIOQueues)})
	}
	if o.QueueSize != 0 {
		ts = append(ts, token{"queue_size", strconv.Itoa(o.QueueSize)})
	}
	return ts
}

// String renders the kernel option string. It is safe to write only after
// Validate succeeded; it contains no secrets, so it may be logged.
func (o Options) String() string {
	var b strings.Builder
	for i, t := range o.tokens() {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(t.key)
		b.WriteByte('=')
		b.WriteString(t.value)
	}
	return b.String()
}

// Keys lists the option tokens String will use, to compare with
// SupportedOptions before connecting (fast_io_fail_tmo and host_iface are
// missing from older kernels, which then refuse the whole connect).
func (o Options) Keys() []string {
	ts := o.tokens()
	keys := make([]string, len(ts))
	for i, t := range ts {
		keys[i] = t.key
	}
	return keys
}
