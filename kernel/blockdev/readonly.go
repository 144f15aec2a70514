package blockdev

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// ReadOnly reports the kernel's read-only flag of the block device at path
// (BLKROGET).
func ReadOnly(path string) (bool, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, fmt.Errorf("read-only flag of %s: %w", path, err)
	}
	defer func() { _ = unix.Close(fd) }()
	v, err := unix.IoctlGetInt(fd, unix.BLKROGET)
	if err != nil {
		return false, fmt.Errorf("read-only flag of %s: BLKROGET: %w", path, err)
	}
	return v != 0, nil
}

// SetReadOnly sets or clears the kernel's read-only flag of the block device
// at path (BLKROSET). Unlike a read-only bind mount of its device node, the
// flag makes the kernel refuse writes through every opener that comes after.
func SetReadOnly(path string, ro bool) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("setting read-only=%v on %s: %w", ro, path, err)
	}
	defer func() { _ = unix.Close(fd) }()
	v := 0
	if ro {
		v = 1
	}
	if err := unix.IoctlSetPointerInt(fd, unix.BLKROSET, v); err != nil {
		return fmt.Errorf("setting read-only=%v on %s: BLKROSET: %w", ro, path, err)
	}
	return nil
}
