package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"k8s.io/klog/v2"

	"github.com/rds-csi/rds-csi/internal/fault"
	"github.com/rds-csi/rds-csi/kernel/blockdev"
	"github.com/rds-csi/rds-csi/kernel/dm"
	"github.com/rds-csi/rds-csi/kernel/sysfs"
)

// Mapper is the device-mapper as the multipath front uses it. KernelMapper
// (kernel/dm) is the production one.
type Mapper interface {
	Lookup(name string) (dm.Device, bool, error)
	Create(ctx context.Context, name string, table []dm.Target) (dm.Device, error)
	// Activate completes a device that exists without a live table.
	Activate(ctx context.Context, name string, table []dm.Target) (dm.Device, error)
	// Resume releases a suspended device.
	Resume(ctx context.Context, name string) error
	// Reload replaces the table without flushing: queued I/O moves on to
	// the new table.
	Reload(ctx context.Context, name string, table []dm.Target) error
	Table(ctx context.Context, name string) ([]dm.Target, error)
	Status(ctx context.Context, name string) ([]string, error)
	Message(ctx context.Context, name, msg string) error
	Remove(ctx context.Context, name string) error
}

// KernelMapper is the kernel's device-mapper.
type KernelMapper struct{}

var _ Mapper = KernelMapper{}

func (KernelMapper) Lookup(name string) (dm.Device, bool, error) { return dm.Lookup(name) }
func (KernelMapper) Create(ctx context.Context, name string, table []dm.Target) (dm.Device, error) {
	return dm.Create(ctx, name, table)
}
func (KernelMapper) Activate(ctx context.Context, name string, table []dm.Target) (dm.Device, error) {
	return dm.Activate(ctx, name, table)
}
func (KernelMapper) Resume(ctx context.Context, name string) error { return dm.Resume(ctx, name) }
func (KernelMapper) Reload(ctx context.Context, name string, table []dm.Target) error {
	return dm.Reload(ctx, name, table)
}
func (KernelMapper) Table(ctx context.Context, name string) ([]dm.Target, error) {
	return dm.Table(ctx, name)
}
func (KernelMapper) Status(ctx context.Context, name string) ([]string, error) {
	return dm.Status(ctx, name)
}
func (KernelMapper) Message(ctx context.Context, name, msg string) error {
	return dm.Message(ctx, name, msg)
}
func (KernelMapper) Remove(ctx context.Context, name string) error { return dm.Remove(ctx, name) }

// Multipath is an Attacher that puts a stable device-mapper device, a
// one-path dm-multipath table with queue_if_no_path, in front of the
// namespace Paths attaches. Consumers (the staged filesystem, block
// publishes) get the dm device. When the controller is lost, I/O queues in
// dm instead of failing; when the namespace comes back, possibly renumbered,
// Attach reloads the table onto it without a flush and the queued I/O goes
// on. The dm device keeps its number, so nothing above it has to move.
type Multipath struct {
	Paths  Attacher
	Mapper Mapper
	// SysRoot and ProcRoot are /sys and /proc; DevDir holds the device
	// nodes (devtmpfs makes /dev/dm-<minor>).
	SysRoot, ProcRoot, DevDir string

	// size measures a block device; blockdev.Size unless a test swaps it.
	size func(ctx context.Context, path string) (int64, error)
}

var _ Attacher = (*Multipath)(nil)

// mapperPrefix starts the name of every front this agent makes.
const mapperPrefix = "rds-csi-"

// MapperName is the name of a volume's dm device. IDs of letters, digits
// and '-' are kept; others get their other characters replaced and a hash
// suffix after a '_', which no kept name contains, so no two IDs share a
// name.
func MapperName(volumeID string) string {
	clean := []byte(volumeID)
	for i, c := range clean {
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '-' {
			clean[i] = '-'
		}
	}
	if string(clean) == volumeID {
		return mapperPrefix + volumeID
	}
	sum := sha256.Sum256([]byte(volumeID))
	return mapperPrefix + string(clean) + "_" + hex.EncodeToString(sum[:4])
}

