// Package dm drives the kernel's device-mapper through its ioctl interface,
// /dev/mapper/control, without dmsetup or libdevmapper.
//
// The agent puts a dm-multipath device with queue_if_no_path in front of an
// NVMe namespace so that a consumer (a mounted filesystem, a pod's block
// device) survives the loss of its controller: I/O queues in dm while no path
// exists, and Reload repoints the device at the namespace's new block device
// after a reconnect. The guest test TestDM (test/e2e/guest) reproduces that
// on the kernels the driver supports.
//
// Device nodes. Without udevd nothing creates /dev/mapper/<name>, so Create
// makes that node itself (mknod, 0600) and Remove deletes it. Where udevd
// runs it may create the same name too, as a node or a symlink to
// ../dm-<minor>; either is accepted as long as it leads to the right device.
// devtmpfs always provides /dev/dm-<minor>.
//
// Every call is bounded by its context: each ioctl runs on its own
// goroutine (kernel/internal/deadline) and the call returns when the context
// ends, even if the ioctl is still blocked in the kernel (a suspend waiting
// for I/O below dm, for one). The ioctl may still complete afterwards.
//
// The package needs CAP_SYS_ADMIN and the modules dm-mod, and for
// multipath tables dm-multipath and dm-service-time (dm-multipath loads
// scsi_mod). Names are limited to letters, digits, '-' and '_'.
package dm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/rds-csi/rds-csi/internal/fault"
	"github.com/rds-csi/rds-csi/kernel/internal/deadline"
)

// Device is a device-mapper device.
type Device struct {
	Name         string
	Major, Minor uint32
	// Live tells that a table is active. A device that has none was made
	// by a DM_DEV_CREATE whose table was never loaded and resumed (its
	// maker was killed in between): it maps nothing, and Activate
	// completes it.
	Live bool
	// Suspended tells a device whose I/O is held: a Reload killed between
	// its suspend and its resume leaves one, and only Resume releases it.
	Suspended bool
}

// Path is the device node Create made for d.
func (d Device) Path() string { return filepath.Join(sys.nodeDir, d.Name) }

// Target is one line of a table: Length sectors (512 bytes) starting at
// sector Start are mapped by the target type with its parameters.
type Target struct {
	Start, Length uint64
	Type          string
	Params        string
}

var (
	// ErrInvalid means a name, target type or parameter string was refused
	// before anything was sent to the kernel.
	ErrInvalid = errors.New("invalid device-mapper argument")
	// ErrNotFound means no device of that name exists (the kernel's ENXIO,
	// which the error also wraps).
	ErrNotFound = errors.New("no such device-mapper device")
	// ErrExist means Create found a device of that name already there (the
	// kernel's EBUSY, which the error also wraps).
	ErrExist = errors.New("device-mapper device already exists")
	// ErrNoTable means the device has no active table (Device.Live).
	ErrNoTable = errors.New("device-mapper device has no active table")
)

// Limits checked before a request is built. The kernel takes longer
// parameters, but no table this driver writes comes near them, so anything
// longer is a bug upstream rather than something to pass on.
const (
	maxNameLen   = nameLen - 1
	maxParamsLen = 4096
	maxTargets   = 256
	maxMsgLen    = 1024
	// maxAnswer bounds the buffer grown for DM_TABLE_STATUS answers.
	maxAnswer = 1 << 20
	// cleanupTimeout bounds the steps that undo a half-done Create or
	// Reload after the caller's context has ended.
	cleanupTimeout = 10 * time.Second
	lookupTimeout  = 10 * time.Second
)

// system is what the package touches on the host; tests swap it.
type system struct {
	control string // the control device
	nodeDir string // where device nodes are made
	ioctl   func(fd int, req uint32, buf []byte) error
}

var sys = system{control: "/dev/mapper/control", nodeDir: "/dev/mapper", ioctl: rawIoctl}

func rawIoctl(fd int, req uint32, buf []byte) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(unsafe.Pointer(&buf[0])))
	if errno != 0 {
		return errno
	}
	return nil
}

// Create makes a device called name with table live: DM_DEV_CREATE, then
// DM_TABLE_LOAD, then a resume. A device that cannot be completed is
// removed again, so a retry starts from nothing. The error wraps ErrExist
// when the name is taken.
func Create(ctx context.Context, name string, table []Target) (Device, error) {
	if err := validName(name); err != nil {
		return Device{}, err
	}
	payload, err := tablePayload(table)
	if err != nil {
		return Device{}, fmt.Errorf("create %s: %w", name, err)
	}
	h, err := call(ctx, "create", cmdDevCreate, newBuffer(name, 0, 0, nil, 0))
	if errors.Is(err, unix.EBUSY) {
		return Device{}, fmt.Errorf("%w: %w", ErrExist, err)
	}
	if err != nil {
		return Device{}, err
	}
	d := Device{Name: name}
	d.Major, d.Minor = decodeDev(h.dev)
	fault.Crash(fault.DMCreated)
	if err := activate(ctx, d, table, payload); err != nil {
		return Device{}, undoCreate(ctx, d, err)
	}
	d.Live = true
	return d, nil
}

