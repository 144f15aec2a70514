// Package sysfs is a read model of NVMe over Fabrics in sysfs: controllers
// under /sys/class/nvme, subsystems under /sys/class/nvme-subsystem and the
// namespaces' block devices, plus the few attributes the agent writes.
//
// Everything is rooted at Tree.Root so that tests run against a fake tree
// (see the sysfstest package). Each method is a small, bounded number of
// sysfs reads or a single write; none of them waits for the kernel to change
// state.
package sysfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
)

// Tree is a sysfs mount. Root is "/sys" in production.
type Tree struct {
	Root string
	// ReadFile reads one attribute; nil means os.ReadFile. Tests set it to
	// inject the errors only a real sysfs gives (sysfstest.Faults).
	ReadFile func(path string) ([]byte, error)
}

var (
	// ErrMissingAttribute means a device exists but lacks an attribute the
	// model needs. It deliberately does not wrap fs.ErrNotExist: callers use
	// that to mean "the device is gone", and a half-readable device is not gone.
	ErrMissingAttribute = errors.New("sysfs attribute missing")
	// ErrAmbiguous means more than one visible device matches; acting on
	// either could hit the wrong volume, so resolution fails closed.
	ErrAmbiguous = errors.New("more than one device matches")
	// ErrMalformed means an attribute's content could not be parsed.
	ErrMalformed = errors.New("malformed sysfs attribute")
)

// Controller states as the kernel prints them.
const (
	StateNew           = "new"
	StateLive          = "live"
	StateResetting     = "resetting"
	StateConnecting    = "connecting"
	StateDeleting      = "deleting"
	StateDeletingNoIO  = "deleting (no IO)"
	StateDead          = "dead"
	controllerClassDir = "class/nvme"
	subsystemClassDir  = "class/nvme-subsystem"
)

var (
	controllerNameRE = regexp.MustCompile(`^nvme(0|[1-9][0-9]{0,8})$`)
	subsystemNameRE  = regexp.MustCompile(`^nvme-subsys(0|[1-9][0-9]{0,8})$`)
	// A visible namespace disk: a multipath head nvme<subsys>n<head> or, with
	// multipath off, nvme<ctrl>n<head>. Hidden per-path disks carry a
	// c<ctrl> part and never match; generic char devices (ngXnY) do not either.
	visibleDiskRE = regexp.MustCompile(`^nvme[0-9]+n[0-9]+$`)
)

// ValidControllerName reports whether name is a controller name the kernel
// could have made ("nvme" and a decimal instance). It keeps any caller-given
// name from walking out of the class directory.
func ValidControllerName(name string) bool { return controllerNameRE.MatchString(name) }

// DevT is a device number.
type DevT struct{ Major, Minor uint32 }

func (d DevT) String() string { return fmt.Sprintf("%d:%d", d.Major, d.Minor) }

// ParseDevT parses "major:minor" as sysfs `dev` attributes print it.
func ParseDevT(s string) (DevT, error) {
	maj, mnr, ok := strings.Cut(s, ":")
	if !ok {
		return DevT{}, fmt.Errorf("%w: dev %q is not major:minor", ErrMalformed, s)
	}
	a, err1 := parseUint32(maj)
	b, err2 := parseUint32(mnr)
	if err1 != nil || err2 != nil {
		return DevT{}, fmt.Errorf("%w: dev %q is not major:minor", ErrMalformed, s)
	}
	return DevT{Major: a, Minor: b}, nil
}

// parseUint32 accepts plain decimal digits only: strconv would also take a sign.
func parseUint32(s string) (uint32, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not a decimal number", s)
	}
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err
}

// Controller is one NVMe controller as sysfs shows it.
type Controller struct {
	Name     string // "nvme3"
	Instance int    // 3
	// State is one of the State* constants; kept as the kernel's text so that
	// states added by newer kernels are passed on rather than lost.
	State     string
	Transport string // "tcp", "rdma", "fc", "loop", "pcie"
	// Address is the raw `address` attribute. For IP fabrics it is parsed into
	// the fields below; for PCIe it is a PCI address and they stay empty.
	Address    string
	TrAddr     string
	TrSvcID    string
	SrcAddr    string // the local address of the connected socket; absent while connecting
	HostTrAddr string
	HostIface  string
	SubsysNQN  string
	HostNQN    string // fabrics only
	HostID     string // fabrics only
	CntlID     int
}