// Attach connects the namespace and makes the volume's front lead to it:
// created on the first attach, reloaded when the namespace changed (a
// reconnect after a loss), when its size changed, or when the front stopped
// queueing or failed its path.
func (m *Multipath) Attach(ctx context.Context, t Target) (Device, error) {
	if t.VolumeID == "" {
		return Device{}, errors.New("multipath front: a volume ID is required")
	}
	ns, err := m.Paths.Attach(ctx, t)
	if err == nil {
		err = checkIdentity(t, ns) // before the front can lead anywhere
	}
	if err != nil {
		return Device{}, err
	}
	fault.Crash(fault.StageConnected)
	return m.front(ctx, t.VolumeID, ns)
}

func (m *Multipath) front(ctx context.Context, volumeID string, ns Device) (Device, error) {
	table, err := m.tableFor(ctx, ns)
	if err != nil {
		return Device{}, err
	}
	name := MapperName(volumeID)
	d, exists, err := m.Mapper.Lookup(name)
	if err != nil {
		return Device{}, err
	}
	if !exists {
		d, err = m.Mapper.Create(ctx, name, table)
		if err != nil {
			return Device{}, fmt.Errorf("creating the multipath front %s over %s: %w", name, ns.Path, err)
		}
		klog.V(2).InfoS("Multipath front created", "volumeID", volumeID, "front", name, "dev", fmt.Sprintf("%d:%d", d.Major, d.Minor), "over", ns.Path)
		return m.device(d, ns), nil
	}
	if !d.Live {
		// Made, but never given its table: an agent was killed inside the
		// creation. It maps nothing and nothing can have used it, so it is
		// completed as if it were being made now.
		d, err = m.Mapper.Activate(ctx, name, table)
		if err != nil {
			return Device{}, fmt.Errorf("completing the half-made multipath front %s over %s: %w", name, ns.Path, err)
		}
		klog.InfoS("Completed a multipath front left without a table", "volumeID", volumeID, "front", name, "over", ns.Path)
		return m.device(d, ns), nil
	}
	current, why, err := m.leadsTo(ctx, name, ns.Dev, table[0].Length)
	if err != nil {
		return Device{}, err
	}
	if !current {
		if err := m.Mapper.Reload(ctx, name, table); err != nil {
			return Device{}, fmt.Errorf("moving the multipath front %s onto %s: %w", name, ns.Path, err)
		}
		klog.InfoS("Multipath front reloaded", "volumeID", volumeID, "front", name, "over", ns.Path, "dev", ns.Dev, "because", why)
	}
	return m.device(d, ns), nil
}

// tableFor is the front's table over ns: a bio-based queue over a bio-based
// disk (a native-multipath head), a request-based one otherwise.
func (m *Multipath) tableFor(ctx context.Context, ns Device) ([]dm.Target, error) {
	size := m.size
	if size == nil {
		size = blockdev.Size
	}
	bytes, err := size(ctx, ns.Path)
	if err != nil {
		return nil, err
	}
	if bytes <= 0 || bytes%512 != 0 {
		return nil, fmt.Errorf("%s is %d bytes: not a whole number of sectors", ns.Path, bytes)
	}
	requestBased, err := blockdev.RequestBased(m.SysRoot, filepath.Base(ns.Path))
	if err != nil {
		return nil, err
	}
	return dm.MultipathTable(uint64(bytes)/512, ns.Dev.Major, ns.Dev.Minor, !requestBased), nil
}

var devNumberRE = regexp.MustCompile(`^\d+:\d+$`)

// leadsTo tells whether the front's live table is a queueing multipath of
// sectors over dev with its path active, and if not, why.
func (m *Multipath) leadsTo(ctx context.Context, name string, dev sysfs.DevT, sectors uint64) (bool, string, error) {
	table, err := m.Mapper.Table(ctx, name)
	if err != nil {
		return false, "", err
	}
	if len(table) != 1 || table[0].Type != "multipath" {
		return false, fmt.Sprintf("table %v is not one multipath target", table), nil
	}
	if table[0].Length != sectors {
		return false, fmt.Sprintf("size %d sectors, namespace %d", table[0].Length, sectors), nil
	}
	fields := strings.Fields(table[0].Params)
	if !slices.Contains(fields, "queue_if_no_path") {
		return false, "not queueing", nil
	}
	var paths []string
	for _, f := range fields {
		if devNumberRE.MatchString(f) {
			paths = append(paths, f)
		}
	}
	if len(paths) != 1 || paths[0] != dev.String() {
		return false, fmt.Sprintf("paths %v, namespace %s", paths, dev), nil
	}
	status, err := m.Mapper.Status(ctx, name)
	if err != nil {
		return false, "", err
	}
	if !pathActive(status, dev.String()) {
		return false, fmt.Sprintf("path %s not active (%q)", dev, status), nil
	}
	return true, "", nil
}

