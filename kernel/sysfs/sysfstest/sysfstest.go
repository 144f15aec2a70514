// Package sysfstest builds fake NVMe-oF sysfs trees for tests, with the same
// directories and symlinks a real kernel makes:
//
//	class/nvme/nvmeN           -> ../../devices/virtual/nvme-fabrics/ctl/nvmeN
//	class/nvme-subsystem/nvme-subsysK -> ../../devices/virtual/nvme-subsystem/nvme-subsysK
//	devices/virtual/nvme-subsystem/nvme-subsysK/nvmeN -> ../../nvme-fabrics/ctl/nvmeN
//	devices/virtual/nvme-subsystem/nvme-subsysK/nvmeKnH   multipath head (and ngKnH)
//	devices/virtual/nvme-fabrics/ctl/nvmeN/nvmeKcNnH      hidden per-path disk
//	devices/virtual/nvme-fabrics/ctl/nvmeN/nvmeNnH        disk with multipath off (and ngNnH)
//	block/<disk>               -> ../devices/.../<disk>
//
// Helpers fail the test on any error, so callers need no error handling.
package sysfstest

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

var (
	controllerRE = regexp.MustCompile(`^nvme[0-9]+$`)
	diskRE       = regexp.MustCompile(`^(nvme|ng)[0-9]+n[0-9]+$`)
)

const (
	ctlDir    = "devices/virtual/nvme-fabrics/ctl"
	subsysDir = "devices/virtual/nvme-subsystem"
)

// Controller describes a fabrics controller. Empty fields take the defaults
// of a live TCP controller; use RemoveAttr to make one missing.
type Controller struct {
	Name      string // "nvme0"; required
	SubsysNQN string // required: decides which subsystem the controller joins
	State     string // default "live"
	Transport string // default "tcp"
	// Address is the raw `address`; when empty it is built from TrAddr,
	// TrSvcID and SrcAddr (defaults 10.0.0.5, 4420, no src_addr).
	Address         string
	TrAddr, TrSvcID string
	SrcAddr         string
	HostNQN         string            // default "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001"
	HostID          string            // default "00000000-0000-0000-0000-000000000001"
	CntlID          int               // default 1
	CtrlLossTmo     string            // default "off"
	ReconnectDelay  string            // default "5"
	FastIOFailTmo   string            // default "off"
	ExtraAttrs      map[string]string // further attributes, written as given
}

// Namespace describes a namespace of a controller's subsystem.
type Namespace struct {
	Controller string // owning controller, already added
	// Multipath selects the native multipath layout: a head under the
	// subsystem plus a hidden path under the controller. A second controller
	// of the same subsystem adding the same Head adds only its hidden path.
	Multipath bool
	Head      int    // head instance: the nH in the names
	NSID      int    // required
	Dev       string // "259:0"; required for the visible disk
	Sectors   int64  // size in 512-byte sectors; default 2097152 (1 GiB)
	WWID      string // default "uuid.<UUID>" or "eui.<nsid>"
	UUID      string // omitted when empty, as the kernel does
	NGUID     string // likewise
}

