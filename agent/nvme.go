package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/rds-csi/rds-csi/kernel/fabrics"
	"github.com/rds-csi/rds-csi/kernel/sysfs"
	"github.com/rds-csi/rds-csi/kernel/uevent"
)

// NVMe is the production Attacher: NVMe/TCP through /dev/nvme-fabrics, the
// device found through sysfs by subsystem NQN and namespace ID, and every
// wait driven by kernel uevents.
type NVMe struct {
	Fabrics *fabrics.Fabrics
	Sysfs   sysfs.Tree
	Events  *uevent.Monitor
	// DevDir holds the device nodes ("/dev").
	DevDir string
}

var _ Attacher = (*NVMe)(nil)

// nvmeOrBlock wakes a wait on any event that can change what sysfs shows of
// a controller or namespace.
func nvmeOrBlock(e uevent.Event) bool {
	return e.Subsystem == "block" || e.Subsystem == "nvme" || e.Subsystem == "nvme-subsystem"
}

func (n *NVMe) options(t Target) fabrics.Options {
	return fabrics.Options{
		Transport:      "tcp",
		TrAddr:         t.Address,
		TrSvcID:        strconv.Itoa(t.Port),
		NQN:            t.NQN,
		HostNQN:        t.HostNQN,
		HostID:         t.HostID,
		CtrlLossTmo:    t.Connect.CtrlLossTmo,
		ReconnectDelay: t.Connect.ReconnectDelay,
		KeepAliveTmo:   t.Connect.KeepAliveTmo,
		FastIOFailTmo:  t.Connect.FastIOFailTmo,
	}
}

// Attach connects to the volume's subsystem unless its namespace is already
// present, then waits for the namespace's block device. The subscription to
// uevents is made before the connect, so the device's arrival cannot be
// missed between the connect and the wait. A namespace that is another disk
// than the one staged (Target.Identity) is refused with an *IdentityError.
//
// A controller that is already connected may lack the namespace: the kernel
// drops a namespace whose identifiers changed across a reconnect and does
// not scan again by itself. Attach then asks the subsystem's live
// controllers to rescan, once at first and again every rescanEvery, until
// the namespace shows or ctx ends.
func (n *NVMe) Attach(ctx context.Context, t Target) (Device, error) {
	if dev, err := n.Find(ctx, t); err == nil {
		return dev, checkIdentity(t, dev)
	} else if !errors.Is(err, ErrNotAttached) {
		return Device{}, err
	}
	opts := n.options(t)
	if err := opts.Validate(); err != nil {
		return Device{}, err
	}
	var dev Device
	connected := false
	var rescanned time.Time
	err := uevent.WaitPolling(ctx, n.Events, nvmeOrBlock, rescanEvery, func() (bool, error) {
		if !connected {
			c, err := n.Fabrics.Connect(ctx, opts)
			if err != nil {
				return false, err
			}
			connected = true
			klog.V(2).InfoS("NVMe/TCP controller connected", "nqn", t.NQN, "controller", c.Controller, "already", c.Already)
			if !c.Already {
				rescanned = time.Now() // a new controller scans by itself
			}
		}
		d, err := n.Find(ctx, t)
		if errors.Is(err, ErrNotAttached) || errors.Is(err, sysfs.ErrMissingAttribute) { // a disk still being added: its directory shows before its attributes (kernel 6.12)
			if time.Since(rescanned) >= rescanEvery {
				rescanned = time.Now()
				n.rescanLive(t)
			}
			return false, nil
		}
		dev = d
		return err == nil, err
	})
	if err != nil {
		if connected && ctx.Err() != nil {
			if live := n.liveControllers(t); len(live) > 0 {
				return Device{}, fmt.Errorf("%w: controller %s of %s is live but shows no namespace %d, even after a rescan: the disk was removed or disabled on the target", err, strings.Join(live, ", "), t.NQN, t.NSID)
			}
		}
		return Device{}, err
	}
	return dev, checkIdentity(t, dev)
}

// rescanEvery spaces the rescans of a live controller that lacks the
// volume's namespace.
const rescanEvery = 5 * time.Second

// liveControllers names the subsystem's live controllers.
func (n *NVMe) liveControllers(t Target) []string {
	ctrls, err := n.Sysfs.ControllersOf(t.NQN)
	if err != nil {
		return nil
	}
	var live []string
	for _, c := range ctrls {
		if c.State == sysfs.StateLive {
			live = append(live, c.Name)
		}
	}
	return live
}

// rescanLive asks the subsystem's live controllers to scan their
// namespaces again. A failure is logged: the wait goes on either way.
func (n *NVMe) rescanLive(t Target) {
	for _, name := range n.liveControllers(t) {
		if err := n.Sysfs.Rescan(name); err != nil {
			klog.ErrorS(err, "Rescanning a controller that lacks the volume's namespace failed", "controller", name, "nqn", t.NQN, "nsid", t.NSID)
			continue
		}
		klog.InfoS("Controller is live without the volume's namespace; asked it to rescan", "controller", name, "nqn", t.NQN, "nsid", t.NSID)
	}
}

// Find resolves the namespace by subsystem NQN and namespace ID, and trusts
// the device node only after checking that its device number is the one
// sysfs gives for the namespace.
func (n *NVMe) Find(_ context.Context, t Target) (Device, error) {
	ns, err := n.Sysfs.ResolveNamespace(t.NQN, t.NSID)
	if errors.Is(err, fs.ErrNotExist) {
		return Device{}, ErrNotAttached
	}
	if err != nil {
		return Device{}, err
	}
	path := filepath.Join(n.DevDir, ns.Name)
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return Device{}, ErrNotAttached // the node appears with the uevent
		}
		return Device{}, err
	}
	got := sysfs.DevT{Major: unix.Major(st.Rdev), Minor: unix.Minor(st.Rdev)}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK || got != ns.Dev {
		return Device{}, fmt.Errorf("%s is device %s, but sysfs says namespace %d of %s is %s", path, got, t.NSID, t.NQN, ns.Dev)
	}
	return Device{Path: path, Dev: ns.Dev, Identity: ns.Identity(), Size: ns.Size}, nil
}

// Detach deletes every controller of the volume's subsystem. A controller
// that disappears on its own meanwhile is as good as deleted.
func (n *NVMe) Detach(ctx context.Context, t Target) error {
	ctrls, err := n.Sysfs.ControllersOf(t.NQN)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	var errs []error
	for _, c := range ctrls {
		if err := n.Fabrics.Disconnect(ctx, c.Name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("controller %s: %w", c.Name, err))
		}
	}
	return errors.Join(errs...)
}

// Refresh asks every controller of the subsystem to rescan its namespaces and
// waits, by uevent, until the device shows at least size bytes.
func (n *NVMe) Refresh(ctx context.Context, t Target, size int64) error {
	ctrls, err := n.Sysfs.ControllersOf(t.NQN)
	if err != nil {
		return err
	}
	return uevent.WaitFor(ctx, n.Events, nvmeOrBlock, func() (bool, error) {
		ns, err := n.Sysfs.ResolveNamespace(t.NQN, t.NSID)
		if err != nil {
			return false, err
		}
		if ns.Size >= size {
			return true, nil
		}
		for _, c := range ctrls {
			if err := n.Sysfs.Rescan(c.Name); err != nil {
				return false, err
			}
		}
		return false, nil
	})
}