// pathActive finds the path in a multipath status line, where it is
// followed by its state: A (active) or F (failed).
func pathActive(status []string, dev string) bool {
	if len(status) != 1 {
		return false
	}
	fields := strings.Fields(status[0])
	for i := 0; i+1 < len(fields); i++ {
		if fields[i] == dev {
			return fields[i+1] == "A"
		}
	}
	return false
}

// device is the front d over the namespace ns (the zero Device while the
// namespace is gone).
func (m *Multipath) device(d dm.Device, ns Device) Device {
	return Device{
		Path:     filepath.Join(m.DevDir, fmt.Sprintf("dm-%d", d.Minor)),
		Dev:      sysfs.DevT{Major: d.Major, Minor: d.Minor},
		Backing:  ns.Dev,
		Mapped:   true,
		Identity: ns.Identity,
		Size:     ns.Size,
	}
}

// Find returns the volume's front, with the namespace below it when it is
// present. A volume without a front (staged before fronts, or by an agent
// running without them) is its namespace; a lookup by NQN alone (orphans)
// is too.
func (m *Multipath) Find(ctx context.Context, t Target) (Device, error) {
	if t.VolumeID == "" {
		return m.Paths.Find(ctx, t)
	}
	d, exists, err := m.Mapper.Lookup(MapperName(t.VolumeID))
	if err != nil {
		return Device{}, err
	}
	ns, err := m.Paths.Find(ctx, t)
	if !exists || !d.Live {
		// A front without a live table (its making was interrupted) maps
		// nothing and nothing can use it: the volume is its namespace
		// until Attach completes the front, and Detach removes it.
		return ns, err
	}
	if err != nil && !errors.Is(err, ErrNotAttached) {
		return Device{}, err
	}
	return m.device(d, ns), nil
}

// Detach disconnects the volume once nothing but its front uses the
// namespace, removing the front first; the kernel refuses that while
// anything has the front open. Every doubt leaves the volume connected.
func (m *Multipath) Detach(ctx context.Context, t Target) error {
	name := MapperName(t.VolumeID)
	var front string // the front's disk name, the one holder allowed
	if t.VolumeID != "" {
		d, exists, err := m.Mapper.Lookup(name)
		if err != nil {
			return err
		}
		if exists {
			front = fmt.Sprintf("dm-%d", d.Minor)
		}
	}
	ns, err := m.Paths.Find(ctx, t)
	switch {
	case errors.Is(err, ErrNotAttached):
	case err != nil:
		return err
	default:
		if err := m.unused(ctx, ns, front); err != nil {
			return fmt.Errorf("%w: %w", errPrecondition, err)
		}
	}
	if front != "" {
		if err := m.Mapper.Remove(ctx, name); err != nil {
			return fmt.Errorf("%w: removing the multipath front %s of %s: %w", errPrecondition, name, t.VolumeID, err)
		}
		fault.Crash(fault.UnstageFrontRemoved)
	}
	return m.Paths.Detach(ctx, t)
}

// unused refuses when anything but the front uses the namespace: another
// holder, a process with it open, or an exclusive claim (which the front
// itself makes, so that is only asked when there is no front).
func (m *Multipath) unused(ctx context.Context, ns Device, front string) error {
	holders, err := blockdev.Holders(m.SysRoot, filepath.Base(ns.Path))
	if err != nil {
		return fmt.Errorf("cannot tell whether %s is in use, so it stays connected: %w", ns.Path, err)
	}
	var others []string
	for _, h := range holders {
		if h != front {
			others = append(others, h)
		}
	}
	if len(others) > 0 {
		return fmt.Errorf("%s is still held by %s", ns.Path, strings.Join(others, ", "))
	}
	if front == "" {
		busy, err := blockdev.InUse(ns.Path)
		if err != nil {
			return fmt.Errorf("cannot tell whether %s is claimed, so it stays connected: %w", ns.Path, err)
		}
		if busy {
			return fmt.Errorf("%s is still claimed by another user (exclusive open refused)", ns.Path)
		}
	}
	procs, err := blockdev.Openers(ctx, m.ProcRoot, ns.Dev.Major, ns.Dev.Minor)
	if err != nil {
		return fmt.Errorf("cannot tell whether %s is open, so it stays connected: %w", ns.Path, err)
	}
	if len(procs) > 0 {
		return fmt.Errorf("%s is still open in process %d (%s)", ns.Path, procs[0].PID, procs[0].Comm)
	}
	return nil
}