func (t Tree) path(elem ...string) string {
	return filepath.Join(append([]string{t.Root}, elem...)...)
}

func (t Tree) controllerDir(name string) (string, error) {
	if !ValidControllerName(name) {
		return "", fmt.Errorf("invalid controller name %q", name)
	}
	return t.path(controllerClassDir, name), nil
}

// Controllers lists every NVMe controller, local PCIe ones included.
// Controllers that disappear while being read are left out.
func (t Tree) Controllers() ([]Controller, error) {
	entries, err := os.ReadDir(t.path(controllerClassDir))
	if errors.Is(err, fs.ErrNotExist) {
		// No nvme module loaded yet: there are simply no controllers.
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list NVMe controllers: %w", err)
	}
	var out []Controller
	for _, e := range entries {
		if !ValidControllerName(e.Name()) {
			continue
		}
		c, err := t.Controller(e.Name())
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// Controller reads one controller. A controller that does not exist gives an
// error wrapping fs.ErrNotExist.
func (t Tree) Controller(name string) (Controller, error) {
	dir, err := t.controllerDir(name)
	if err != nil {
		return Controller{}, err
	}
	if _, err := os.Stat(dir); err != nil {
		return Controller{}, fmt.Errorf("controller %s: %w", name, err)
	}
	c := Controller{Name: name}
	c.Instance, _ = strconv.Atoi(strings.TrimPrefix(name, "nvme"))
	r := attrReader{tree: t, dir: dir}
	c.State = r.required("state")
	c.Transport = r.required("transport")
	c.SubsysNQN = r.required("subsysnqn")
	c.CntlID = r.int("cntlid")
	c.Address = r.optional("address")
	if isIPFabric(c.Transport) {
		c.HostNQN = r.required("hostnqn")
		c.HostID = r.required("hostid")
		if r.err == nil {
			r.err = c.parseAddress()
		}
	} else {
		c.HostNQN = r.optional("hostnqn")
		c.HostID = r.optional("hostid")
	}
	if r.err != nil {
		if t.vanished(r.err, dir) && !errors.Is(r.err, fs.ErrNotExist) {
			// Being deleted: its attributes went before its directory.
			return Controller{}, fmt.Errorf("controller %s: %w (%w)", name, fs.ErrNotExist, r.err)
		}
		return Controller{}, fmt.Errorf("controller %s: %w", name, r.err)
	}
	return c, nil
}

func isIPFabric(transport string) bool { return transport == "tcp" || transport == "rdma" }

// parseAddress splits "traddr=…,trsvcid=…[,host_traddr=…][,host_iface=…][,src_addr=…]".
// Keys it does not know are ignored so that a newer kernel's additions do not
// make every controller unreadable.
func (c *Controller) parseAddress() error {
	if c.Address == "" {
		return fmt.Errorf("%w: address", ErrMissingAttribute)
	}
	seen := map[string]bool{}
	for kv := range strings.SplitSeq(c.Address, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" || seen[k] {
			return fmt.Errorf("%w: address %q", ErrMalformed, c.Address)
		}
		seen[k] = true
		switch k {
		case "traddr":
			c.TrAddr = v
		case "trsvcid":
			c.TrSvcID = v
		case "src_addr":
			c.SrcAddr = v
		case "host_traddr":
			c.HostTrAddr = v
		case "host_iface":
			c.HostIface = v
		}
	}
	if c.TrAddr == "" || c.TrSvcID == "" {
		return fmt.Errorf("%w: address %q lacks traddr or trsvcid", ErrMalformed, c.Address)
	}
	return nil
}

// ControllerState reads only `state`: the periodic scan calls it for every
// managed controller, because state changes send no uevent.
func (t Tree) ControllerState(name string) (string, error) {
	dir, err := t.controllerDir(name)
	if err != nil {
		return "", err
	}
	s, err := t.readAttr(filepath.Join(dir, "state"))
	if err != nil {
		return "", fmt.Errorf("controller %s: %w", name, err)
	}
	return s, nil
}

// ControllersOf lists the controllers of the subsystem with the given NQN,
// found through the subsystem's links rather than by reading every controller.
func (t Tree) ControllersOf(subsysNQN string) ([]Controller, error) {
	subsystems, err := t.subsystemDirs(subsysNQN)
	if err != nil {
		return nil, err
	}
	var out []Controller
	for _, dir := range subsystems {
		for _, name := range listNames(dir, controllerNameRE) {
			c, err := t.Controller(name)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, err
			}
			out = append(out, c)
		}
	}
	return out, nil
}