// AddController creates the controller, its subsystem (reusing one with the
// same NQN) and the links between them. It returns the subsystem's name.
func AddController(t testing.TB, root string, c Controller) string {
	t.Helper()
	if c.Name == "" || c.SubsysNQN == "" {
		t.Fatalf("sysfstest: controller needs Name and SubsysNQN: %+v", c)
	}
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.State, "live")
	def(&c.Transport, "tcp")
	def(&c.TrAddr, "10.0.0.5")
	def(&c.TrSvcID, "4420")
	def(&c.HostNQN, "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001")
	def(&c.HostID, "00000000-0000-0000-0000-000000000001")
	def(&c.CtrlLossTmo, "off")
	def(&c.ReconnectDelay, "5")
	def(&c.FastIOFailTmo, "off")
	if c.CntlID == 0 {
		c.CntlID = 1
	}
	if c.Address == "" {
		c.Address = "traddr=" + c.TrAddr + ",trsvcid=" + c.TrSvcID
		if c.SrcAddr != "" {
			c.Address += ",src_addr=" + c.SrcAddr
		}
	}
	dir := filepath.Join(root, ctlDir, c.Name)
	attrs := map[string]string{
		"state":             c.State,
		"transport":         c.Transport,
		"address":           c.Address,
		"subsysnqn":         c.SubsysNQN,
		"hostnqn":           c.HostNQN,
		"hostid":            c.HostID,
		"cntlid":            strconv.Itoa(c.CntlID),
		"dev":               "243:" + strconv.Itoa(instance(t, c.Name, "nvme")),
		"ctrl_loss_tmo":     c.CtrlLossTmo,
		"reconnect_delay":   c.ReconnectDelay,
		"fast_io_fail_tmo":  c.FastIOFailTmo,
		"kato":              "5",
		"delete_controller": "",
		"rescan_controller": "",
		"reset_controller":  "",
	}
	for k, v := range c.ExtraAttrs {
		attrs[k] = v
	}
	writeAttrs(t, dir, attrs)
	symlink(t, filepath.Join("..", "..", ctlDir, c.Name), filepath.Join(root, "class/nvme", c.Name))

	sub := SubsystemOf(t, root, c.SubsysNQN)
	if sub == "" {
		sub = freeSubsystemName(t, root)
		writeAttrs(t, filepath.Join(root, subsysDir, sub), map[string]string{
			"subsysnqn": c.SubsysNQN,
			"iopolicy":  "numa",
		})
		symlink(t, filepath.Join("..", "..", subsysDir, sub), filepath.Join(root, "class/nvme-subsystem", sub))
	}
	symlink(t, filepath.Join("..", "..", "nvme-fabrics/ctl", c.Name), filepath.Join(root, subsysDir, sub, c.Name))
	return sub
}

// AddNamespace creates the namespace's disks and returns the visible disk's
// name, named as the kernel would name it.
func AddNamespace(t testing.TB, root string, ns Namespace) string {
	t.Helper()
	ctrlInst := instance(t, ns.Controller, "nvme")
	ctrlDir := filepath.Join(root, ctlDir, ns.Controller)
	if _, err := os.Stat(ctrlDir); err != nil {
		t.Fatalf("sysfstest: namespace of missing controller: %v", err)
	}
	nqn := readAttr(t, filepath.Join(ctrlDir, "subsysnqn"))
	sub := SubsystemOf(t, root, nqn)
	if sub == "" {
		t.Fatalf("sysfstest: controller %s has no subsystem", ns.Controller)
	}
	if ns.Sectors == 0 {
		ns.Sectors = 2 << 20
	}
	if ns.WWID == "" {
		ns.WWID = "eui." + strconv.Itoa(ns.NSID)
		if ns.UUID != "" {
			ns.WWID = "uuid." + ns.UUID
		}
	}
	attrs := map[string]string{
		"nsid": strconv.Itoa(ns.NSID),
		"size": strconv.FormatInt(ns.Sectors, 10),
		"wwid": ns.WWID,
	}
	if ns.UUID != "" {
		attrs["uuid"] = ns.UUID
	}
	if ns.NGUID != "" {
		attrs["nguid"] = ns.NGUID
	}
	visible := func(dir, name, generic string) string {
		a := map[string]string{"dev": ns.Dev, "hidden": "0"}
		for k, v := range attrs {
			a[k] = v
		}
		writeAttrs(t, filepath.Join(dir, name), a)
		symlink(t, relFromBlock(t, root, filepath.Join(dir, name)), filepath.Join(root, "block", name))
		// The generic char device has a dev but no namespace identity.
		writeAttrs(t, filepath.Join(dir, generic), map[string]string{"dev": "240:" + strconv.Itoa(ns.Head)})
		return name
	}
	if !ns.Multipath {
		return visible(ctrlDir, fmt.Sprintf("nvme%dn%d", ctrlInst, ns.Head), fmt.Sprintf("ng%dn%d", ctrlInst, ns.Head))
	}
	subInst := instance(t, sub, "nvme-subsys")
	head := fmt.Sprintf("nvme%dn%d", subInst, ns.Head)
	subDir := filepath.Join(root, subsysDir, sub)
	if _, err := os.Stat(filepath.Join(subDir, head)); err != nil {
		visible(subDir, head, fmt.Sprintf("ng%dn%d", subInst, ns.Head))
	}
	path := fmt.Sprintf("nvme%dc%dn%d", subInst, ctrlInst, ns.Head)
	a := map[string]string{"hidden": "1"}
	for k, v := range attrs {
		a[k] = v
	}
	writeAttrs(t, filepath.Join(ctrlDir, path), a)
	symlink(t, relFromBlock(t, root, filepath.Join(ctrlDir, path)), filepath.Join(root, "block", path))
	return head
}