// Front finds the volume's front. A front left without a live table has
// no device node (the kernel adds the disk with its first table): its Path
// is empty.
func (m *Multipath) Front(_ context.Context, volumeID string) (Device, bool, error) {
	d, exists, err := m.Mapper.Lookup(MapperName(volumeID))
	if err != nil || !exists {
		return Device{}, false, err
	}
	if !d.Live {
		return Device{Mapped: true, Dev: sysfs.DevT{Major: d.Major, Minor: d.Minor}}, true, nil
	}
	return m.device(d, Device{}), true, nil
}

// RemoveFront removes the volume's front; the kernel refuses while it is
// open.
func (m *Multipath) RemoveFront(ctx context.Context, volumeID string) error {
	return m.Mapper.Remove(ctx, MapperName(volumeID))
}

// Refresh grows the namespace, then the front over it.
func (m *Multipath) Refresh(ctx context.Context, t Target, size int64) error {
	if err := m.Paths.Refresh(ctx, t, size); err != nil {
		return err
	}
	_, exists, err := m.Mapper.Lookup(MapperName(t.VolumeID))
	if err != nil || !exists {
		return err
	}
	ns, err := m.Paths.Find(ctx, t)
	if err != nil {
		return err
	}
	if err := checkIdentity(t, ns); err != nil {
		return err
	}
	_, err = m.front(ctx, t.VolumeID, ns)
	return err
}

// StopQueueing makes the front fail I/O instead of queueing it while it has
// no path, so that an unmount or a close at node shutdown cannot wait
// forever on an unreachable target. The next Attach restores queueing.
func (m *Multipath) StopQueueing(ctx context.Context, t Target) error {
	return m.setQueueing(ctx, t, "fail_if_no_path")
}

// StartQueueing makes the volume's front queue I/O again while it has no
// path, after a previous run's StopQueueing, and resumes it if a previous
// run was killed inside a reload and left it suspended (its I/O held for
// ever otherwise: the health model sees a live namespace and has nothing to
// repair). No front is not an error.
func (m *Multipath) StartQueueing(ctx context.Context, t Target) error {
	return m.setQueueing(ctx, t, "queue_if_no_path")
}

// setQueueing sends msg to the volume's live front, resuming it first if a
// killed agent left it suspended.
func (m *Multipath) setQueueing(ctx context.Context, t Target, msg string) error {
	name := MapperName(t.VolumeID)
	d, exists, err := m.Mapper.Lookup(name)
	if err != nil || !exists || !d.Live {
		return err
	}
	if d.Suspended {
		if err := m.Mapper.Resume(ctx, name); err != nil {
			return fmt.Errorf("resuming the front %s a killed agent left suspended: %w", name, err)
		}
		klog.InfoS("Resumed a front a killed agent left suspended", "volumeID", t.VolumeID, "front", name)
	}
	return m.Mapper.Message(ctx, name, msg)
}

// frontQueueing is an Attacher whose devices queue I/O while a volume has
// no path (Multipath), which can be switched off for a shutdown and on
// again.
type frontQueueing interface {
	StopQueueing(ctx context.Context, t Target) error
	StartQueueing(ctx context.Context, t Target) error
}

// StopQueueing makes every staged volume fail I/O rather than queue it
// while it has no path, for a node going down: the shutdown's
// unmounts must not wait forever on a target that is gone.
func (n *Node) StopQueueing(ctx context.Context) error {
	qs, ok := n.attacher.(frontQueueing)
	if !ok {
		return nil
	}
	n.mu.Lock()
	ids := make([]string, 0, len(n.staging))
	for id := range n.staging {
		ids = append(ids, id)
	}
	n.mu.Unlock()
	var errs []error
	for _, id := range ids {
		if err := qs.StopQueueing(ctx, Target{VolumeID: id}); err != nil {
			errs = append(errs, fmt.Errorf("volume %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}