// subsystemDirs returns the directories of subsystems whose subsysnqn is nqn.
// The kernel keeps one per NQN, but a subsystem held by a dead head may
// linger beside a new one, so all matches are returned.
func (t Tree) subsystemDirs(nqn string) ([]string, error) {
	if nqn == "" {
		return nil, errors.New("empty subsystem NQN")
	}
	base := t.path(subsystemClassDir)
	entries, err := os.ReadDir(base)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list NVMe subsystems: %w", err)
	}
	var out []string
	for _, e := range entries {
		if !subsystemNameRE.MatchString(e.Name()) {
			continue
		}
		dir := filepath.Join(base, e.Name())
		got, err := t.readAttr(filepath.Join(dir, "subsysnqn"))
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed while we looked
		}
		if err != nil {
			return nil, fmt.Errorf("subsystem %s: %w", e.Name(), err)
		}
		if got == nqn {
			out = append(out, dir)
		}
	}
	return out, nil
}

// Namespace is the visible block device of an NVMe namespace.
type Namespace struct {
	Name      string // "nvme0n1": the multipath head when native multipath is on
	NSID      int    // from `nsid`: the nY in a name is a head instance, not the NSID
	Dev       DevT
	Size      int64  // bytes
	WWID      string // always present
	UUID      string // empty when the namespace reports none (the kernel hides the attribute)
	NGUID     string // likewise
	EUI64     string // `eui`; likewise
	SubsysNQN string
}

// Identity is what a namespace says it is: the identifiers the target
// reports for it (a UUID, an NGUID, an EUI-64, any of which may be absent)
// and the WWID the kernel derives from the first of them it has. A disk
// re-created under the same subsystem NQN and namespace ID, or another
// file put behind it, reports other identifiers: the kernel itself refuses
// such a namespace on a controller that knew the old one ("identifiers
// changed").
type Identity struct {
	WWID  string `json:"wwid,omitempty"`
	UUID  string `json:"uuid,omitempty"`
	NGUID string `json:"nguid,omitempty"`
	EUI64 string `json:"eui64,omitempty"`
}

// Identity returns the namespace's identity.
func (n Namespace) Identity() Identity {
	return Identity{WWID: n.WWID, UUID: n.UUID, NGUID: n.NGUID, EUI64: n.EUI64}
}

// IsZero tells an identity never read (a record of an older agent, or a
// device that is not an NVMe namespace).
func (id Identity) IsZero() bool { return id == Identity{} }

// Same tells whether got is the namespace id was read from: every
// identifier id has must be there, unchanged. An identifier the namespace
// did not report before may appear (a target that learnt to report it), but
// none may change or vanish. A zero id vouches for nothing and accepts any.
func (id Identity) Same(got Identity) bool {
	same := func(want, have string) bool { return want == "" || want == have }
	return same(id.WWID, got.WWID) && same(id.UUID, got.UUID) && same(id.NGUID, got.NGUID) && same(id.EUI64, got.EUI64)
}

// String names the identity by its identifiers, for messages.
func (id Identity) String() string {
	if id.IsZero() {
		return "(unknown identity)"
	}
	var parts []string
	for _, f := range [][2]string{{"wwid", id.WWID}, {"uuid", id.UUID}, {"nguid", id.NGUID}, {"eui64", id.EUI64}} {
		if f[1] != "" {
			parts = append(parts, f[0]+"="+f[1])
		}
	}
	return strings.Join(parts, " ")
}