// Activate completes a device that exists without an active table (a
// Create interrupted between its steps, Device.Live false): it loads
// table, resumes the device and makes its node. On a device that has an
// active table it fails with ErrExist: that one needs Reload.
func Activate(ctx context.Context, name string, table []Target) (Device, error) {
	if err := validName(name); err != nil {
		return Device{}, err
	}
	payload, err := tablePayload(table)
	if err != nil {
		return Device{}, fmt.Errorf("activate %s: %w", name, err)
	}
	d, exists, err := lookup(ctx, name)
	switch {
	case err != nil:
		return Device{}, err
	case !exists:
		return Device{}, fmt.Errorf("activate %s: %w", name, ErrNotFound)
	case d.Live:
		return Device{}, fmt.Errorf("activate %s: it has an active table: %w", name, ErrExist)
	}
	if err := activate(ctx, d, table, payload); err != nil {
		return Device{}, err
	}
	d.Live = true
	return d, nil
}

// activate loads the table, resumes the device and makes its node.
func activate(ctx context.Context, d Device, table []Target, payload []byte) error {
	if err := load(ctx, d.Name, table, payload); err != nil {
		return err
	}
	fault.Crash(fault.DMLoaded)
	if err := resume(ctx, d.Name); err != nil {
		return err
	}
	return ensureNode(d)
}

func undoCreate(ctx context.Context, d Device, cause error) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if err := Remove(cctx, d.Name); err != nil {
		return fmt.Errorf("%w (and removing the half-made device failed: %w)", cause, err)
	}
	return cause
}