// Removal says what of a subsystem outlives its last controller.
type Removal int

const (
	// RemoveAll is the kernel's default: the subsystem and its heads go with
	// the last controller.
	RemoveAll Removal = iota
	// KeepSubsystem models a dead head still held (mounted, or under
	// device-mapper): its disk is deleted, but the subsystem stays and a
	// reconnect joins it and gets a head with a new instance.
	KeepSubsystem
	// KeepHeads models delayed_removal_secs (kernel >= 6.16): the heads stay
	// visible without paths, and a reconnect attaches to them again.
	KeepHeads
)

// RemoveController deletes the controller as the kernel does when it is
// deleted: its disks, its links, and, per removal, its subsystem once no
// controller is left.
func RemoveController(t testing.TB, root, name string, removal Removal) {
	t.Helper()
	dir := filepath.Join(root, ctlDir, name)
	nqn := readAttr(t, filepath.Join(dir, "subsysnqn"))
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("sysfstest: %v", err)
	}
	for _, e := range entries {
		removeAll(t, filepath.Join(root, "block", e.Name()))
	}
	removeAll(t, dir)
	removeAll(t, filepath.Join(root, "class/nvme", name))
	sub := SubsystemOf(t, root, nqn)
	if sub == "" {
		return
	}
	subDir := filepath.Join(root, subsysDir, sub)
	removeAll(t, filepath.Join(subDir, name))
	entries, err = os.ReadDir(subDir)
	if err != nil {
		t.Fatalf("sysfstest: %v", err)
	}
	for _, e := range entries {
		if controllerRE.MatchString(e.Name()) {
			return // another controller still belongs to the subsystem
		}
	}
	if removal == KeepHeads {
		return
	}
	for _, e := range entries {
		if diskRE.MatchString(e.Name()) {
			removeAll(t, filepath.Join(root, "block", e.Name()))
			removeAll(t, filepath.Join(subDir, e.Name()))
		}
	}
	if removal == KeepSubsystem {
		return
	}
	removeAll(t, subDir)
	removeAll(t, filepath.Join(root, "class/nvme-subsystem", sub))
}

// SetState sets the controller's state, as the kernel does without a uevent.
func SetState(t testing.TB, root, name, state string) {
	t.Helper()
	SetAttr(t, root, name, "state", state)
}

// SetAttr overwrites one controller attribute.
func SetAttr(t testing.TB, root, name, attr, value string) {
	t.Helper()
	writeAttrs(t, filepath.Join(root, ctlDir, name), map[string]string{attr: value})
}

// RemoveAttr deletes one attribute of the device at rel (relative to root,
// e.g. "class/nvme/nvme0" or "block/nvme0n1").
func RemoveAttr(t testing.TB, root, rel, attr string) {
	t.Helper()
	if err := os.Remove(filepath.Join(root, rel, attr)); err != nil {
		t.Fatalf("sysfstest: %v", err)
	}
}

// ReadAttr returns the content of the attribute of the device at rel with the
// trailing newline removed: tests use it to see what code under test wrote.
func ReadAttr(t testing.TB, root, rel, attr string) string {
	t.Helper()
	return readAttr(t, filepath.Join(root, rel, attr))
}

