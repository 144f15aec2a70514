// Package blockdev reads facts about block devices straight from the kernel:
// ioctls, stat, sysfs and /proc. Nothing here writes to a device.
package blockdev

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/rds-csi/rds-csi/kernel/internal/deadline"
)

// Size returns the size of the block device at path in bytes, from
// BLKGETSIZE64. Opening a device whose transport is gone can block, hence the
// context.
func Size(ctx context.Context, path string) (int64, error) {
	return deadline.Run(ctx, "size of "+path, func() (int64, error) {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return 0, fmt.Errorf("size of %s: %w", path, err)
		}
		defer func() { _ = unix.Close(fd) }()
		size, err := unix.IoctlGetUint64(fd, unix.BLKGETSIZE64)
		if err != nil {
			return 0, fmt.Errorf("size of %s: BLKGETSIZE64: %w", path, err)
		}
		return int64(size), nil
	})
}

// DevT returns the device number of the block device node at path, following
// symlinks. It is how a caller checks that a path still names the device it
// resolved earlier.
func DevT(path string) (major, minor uint32, err error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, 0, fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return 0, 0, fmt.Errorf("%s is not a block device (mode %#o)", path, st.Mode&unix.S_IFMT)
	}
	return unix.Major(st.Rdev), unix.Minor(st.Rdev), nil
}

// InUse tells whether something holds the device exclusively: a mounted
// filesystem, a device-mapper or md holder, or another O_EXCL opener. The
// kernel answers with EBUSY to an exclusive open in all those cases. Plain
// (non-exclusive) openers such as a VM's disk image are not seen here; use
// Openers for those.
func InUse(path string) (bool, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EBUSY) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("exclusive open of %s: %w", path, err)
	}
	_ = unix.Close(fd)
	return false, nil
}

// Holders lists the kernel devices stacked on the block device name (such as
// dm-0), from <sysRoot>/class/block/<name>/holders. class/block is used
// rather than block/ because it also has partitions.
func Holders(sysRoot, name string) ([]string, error) {
	if name == "" || strings.ContainsRune(name, '/') || name == "." || name == ".." {
		return nil, fmt.Errorf("holders: %q is not a block device name", name)
	}
	entries, err := os.ReadDir(filepath.Join(sysRoot, "class", "block", name, "holders"))
	if err != nil {
		return nil, fmt.Errorf("holders of %s: %w", name, err)
	}
	holders := make([]string, 0, len(entries))
	for _, e := range entries {
		holders = append(holders, e.Name())
	}
	return holders, nil
}

// Process is a process that has a device open.
type Process struct {
	PID  int
	Comm string
}

// Openers lists the processes under procRoot (normally /proc) with an open
// file descriptor on the block device major:minor. It is best effort: it only
// sees processes in its PID namespace, and processes that exit during the
// scan are skipped. At ctx's end it returns what it found so far together
// with an error wrapping ctx.Err(), because a partial list must not be taken
// for a complete one.
func Openers(ctx context.Context, procRoot string, major, minor uint32) ([]Process, error) {
	want := unix.Mkdev(major, minor)
	pids, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var found []Process
	for _, p := range pids {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue // not a process directory
		}
		// A stat through a descriptor of a dead network filesystem can
		// block, so each process is examined under the deadline.
		holds, err := deadline.Run(ctx, "scan open files of pid "+p.Name(), func() (bool, error) {
			return holdsDevice(filepath.Join(procRoot, p.Name()), want), nil
		})
		if err != nil {
			return found, fmt.Errorf("openers of %d:%d (partial list): %w", major, minor, err)
		}
		if holds {
			comm, _ := os.ReadFile(filepath.Join(procRoot, p.Name(), "comm"))
			found = append(found, Process{PID: pid, Comm: strings.TrimSpace(string(comm))})
		}
	}
	return found, nil
}