// ResolveNamespace finds the visible block device of namespace nsid of the
// subsystem subsysNQN under both naming schemes: heads that are children of
// the subsystem (native multipath) and disks that are children of one of its
// controllers (multipath off, or a subsystem that cannot be multipathed).
// Hidden per-path disks (nvmeXcYnZ) are never returned. No match gives an
// error wrapping fs.ErrNotExist, more than one ErrAmbiguous.
func (t Tree) ResolveNamespace(subsysNQN string, nsid int) (Namespace, error) {
	if nsid < 1 {
		return Namespace{}, fmt.Errorf("invalid nsid %d", nsid)
	}
	subsystems, err := t.subsystemDirs(subsysNQN)
	if err != nil {
		return Namespace{}, err
	}
	var found []Namespace
	seen := map[string]bool{}
	consider := func(dir string) error {
		for _, name := range listNames(dir, visibleDiskRE) {
			if seen[name] {
				continue
			}
			seen[name] = true
			ns, ok, err := t.readNamespace(filepath.Join(dir, name), nsid)
			if err != nil {
				return fmt.Errorf("namespace %s: %w", name, err)
			}
			if ok {
				ns.Name, ns.SubsysNQN = name, subsysNQN
				found = append(found, ns)
			}
		}
		return nil
	}
	for _, sub := range subsystems {
		if err := consider(sub); err != nil {
			return Namespace{}, err
		}
		for _, ctrl := range listNames(sub, controllerNameRE) {
			if err := consider(filepath.Join(sub, ctrl)); err != nil {
				return Namespace{}, err
			}
		}
	}
	switch len(found) {
	case 0:
		return Namespace{}, fmt.Errorf("namespace %d of %s: %w", nsid, subsysNQN, fs.ErrNotExist)
	case 1:
		return found[0], nil
	default:
		names := make([]string, len(found))
		for i, ns := range found {
			names[i] = ns.Name
		}
		return Namespace{}, fmt.Errorf("namespace %d of %s: %w: %s", nsid, subsysNQN, ErrAmbiguous, strings.Join(names, ", "))
	}
}

// readNamespace reads the disk in dir if its nsid is the wanted one. A disk
// that vanished while being read is not a match; one that is readable but
// incomplete is an error, because skipping it could hide an ambiguity.
func (t Tree) readNamespace(dir string, nsid int) (Namespace, bool, error) {
	r := attrReader{tree: t, dir: dir}
	got := r.int("nsid")
	if t.vanished(r.err, dir) {
		return Namespace{}, false, nil
	}
	if r.err != nil || got != nsid {
		return Namespace{}, false, r.err
	}
	// Belt and braces: the name already excludes per-path disks, but the
	// kernel's own flag is authoritative where it exists.
	if r.optional("hidden") == "1" {
		return Namespace{}, false, nil
	}
	ns := Namespace{NSID: got}
	dev := r.required("dev")
	sectors := r.int64("size")
	ns.WWID = r.required("wwid")
	ns.UUID = r.optional("uuid")
	ns.NGUID = r.optional("nguid")
	ns.EUI64 = r.optional("eui")
	if r.err == nil {
		ns.Dev, r.err = ParseDevT(dev)
	}
	if t.vanished(r.err, dir) {
		return Namespace{}, false, nil
	}
	if r.err != nil {
		return Namespace{}, false, r.err
	}
	const sectorSize = 512 // sysfs `size` is always in 512-byte units, whatever the LBA size
	ns.Size = sectors * sectorSize
	return ns, true, nil
}

// vanished reports whether a read of the device in dir (a disk or a
// controller) failed because the device is going away. The kernel removes a
// device's attribute files before its directory, `dev` first (device_del),
// then the others, so for a moment the directory is there without them. A
// present disk or controller always has dev: an attribute missing beside a
// present dev is a malformed device, an error.
func (t Tree) vanished(err error, dir string) bool {
	if errors.Is(err, fs.ErrNotExist) {
		return true
	}
	if !errors.Is(err, ErrMissingAttribute) {
		return false
	}
	_, derr := t.readAttr(filepath.Join(dir, "dev"))
	return errors.Is(derr, fs.ErrNotExist)
}

// listNames returns the names in dir that match re; an unreadable or vanished
// directory has none.
func listNames(dir string, re *regexp.Regexp) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		if re.MatchString(e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out
}

// CtrlLossTmo reads the controller's ctrl_loss_tmo in seconds; -1 (printed
// "off") means reconnect forever.
func (t Tree) CtrlLossTmo(name string) (int, error) {
	dir, err := t.controllerDir(name)
	if err != nil {
		return 0, err
	}
	s, err := t.readAttr(filepath.Join(dir, "ctrl_loss_tmo"))
	if err != nil {
		return 0, fmt.Errorf("controller %s: %w", name, err)
	}
	return ParseTimeout(s)
}

