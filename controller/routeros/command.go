package routeros

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Command is one RouterOS CLI command, built only by the constructors in this
// file from validated values. Its zero value is not runnable.
type Command struct {
	kind string
	text string
}

// Kind is a short, low-cardinality label for logs and metrics ("disk-add").
func (c Command) Kind() string { return c.kind }

// String is the exact text sent to RouterOS.
func (c Command) String() string { return c.text }

// Limits for the values we send. New slots are at most MaxNewSlotLen long
// (RouterOS 7.24 refuses longer ones); existing slots of up to MaxSlotLen
// (the earlier driver's 40-character pvc-<uuid>) can still be addressed.
const (
	MaxNewSlotLen = 32
	MaxSlotLen    = 64
	maxPathLen    = 255
	maxNQNLen     = 223 // NVMe base specification, NQN field size
	// MaxSize bounds a disk size: 1 PiB is far above any RDS pool and keeps
	// every size exact in an int64 and in RouterOS' integer parser.
	MaxSize = int64(1) << 50
)

var (
	slotRE       = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	pathPartRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	nqnRE        = regexp.MustCompile(`^nqn\.[0-9]{4}-[0-9]{2}\.[a-z0-9][a-z0-9.-]*:[A-Za-z0-9][A-Za-z0-9._:-]*$`)
	mountPointRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
)

// ValidateSlot checks a slot name we address (not necessarily one we create).
func ValidateSlot(slot string) error {
	if len(slot) == 0 || len(slot) > MaxSlotLen || !slotRE.MatchString(slot) {
		return invalidValue("slot", slot, "1-64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit")
	}
	return nil
}

// ValidateNewSlot checks a slot name we are about to create.
func ValidateNewSlot(slot string) error {
	if err := ValidateSlot(slot); err != nil {
		return err
	}
	if len(slot) > MaxNewSlotLen {
		return invalidValue("slot", slot, fmt.Sprintf("a new slot has at most %d characters", MaxNewSlotLen))
	}
	return nil
}

// ValidateFilePath checks an absolute path of a backing file or directory on
// the RDS: '/'-separated parts of safe characters, no "." or ".." parts.
func ValidateFilePath(p string) error {
	if len(p) < 2 || len(p) > maxPathLen || p[0] != '/' {
		return invalidValue("file path", p, "an absolute path of at most 255 characters")
	}
	for _, part := range strings.Split(p[1:], "/") {
		if !pathPartRE.MatchString(part) || part == "." || part == ".." {
			return invalidValue("file path", p, "parts of letters, digits, '.', '_' or '-' not starting with '.'")
		}
	}
	return nil
}

// ValidateNQN checks an NVMe Qualified Name of the nqn.yyyy-mm.domain:name form.
func ValidateNQN(nqn string) error {
	if len(nqn) > maxNQNLen || !nqnRE.MatchString(nqn) {
		return invalidValue("NQN", nqn, "nqn.yyyy-mm.<reverse domain>:<name> with letters, digits, '.', '_', ':' or '-', at most 223 bytes")
	}
	return nil
}

// ValidatePort checks a TCP port.
func ValidatePort(port int) error {
	if port < 1 || port > 65535 {
		return invalidValue("port", strconv.Itoa(port), "1-65535")
	}
	return nil
}

// ValidateSize checks a disk size in bytes.
func ValidateSize(size int64) error {
	if size <= 0 || size > MaxSize {
		return invalidValue("size", strconv.FormatInt(size, 10), "1 byte to 1 PiB")
	}
	return nil
}

// ValidateMountPoint checks the name of the pool's mount point ("storage-pool").
func ValidateMountPoint(mp string) error {
	if len(mp) == 0 || len(mp) > maxPathLen || !mountPointRE.MatchString(mp) {
		return invalidValue("mount point", mp, "letters, digits, '.', '_' or '-'")
	}
	return nil
}

func invalidValue(what, value, want string) error {
	return &Error{Kind: KindInvalid, Command: "validate", Err: fmt.Errorf("invalid %s %q: want %s", what, value, want)}
}