// holdsDevice reports whether any descriptor of the process at dir refers to
// the block device want. Errors mean the process vanished or is not ours to
// look at; both count as "not holding".
func holdsDevice(dir string, want uint64) bool {
	fdDir := filepath.Join(dir, "fd")
	fds, err := os.ReadDir(fdDir)
	if err != nil {
		return false
	}
	for _, fd := range fds {
		link := filepath.Join(fdDir, fd.Name())
		target, err := os.Readlink(link)
		// Sockets, pipes and anonymous inodes cannot be block devices;
		// skipping them avoids needless stats.
		if err != nil || !strings.HasPrefix(target, "/") {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(link, &st) != nil {
			continue
		}
		if st.Mode&unix.S_IFMT == unix.S_IFBLK && st.Rdev == want {
			return true
		}
	}
	return false
}

// directAlign is the buffer alignment and read granularity for O_DIRECT. It
// is a multiple of every logical block size Linux supports for NVMe.
const directAlign = 64 << 10

// ReadHead reads the first n bytes of the device at path (fewer only if the
// device is smaller). It uses O_DIRECT when the device allows it, so the bytes
// come from the device and not from the page cache: a volume that cannot be
// read back fails here instead of looking blank.
func ReadHead(ctx context.Context, path string, n int) ([]byte, error) {
	if n <= 0 {
		return nil, fmt.Errorf("read head of %s: length %d is not positive", path, n)
	}
	return deadline.Run(ctx, "read head of "+path, func() ([]byte, error) {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_DIRECT, 0)
		if errors.Is(err, unix.EINVAL) {
			// Filesystems without direct I/O (tmpfs) refuse the flag.
			return readBuffered(path, n)
		}
		if err != nil {
			return nil, fmt.Errorf("read head of %s: %w", path, err)
		}
		defer func() { _ = unix.Close(fd) }()
		buf := alignedBuffer((n + directAlign - 1) / directAlign * directAlign)
		got, err := readFull(fd, buf)
		if errors.Is(err, unix.EINVAL) && got == 0 {
			// The device rejected our alignment; the page cache has none.
			return readBuffered(path, n)
		}
		if err != nil {
			return nil, fmt.Errorf("read head of %s: %w", path, err)
		}
		return buf[:min(got, n)], nil
	})
}

func readBuffered(path string, n int) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("read head of %s: %w", path, err)
	}
	defer func() { _ = unix.Close(fd) }()
	buf := make([]byte, n)
	got, err := readFull(fd, buf)
	if err != nil {
		return nil, fmt.Errorf("read head of %s: %w", path, err)
	}
	return buf[:got], nil
}

// readFull reads until buf is full or the device ends.
func readFull(fd int, buf []byte) (int, error) {
	total := 0
	for total < len(buf) {
		chunk := min(len(buf)-total, directAlign)
		got, err := unix.Pread(fd, buf[total:total+chunk], int64(total))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return total, err
		}
		if got == 0 {
			break
		}
		total += got
	}
	return total, nil
}

func alignedBuffer(size int) []byte {
	raw := make([]byte, size+directAlign)
	offset := 0
	// Go's collector does not move heap objects, so the address is stable.
	if rem := int(uintptr(unsafe.Pointer(unsafe.SliceData(raw))) % directAlign); rem != 0 {
		offset = directAlign - rem
	}
	return raw[offset : offset+size : offset+size]
}

// RequestBased tells a request-based (blk-mq) disk from a bio-based one,
// such as an NVMe native-multipath head or a device-mapper device: only
// blk-mq disks have <sysRoot>/block/<name>/mq. A device-mapper table
// stacked on the disk must be of the same kind.
func RequestBased(sysRoot, name string) (bool, error) {
	if name == "" || strings.ContainsRune(name, '/') || name == "." || name == ".." {
		return false, fmt.Errorf("request-based: %q is not a block device name", name)
	}
	disk := filepath.Join(sysRoot, "block", name)
	if _, err := os.Stat(disk); err != nil {
		return false, fmt.Errorf("request-based: %w", err)
	}
	_, err := os.Stat(filepath.Join(disk, "mq"))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("request-based: %w", err)
	}
}
