// Package looptransport is the agent's test transport for machines without
// NVMe: it attaches the simulator's backing file of a volume to a loop
// device, behind the same agent.Attacher interface the NVMe/TCP fabrics code
// implements. Everything above it (mkfs, mounts, bind mounts, in-use checks,
// expansion) runs for real. The NVMe path itself is tested in the VM.
package looptransport

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/rds-csi/rds-csi/agent"
	"github.com/rds-csi/rds-csi/kernel/blockdev"
	"github.com/rds-csi/rds-csi/kernel/loop"
	"github.com/rds-csi/rds-csi/kernel/sysfs"
	"github.com/rds-csi/rds-csi/test/rdssim"
)

// Disks is what the transport needs of the simulator.
type Disks interface {
	Disks() []rdssim.Disk
}

// Attacher attaches exported simulator disks to loop devices.
type Attacher struct {
	Sim Disks
	// mu serialises attach and detach: two stages of one volume must not
	// both find it unattached and bind it twice.
	mu sync.Mutex
}

var _ agent.Attacher = (*Attacher)(nil)

// backingFile finds the exported disk serving t.NQN, as a connect would.
func (a *Attacher) backingFile(t agent.Target) (string, error) {
	for _, d := range a.Sim.Disks() {
		if d.NQN == t.NQN {
			return d.BackingFile, nil
		}
	}
	return "", fmt.Errorf("no exported disk with NQN %s on the simulated RDS", t.NQN)
}

// device describes the loop device at path. Its identity is the backing
// file's (device and inode, as the loop driver holds them): a file replaced
// under the same name is another disk, as a re-created RDS disk reports
// other namespace identifiers.
func device(path string) (agent.Device, error) {
	major, minor, err := blockdev.DevT(path)
	if err != nil {
		return agent.Device{}, err
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return agent.Device{}, err
	}
	info, err := unix.IoctlLoopGetStatus64(fd)
	_ = unix.Close(fd)
	if err != nil {
		return agent.Device{}, fmt.Errorf("LOOP_GET_STATUS64 on %s: %w", path, err)
	}
	size, err := blockdev.Size(context.Background(), path)
	if err != nil {
		return agent.Device{}, err
	}
	return agent.Device{
		Path:     path,
		Dev:      sysfs.DevT{Major: major, Minor: minor},
		Identity: sysfs.Identity{WWID: fmt.Sprintf("loop.%x.%d", info.Device, info.Inode)},
		Size:     size,
	}, nil
}

// Attach binds the volume's backing file to a loop device, or returns the
// one it is bound to already.
func (a *Attacher) Attach(ctx context.Context, t agent.Target) (agent.Device, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	file, err := a.backingFile(t)
	if err != nil {
		return agent.Device{}, err
	}
	devs, err := loop.Find(file)
	if err != nil {
		return agent.Device{}, err
	}
	if len(devs) > 0 {
		return device(devs[0])
	}
	dev, err := loop.Attach(ctx, file)
	if err != nil {
		return agent.Device{}, err
	}
	return device(dev)
}

// Find returns the loop device of the volume, or agent.ErrNotAttached.
func (a *Attacher) Find(_ context.Context, t agent.Target) (agent.Device, error) {
	file, err := a.backingFile(t)
	if err != nil {
		return agent.Device{}, fmt.Errorf("%w: %w", agent.ErrNotAttached, err)
	}
	devs, err := loop.Find(file)
	if errors.Is(err, os.ErrNotExist) || (err == nil && len(devs) == 0) {
		return agent.Device{}, agent.ErrNotAttached
	}
	if err != nil {
		return agent.Device{}, err
	}
	return device(devs[0])
}

// Detach unbinds every loop device of the volume; one still held open is an
// error, as a controller that cannot be deleted would be.
func (a *Attacher) Detach(ctx context.Context, t agent.Target) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	file, err := a.backingFile(t)
	if err != nil {
		return err
	}
	devs, err := loop.Find(file)
	if err != nil {
		return err
	}
	for _, dev := range devs {
		if err := loop.Detach(ctx, dev); err != nil {
			return err
		}
	}
	return nil
}

// Refresh makes each loop device of the volume re-read its backing file's
// size (LOOP_SET_CAPACITY), as a namespace rescan does for NVMe. The ioctl is
// synchronous, so the caller's size check right after it needs no wait.
func (a *Attacher) Refresh(_ context.Context, t agent.Target, _ int64) error {
	file, err := a.backingFile(t)
	if err != nil {
		return err
	}
	devs, err := loop.Find(file)
	if err != nil {
		return err
	}
	for _, dev := range devs {
		fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		err = unix.IoctlSetInt(fd, unix.LOOP_SET_CAPACITY, 0)
		_ = unix.Close(fd)
		if err != nil {
			return fmt.Errorf("LOOP_SET_CAPACITY on %s: %w", dev, err)
		}
	}
	return nil
}