// quote renders s as a RouterOS string literal. Values are validated before
// they get here (no control character passes validation), so escaping is a
// second wall, not the only one: it neutralises the characters RouterOS gives
// meaning to inside strings: '"', '\', '$' (variable substitution) and '?'
// (help in an interactive console).
func quote(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"', '\\', '$', '?':
			b.WriteByte('\\')
			b.WriteRune(r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// DiskSpec is everything a new exported file disk is made of.
type DiskSpec struct {
	Slot     string
	FilePath string
	Size     int64
	NQN      string
	Port     int
}

// Validate checks every field of the spec.
func (s DiskSpec) Validate() error {
	if err := ValidateNewSlot(s.Slot); err != nil {
		return err
	}
	if err := ValidateFilePath(s.FilePath); err != nil {
		return err
	}
	if err := ValidateSize(s.Size); err != nil {
		return err
	}
	if err := ValidateNQN(s.NQN); err != nil {
		return err
	}
	return ValidatePort(s.Port)
}

// DiskAdd creates a file-backed disk exported as its own NVMe/TCP subsystem.
// mount-filesystem=no keeps RouterOS from mounting a filesystem it may find
// inside the image while a node writes to it.
func DiskAdd(s DiskSpec) (Command, error) {
	if err := s.Validate(); err != nil {
		return Command{}, err
	}
	return Command{kind: "disk-add", text: fmt.Sprintf(
		"/disk add type=file file-path=%s file-size=%d slot=%s mount-filesystem=no nvme-tcp-export=yes nvme-tcp-server-port=%d nvme-tcp-server-nqn=%s",
		quote(s.FilePath), s.Size, quote(s.Slot), s.Port, quote(s.NQN))}, nil
}

// DiskSetSize grows (or shrinks: the caller decides) a file disk to size bytes.
func DiskSetSize(slot string, size int64) (Command, error) {
	if err := ValidateSlot(slot); err != nil {
		return Command{}, err
	}
	if err := ValidateSize(size); err != nil {
		return Command{}, err
	}
	return Command{kind: "disk-set-size", text: fmt.Sprintf("/disk set [find slot=%s] file-size=%d", quote(slot), size)}, nil
}

// maxAllowedHosts bounds the allowed host list: fencing publishes a volume
// to at most two nodes (a live migration); the margin is for a sentinel and
// hand-written lists.
const maxAllowedHosts = 8

// DiskSetAllowedHosts restricts the disk's NVMe/TCP export to the host NQNs
// in hosts (nvme-tcp-server-allow-host-name, a comma-separated list). Every
// NQN is validated, so none can carry a comma, a quote or a second argument.
// An empty list is refused: on RouterOS an empty value is reported to let
// every host in, which must never happen by accident.
func DiskSetAllowedHosts(slot string, hosts []string) (Command, error) {
	if err := ValidateSlot(slot); err != nil {
		return Command{}, err
	}
	if len(hosts) == 0 || len(hosts) > maxAllowedHosts {
		return Command{}, invalidValue("allowed host list", strings.Join(hosts, ","), fmt.Sprintf("1 to %d host NQNs", maxAllowedHosts))
	}
	for _, h := range hosts {
		if err := ValidateNQN(h); err != nil {
			return Command{}, err
		}
	}
	return Command{kind: "disk-set-allowed-hosts", text: fmt.Sprintf("/disk set [find slot=%s] nvme-tcp-server-allow-host-name=%s", quote(slot), quote(strings.Join(hosts, ",")))}, nil
}

// SplitAllowedHosts reads an nvme-tcp-server-allow-host-name value as the
// list of host NQNs it holds, without empty entries.
func SplitAllowedHosts(v string) []string {
	var hosts []string
	for h := range strings.SplitSeq(v, ",") {
		if h = strings.TrimSpace(h); h != "" {
			hosts = append(hosts, h)
		}
	}
	return hosts
}

// DiskPrint prints the one disk in slot.
func DiskPrint(slot string) (Command, error) {
	if err := ValidateSlot(slot); err != nil {
		return Command{}, err
	}
	return Command{kind: "disk-print", text: "/disk print detail where slot=" + quote(slot)}, nil
}

// DiskList prints every disk. The controller filters client-side on the
// naming convention, so no user value has to travel inside a regex.
func DiskList() Command {
	return Command{kind: "disk-list", text: "/disk print detail"}
}

// DiskRemove removes the disk in slot. RouterOS leaves its backing file.
func DiskRemove(slot string) (Command, error) {
	if err := ValidateSlot(slot); err != nil {
		return Command{}, err
	}
	return Command{kind: "disk-remove", text: "/disk remove [find slot=" + quote(slot) + "]"}, nil
}

// FileList prints every file whose name contains the slot, so a backing file
// whose disk is gone can still be found and removed.
func FileList(slot string) (Command, error) {
	if err := ValidateSlot(slot); err != nil {
		return Command{}, err
	}
	return Command{kind: "file-list", text: "/file print detail where name~" + quote(regexLiteral(slot))}, nil
}

// FileRemove removes one file by its absolute path. RouterOS file names have
// no leading slash, so it is dropped here.
func FileRemove(path string) (Command, error) {
	if err := ValidateFilePath(path); err != nil {
		return Command{}, err
	}
	return Command{kind: "file-remove", text: "/file remove [find name=" + quote(strings.TrimPrefix(path, "/")) + "]"}, nil
}

// PoolPrint prints the disk mounted at mountPoint, whose size= and free= are
// the pool's capacity.
func PoolPrint(mountPoint string) (Command, error) {
	if err := ValidateMountPoint(mountPoint); err != nil {
		return Command{}, err
	}
	return Command{kind: "pool-print", text: "/disk print detail where mount-point=" + quote(mountPoint)}, nil
}

// Identity is the side-effect-free command used to check that RouterOS
// answers (SSH keepalive requests are not supported there).
func Identity() Command {
	return Command{kind: "identity", text: "/system identity print"}
}

// regexLiteral escapes the one regular-expression metacharacter a validated
// slot can hold.
func regexLiteral(s string) string { return strings.ReplaceAll(s, ".", `\.`) }