// ParseTimeout parses a fabrics timeout attribute: "off" is -1.
func ParseTimeout(s string) (int, error) {
	if s == "off" {
		return -1, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || strings.HasPrefix(s, "+") {
		return 0, fmt.Errorf("%w: timeout %q", ErrMalformed, s)
	}
	return n, nil
}

// SetCtrlLossTmo changes ctrl_loss_tmo at runtime (shutdown mode lowers it
// before a node goes down). -1 means forever; the kernel accepts it as written.
func (t Tree) SetCtrlLossTmo(name string, seconds int) error {
	if seconds < -1 {
		return fmt.Errorf("ctrl_loss_tmo %d: want -1 or a number of seconds", seconds)
	}
	return t.writeControllerAttr(name, "ctrl_loss_tmo", strconv.Itoa(seconds))
}

// Rescan asks the controller to rescan its namespaces (after a resize). The
// kernel queues the scan and returns at once.
func (t Tree) Rescan(name string) error {
	return t.writeControllerAttr(name, "rescan_controller", "1")
}

// DeleteController disconnects the controller. The kernel deletes it
// synchronously, so this write can take as long as tearing down its queues;
// callers that need a deadline run it through fabrics.Disconnect. A missing
// controller gives an error wrapping fs.ErrNotExist.
func (t Tree) DeleteController(name string) error {
	return t.writeControllerAttr(name, "delete_controller", "1")
}

func (t Tree) writeControllerAttr(name, attr, value string) error {
	dir, err := t.controllerDir(name)
	if err != nil {
		return err
	}
	if err := writeAttr(filepath.Join(dir, attr), value); err != nil {
		return fmt.Errorf("controller %s: %w", name, err)
	}
	return nil
}

// writeAttr writes value in one write(2): sysfs acts on each write, so a split
// write would be two commands. The file is never created: writing to an
// attribute that does not exist must fail, not succeed on a new file.
func writeAttr(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	n, werr := f.Write([]byte(value))
	cerr := f.Close()
	switch {
	case werr != nil:
		return fmt.Errorf("write %s=%s: %w", filepath.Base(path), value, werr)
	case n != len(value):
		return fmt.Errorf("write %s=%s: short write (%d bytes)", filepath.Base(path), value, n)
	case cerr != nil:
		return fmt.Errorf("write %s=%s: %w", filepath.Base(path), value, cerr)
	}
	return nil
}

// readAttr reads one attribute. The kernel answers ENODEV for an attribute
// of a device it is deleting (the file was opened before the removal); that
// device is gone, so the error wraps fs.ErrNotExist as well as ENODEV.
func (t Tree) readAttr(path string) (string, error) {
	read := t.ReadFile
	if read == nil {
		read = os.ReadFile
	}
	b, err := read(path)
	if errors.Is(err, syscall.ENODEV) {
		return "", fmt.Errorf("device removed while read: %w (%w)", fs.ErrNotExist, err)
	}
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(b), "\n"), nil
}

// attrReader reads attributes of one device directory, keeping the first
// error so that a sequence of reads stays readable.
type attrReader struct {
	tree Tree
	dir  string
	err  error
}

func (r *attrReader) read(name string, required bool) string {
	if r.err != nil {
		return ""
	}
	v, err := r.tree.readAttr(filepath.Join(r.dir, name))
	if err == nil {
		return v
	}
	if !errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENODEV) {
		// ENODEV: the device is being deleted, whatever its directory shows.
		r.err = err
		return ""
	}
	if _, serr := os.Stat(r.dir); serr != nil {
		// The whole device went away between reads.
		r.err = serr
		return ""
	}
	if required {
		r.err = fmt.Errorf("%w: %s", ErrMissingAttribute, name)
	}
	return ""
}

func (r *attrReader) required(name string) string {
	v := r.read(name, true)
	if r.err == nil && v == "" {
		r.err = fmt.Errorf("%w: %s is empty", ErrMalformed, name)
	}
	return v
}

func (r *attrReader) optional(name string) string { return r.read(name, false) }

func (r *attrReader) int64(name string) int64 {
	v := r.required(name)
	if r.err != nil {
		return 0
	}
	if strings.TrimLeft(v, "0123456789") != "" {
		r.err = fmt.Errorf("%w: %s=%q", ErrMalformed, name, v)
		return 0
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		r.err = fmt.Errorf("%w: %s=%q", ErrMalformed, name, v)
	}
	return n
}

func (r *attrReader) int(name string) int {
	n := r.int64(name)
	if r.err == nil && n > 1<<31-1 {
		r.err = fmt.Errorf("%w: %s=%d out of range", ErrMalformed, name, n)
		return 0
	}
	return int(n)
}