// Faults makes reads under chosen devices fail as only a real sysfs fails:
// the kernel answers ENODEV for the attributes of a device it is deleting.
// Set its ReadFile as sysfs.Tree.ReadFile. The zero value fails nothing.
type Faults struct {
	mu      sync.Mutex
	devices map[string]syscall.Errno // resolved device directory -> error
}

// Fail makes every attribute read of the device at rel (relative to root,
// e.g. "class/nvme/nvme0"), and of the devices below it, fail with errno,
// whichever path leads there.
func (f *Faults) Fail(t testing.TB, root, rel string, errno syscall.Errno) {
	t.Helper()
	dir, err := filepath.EvalSymlinks(filepath.Join(root, rel))
	if err != nil {
		t.Fatalf("sysfstest: %v", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.devices == nil {
		f.devices = map[string]syscall.Errno{}
	}
	f.devices[dir] = errno
}

// ReadFile reads path, unless it lies under a failed device.
func (f *Faults) ReadFile(path string) ([]byte, error) {
	if errno := f.errnoFor(path); errno != 0 {
		return nil, &fs.PathError{Op: "read", Path: path, Err: errno}
	}
	return os.ReadFile(path)
}

func (f *Faults) errnoFor(path string) syscall.Errno {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return 0 // a missing file fails by itself
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for dir, errno := range f.devices {
		if strings.HasPrefix(real, dir+string(filepath.Separator)) {
			return errno
		}
	}
	return 0
}

// SubsystemOf returns the name of the subsystem with the given NQN, or "".
func SubsystemOf(t testing.TB, root, nqn string) string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(root, subsysDir))
	if err != nil && !os.IsNotExist(err) {
		t.Fatalf("sysfstest: %v", err)
	}
	for _, e := range entries {
		if readAttr(t, filepath.Join(root, subsysDir, e.Name(), "subsysnqn")) == nqn {
			return e.Name()
		}
	}
	return ""
}

func freeSubsystemName(t testing.TB, root string) string {
	t.Helper()
	for i := 0; ; i++ {
		name := "nvme-subsys" + strconv.Itoa(i)
		if _, err := os.Lstat(filepath.Join(root, subsysDir, name)); os.IsNotExist(err) {
			return name
		}
	}
}

func instance(t testing.TB, name, prefix string) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimPrefix(name, prefix))
	if err != nil || !strings.HasPrefix(name, prefix) {
		t.Fatalf("sysfstest: %q is not %s<N>", name, prefix)
	}
	return n
}

func relFromBlock(t testing.TB, root, target string) string {
	t.Helper()
	rel, err := filepath.Rel(filepath.Join(root, "block"), target)
	if err != nil {
		t.Fatalf("sysfstest: %v", err)
	}
	return rel
}

// writeAttrs writes each attribute with the trailing newline sysfs prints.
func writeAttrs(t testing.TB, dir string, attrs map[string]string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("sysfstest: %v", err)
	}
	for k, v := range attrs {
		if err := os.WriteFile(filepath.Join(dir, k), []byte(v+"\n"), 0o644); err != nil {
			t.Fatalf("sysfstest: %v", err)
		}
	}
}

func readAttr(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("sysfstest: %v", err)
	}
	return strings.TrimRight(string(b), "\n")
}

func symlink(t testing.TB, target, link string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		t.Fatalf("sysfstest: %v", err)
	}
	if err := os.Symlink(target, link); err != nil {
		t.Fatalf("sysfstest: %v", err)
	}
}

func removeAll(t testing.TB, path string) {
	t.Helper()
	if err := os.RemoveAll(path); err != nil {
		t.Fatalf("sysfstest: %v", err)
	}
}

// RemoveDisk deletes the block device name ("nvme0n1") and its directory, as
// the kernel does when it drops a namespace (one whose identifiers changed,
// for instance) while its controller stays.
func RemoveDisk(t testing.TB, root, name string) {
	t.Helper()
	link := filepath.Join(root, "block", name)
	dir, err := filepath.EvalSymlinks(link)
	if err != nil {
		t.Fatalf("sysfstest: %v", err)
	}
	removeAll(t, dir)
	removeAll(t, link)
}