// Reload replaces the table of a live device: a suspend with
// DM_NOFLUSH_FLAG, DM_TABLE_LOAD, a resume (also noflush). It never
// suspends with a flush: that makes dm-multipath stop queueing, which fails
// every queued I/O with EIO.
//
// If the load or resume fails the device is resumed on whatever table is
// active (the old one, unless a load abandoned at the deadline completed
// later), so it is not left suspended; I/O meanwhile waits, it is not
// failed. A suspend abandoned at the deadline may still complete in the
// kernel and leave the device suspended, with the same effect. Either way
// Reload can simply be called again.
func Reload(ctx context.Context, name string, table []Target) error {
	if err := validName(name); err != nil {
		return err
	}
	payload, err := tablePayload(table)
	if err != nil {
		return fmt.Errorf("reload %s: %w", name, err)
	}
	if _, err := call(ctx, "suspend", cmdDevSuspend, newBuffer(name, flagSuspend|flagNoFlush, 0, nil, 0)); err != nil {
		return notFound(err)
	}
	fault.Crash(fault.DMSuspended)
	err = load(ctx, name, table, payload)
	if err == nil {
		err = resume(ctx, name)
	}
	if err == nil {
		return nil
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if rerr := resume(cctx, name); rerr != nil {
		return fmt.Errorf("%w (and resuming it failed: %w; the device may be left suspended)", err, rerr)
	}
	return err
}

// Message sends msg to the target at sector 0 (DM_TARGET_MSG), for instance
// "fail_if_no_path" before giving a queueing multipath device up, or
// "queue_if_no_path" to queue again.
func Message(ctx context.Context, name, msg string) error {
	if err := validName(name); err != nil {
		return err
	}
	if err := validText("message", msg, maxMsgLen); err != nil {
		return err
	}
	_, err := call(ctx, "message "+strconv.Quote(msg)+" to", cmdTargetMsg, newBuffer(name, 0, 0, encodeMessage(0, msg), 0))
	return notFound(err)
}

// Remove deletes the device (DM_DEV_REMOVE) and the node Create made. A
// device that does not exist is already removed. The kernel refuses with
// EBUSY (wrapped) while the device is open or mounted. A multipath device
// that is queueing must get "fail_if_no_path" before its consumers let go
// (an unmount flushes, and with no path that flush waits forever).
func Remove(ctx context.Context, name string) error {
	if err := validName(name); err != nil {
		return err
	}
	d, exists, err := lookup(ctx, name)
	if err != nil {
		return err
	}
	if exists {
		if _, err := call(ctx, "remove", cmdDevRemove, newBuffer(name, 0, 0, nil, 0)); err != nil && !errors.Is(err, unix.ENXIO) {
			return err
		}
	}
	return removeNode(name, d, exists)
}

// Status returns the status line of each target (DM_TABLE_STATUS), as
// dmsetup status prints it: "<start> <length> <type> <status>". For
// multipath the path states are in it, A (active) or F (failed).
func Status(ctx context.Context, name string) ([]string, error) {
	targets, err := tableStatus(ctx, name, 0)
	if err != nil {
		return nil, err
	}
	lines := make([]string, len(targets))
	for i, t := range targets {
		lines[i] = t.String()
	}
	return lines, nil
}

// Table returns the active table as the kernel prints it back. The kernel
// normalises parameters (multipath adds its defaults, devices appear as
// major:minor), so compare the parts that matter, not whole strings.
func Table(ctx context.Context, name string) ([]Target, error) {
	return tableStatus(ctx, name, flagStatusTable)
}

// Lookup finds a device by name (DM_DEV_STATUS). It takes no context
// because DM_DEV_STATUS only reads dm's own bookkeeping and does not wait
// for I/O; it is bounded by lookupTimeout all the same.
func Lookup(name string) (Device, bool, error) {
	if err := validName(name); err != nil {
		return Device{}, false, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	return lookup(ctx, name)
}

func lookup(ctx context.Context, name string) (Device, bool, error) {
	h, err := call(ctx, "status of", cmdDevStatus, newBuffer(name, 0, 0, nil, 0))
	if errors.Is(err, unix.ENXIO) {
		return Device{}, false, nil
	}
	if err != nil {
		return Device{}, false, err
	}
	d := Device{Name: name, Live: h.flags&flagActivePresent != 0, Suspended: h.flags&flagSuspend != 0}
	d.Major, d.Minor = decodeDev(h.dev)
	return d, true, nil
}

// String renders t as a table line.
func (t Target) String() string {
	s := strconv.FormatUint(t.Start, 10) + " " + strconv.FormatUint(t.Length, 10) + " " + t.Type
	if t.Params != "" {
		s += " " + t.Params
	}
	return s
}

func load(ctx context.Context, name string, table []Target, payload []byte) error {
	_, err := call(ctx, "load table into", cmdTableLoad, newBuffer(name, 0, len(table), payload, 0))
	return notFound(err)
}

// Resume resumes a suspended device (without a flush), activating a table
// that was loaded but not resumed. Resuming a device that is not suspended
// changes nothing.
func Resume(ctx context.Context, name string) error {
	if err := validName(name); err != nil {
		return err
	}
	return resume(ctx, name)
}

// resume activates a loaded table. DM_NOFLUSH_FLAG matters when the device
// is not suspended yet: the kernel then suspends it first, with that flag.
func resume(ctx context.Context, name string) error {
	_, err := call(ctx, "resume", cmdDevSuspend, newBuffer(name, flagNoFlush, 0, nil, 0))
	return notFound(err)
}

func tableStatus(ctx context.Context, name string, flags uint32) ([]Target, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	for size := 16 << 10; size <= maxAnswer; size *= 2 {
		buf := newBuffer(name, flags, 0, nil, size)
		h, err := call(ctx, "table status of", cmdTableStatus, buf)
		if err != nil {
			return nil, notFound(err)
		}
		if h.flags&flagActivePresent == 0 {
			return nil, fmt.Errorf("table status of %s: %w", name, ErrNoTable)
		}
		if h.flags&flagBufferFull != 0 {
			continue
		}
		end := min(int(h.dataSize), len(buf))
		if int(h.dataStart) > end {
			return nil, fmt.Errorf("table status of %s: data starts at %d of %d bytes: %w", name, h.dataStart, end, errShort)
		}
		targets, err := decodeTargets(buf[h.dataStart:end], h.targetCount)
		if err != nil {
			return nil, fmt.Errorf("table status of %s: %w", name, err)
		}
		return targets, nil
	}
	return nil, fmt.Errorf("table status of %s: the answer does not fit in %d bytes", name, maxAnswer)
}

// call sends one request on a fresh descriptor of the control device and
// returns the header of the kernel's answer, which it wrote into buf.
func call(ctx context.Context, what string, nr uint32, buf []byte) (header, error) {
	name := cString(buf[offName : offName+nameLen])
	what = "device-mapper " + what + " " + name
	host := sys // an abandoned call keeps what it started with
	return deadline.Run(ctx, what, func() (header, error) {
		fd, err := unix.Open(host.control, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return header{}, fmt.Errorf("%s: opening %s (is dm-mod loaded?): %w", what, host.control, err)
		}
		defer func() { _ = unix.Close(fd) }()
		if err := host.ioctl(fd, request(nr), buf); err != nil {
			return header{}, fmt.Errorf("%s: %w", what, err)
		}
		return parseHeader(buf)
	})
}

func notFound(err error) error {
	if errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	return err
}

func tablePayload(table []Target) ([]byte, error) {
	if len(table) == 0 || len(table) > maxTargets {
		return nil, fmt.Errorf("%w: a table needs 1 to %d targets, got %d", ErrInvalid, maxTargets, len(table))
	}
	for i, t := range table {
		if !validType(t.Type) {
			return nil, fmt.Errorf("%w: target %d: type %q", ErrInvalid, i, t.Type)
		}
		if t.Length == 0 {
			return nil, fmt.Errorf("%w: target %d has no sectors", ErrInvalid, i)
		}
		if err := validText(fmt.Sprintf("target %d parameters", i), t.Params, maxParamsLen); err != nil {
			return nil, err
		}
	}
	return encodeTable(table), nil
}

func validName(name string) error {
	if name == "" || len(name) > maxNameLen {
		return fmt.Errorf("%w: name %q must have 1 to %d characters", ErrInvalid, name, maxNameLen)
	}
	for _, c := range []byte(name) {
		if !isAlnum(c) && c != '-' && c != '_' {
			return fmt.Errorf("%w: name %q may hold only letters, digits, '-' and '_'", ErrInvalid, name)
		}
	}
	return nil
}

// validType accepts what target types are named like in the kernel
// (lowercase words joined by '-' or '_'), within DM_MAX_TYPE_NAME.
func validType(s string) bool {
	if s == "" || len(s) > typeLen-1 {
		return false
	}
	for _, c := range []byte(s) {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

// validText accepts printable ASCII: the kernel reads these strings up to
// the first NUL and splits them at spaces, so anything else would be cut or
// misread.
func validText(what, s string, limit int) error {
	if len(s) > limit {
		return fmt.Errorf("%w: %s longer than %d bytes", ErrInvalid, what, limit)
	}
	for _, c := range []byte(s) {
		if c < ' ' || c > '~' {
			return fmt.Errorf("%w: %s contain byte %#x", ErrInvalid, what, c)
		}
	}
	return nil
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// ensureNode makes nodeDir/<name> lead to d. An existing entry that leads
// to d (a node, or udev's symlink) is kept; anything else there is stale,
// left by an earlier device of the same name, and is replaced.
func ensureNode(d Device) error {
	path := d.Path()
	want := unix.Mkdev(d.Major, d.Minor)
	if leadsTo(path, want) {
		return nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("replacing the stale node %s: %w", path, err)
	}
	if err := os.MkdirAll(sys.nodeDir, 0o755); err != nil {
		return err
	}
	err := unix.Mknod(path, unix.S_IFBLK|0o600, int(want))
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("making the node %s (%d:%d): %w", path, d.Major, d.Minor, err)
	}
	// EEXIST: udev made it meanwhile, which is fine if it leads to d.
	if !leadsTo(path, want) {
		return fmt.Errorf("%s does not lead to device %d:%d", path, d.Major, d.Minor)
	}
	return nil
}

func leadsTo(path string, dev uint64) bool {
	var st unix.Stat_t
	return unix.Stat(path, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK && st.Rdev == dev
}

// removeNode deletes the node Create made for a device that is now gone.
// Only a block node is removed, never a symlink (udev's to remove), and
// only when it is the removed device's or, for a device that did not exist,
// any device's: a /dev/mapper name without a dm device behind it is stale.
func removeNode(name string, d Device, existed bool) error {
	path := filepath.Join(sys.nodeDir, name)
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); errors.Is(err, unix.ENOENT) {
		return nil
	} else if err != nil {
		return fmt.Errorf("removing the node %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return nil
	}
	if existed && st.Rdev != unix.Mkdev(d.Major, d.Minor) {
		return nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing the node %s: %w", path, err)
	}
	return nil
}

// Available checks that the device-mapper can be driven: the control
// device opens and answers DM_VERSION with an interface this package
// speaks. It says nothing of target types, which the kernel loads on the
// first table that names them.
func Available(ctx context.Context) error {
	h, err := call(ctx, "version of", cmdVersion, newBuffer("", 0, 0, nil, 0))
	if err != nil {
		return err
	}
	if h.version[0] != interfaceVersion[0] {
		return fmt.Errorf("device-mapper interface %d.%d.%d: this driver speaks %d.x", h.version[0], h.version[1], h.version[2], interfaceVersion[0])
	}
	return nil
}
