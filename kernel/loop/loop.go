// Package loop attaches regular files to loop devices through the kernel's
// ioctls, without losetup. Tests use it to get real block devices, and the
// agent's test transport uses it to stand in for NVMe namespaces on machines
// that have none.
//
// Attach needs LOOP_CONFIGURE (Linux 5.8). Devices are attached without
// LO_FLAGS_AUTOCLEAR, so they stay bound until Detach: a device that vanished
// when its last user closed it would not behave like a namespace.
package loop

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

const controlPath = "/dev/loop-control"

// maxAttempts bounds the retries when other attachers keep winning the race
// for the device LOOP_CTL_GET_FREE returned; each attempt takes a new one.
const maxAttempts = 64

// sysBlock is where bound loop devices show their backing file.
const sysBlock = "/sys/block"

// ErrDetachDeferred means LOOP_CLR_FD was accepted but the device is still
// open elsewhere (mounted, held by a process): the kernel unbinds it when the
// last opener closes it, not now.
var ErrDetachDeferred = errors.New("loop device still open, the kernel will detach it at its last close")

// Attach binds file, opened read-write, to a free loop device and returns the
// device's path. Concurrent callers, in this process or others, each get
// their own device.
func Attach(ctx context.Context, file string) (string, error) {
	backing, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		return "", fmt.Errorf("attach %s: %w", file, err)
	}
	defer func() { _ = backing.Close() }() // the loop device holds its own reference once configured
	if info, err := backing.Stat(); err != nil {
		return "", fmt.Errorf("attach %s: %w", file, err)
	} else if !info.Mode().IsRegular() {
		return "", fmt.Errorf("attach %s: not a regular file", file)
	}

	control, err := os.OpenFile(controlPath, os.O_RDWR, 0)
	if err != nil {
		return "", fmt.Errorf("attach %s: %w", file, err)
	}
	defer func() { _ = control.Close() }()

	config := unix.LoopConfig{Fd: uint32(backing.Fd())}
	copy(config.Info.File_name[:len(config.Info.File_name)-1], file)

	for attempt := 0; attempt < maxAttempts; attempt++ {
		if err := ctx.Err(); err != nil {
			return "", fmt.Errorf("attach %s: %w", file, err)
		}
		n, err := unix.IoctlRetInt(int(control.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return "", fmt.Errorf("attach %s: LOOP_CTL_GET_FREE: %w", file, err)
		}
		dev := "/dev/loop" + strconv.Itoa(n)
		busy, err := configure(dev, &config)
		if busy {
			continue // someone bound it between GET_FREE and CONFIGURE
		}
		if err != nil {
			return "", fmt.Errorf("attach %s to %s: %w", file, dev, err)
		}
		return dev, nil
	}
	return "", fmt.Errorf("attach %s: every free loop device was taken by another attacher %d times", file, maxAttempts)
}

func configure(dev string, config *unix.LoopConfig) (busy bool, err error) {
	fd, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	defer func() { _ = unix.Close(fd) }()
	err = unix.IoctlLoopConfigure(fd, config)
	if errors.Is(err, unix.EBUSY) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("LOOP_CONFIGURE: %w", err)
	}
	return false, nil
}

// Detach unbinds dev from its backing file. A device that is not bound is
// already detached (nil). If dev is still open elsewhere the kernel only
// marks it for detaching at its last close, and Detach returns an error
// wrapping ErrDetachDeferred: the caller asked for a detach that has not
// happened yet.
func Detach(ctx context.Context, dev string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("detach %s: %w", dev, err)
	}
	name, err := deviceName(dev)
	if err != nil {
		return fmt.Errorf("detach %s: %w", dev, err)
	}
	fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENXIO) {
		return nil // the device itself is gone, so is its binding
	}
	if err != nil {
		return fmt.Errorf("detach %s: %w", dev, err)
	}
	err = unix.IoctlSetInt(fd, unix.LOOP_CLR_FD, 0)
	// The kernel unbinds on the last close when other openers exist, and our
	// own descriptor is one of them: close before looking at the result.
	_ = unix.Close(fd)
	if errors.Is(err, unix.ENXIO) {
		return nil // was not bound
	}
	if err != nil {
		return fmt.Errorf("detach %s: LOOP_CLR_FD: %w", dev, err)
	}
	if bound(name) {
		return fmt.Errorf("detach %s: %w", dev, ErrDetachDeferred)
	}
	return nil
}

// Find returns the loop devices bound to file, sorted. It compares inodes,
// not paths, so another name for the same file matches and a different file
// now at the same path does not. It reads sysfs only: opening the devices
// would delay a concurrent Detach.
func Find(file string) ([]string, error) {
	want, err := os.Stat(file)
	if err != nil {
		return nil, fmt.Errorf("find loop devices of %s: %w", file, err)
	}
	paths, err := filepath.Glob(filepath.Join(sysBlock, "loop*", "loop", "backing_file"))
	if err != nil {
		return nil, fmt.Errorf("find loop devices of %s: %w", file, err)
	}
	var devs []string
	for _, p := range paths {
		raw, err := os.ReadFile(p)
		if err != nil {
			continue // detached while we looked
		}
		backing := strings.TrimSuffix(string(raw), "\n")
		got, err := os.Stat(backing)
		if err != nil {
			continue // deleted, or not reachable by that path in our mount namespace
		}
		if os.SameFile(want, got) {
			devs = append(devs, "/dev/"+filepath.Base(filepath.Dir(filepath.Dir(p))))
		}
	}
	slices.Sort(devs)
	return devs, nil
}

// bound tells whether the kernel still has a backing file for the device:
// the loop attribute directory exists only while it is bound.
func bound(name string) bool {
	_, err := os.Stat(filepath.Join(sysBlock, name, "loop", "backing_file"))
	return err == nil
}

func deviceName(dev string) (string, error) {
	name := filepath.Base(dev)
	if !strings.HasPrefix(name, "loop") || filepath.Dir(dev) != "/dev" {
		return "", fmt.Errorf("%q is not a /dev/loopN path", dev)
	}
	if _, err := strconv.Atoi(strings.TrimPrefix(name, "loop")); err != nil {
		return "", fmt.Errorf("%q is not a /dev/loopN path", dev)
	}
	return name, nil
}
