// Package mount mounts, unmounts and inspects mounts with direct syscalls.
//
// It never execs mount(8), as k8s.io/mount-utils' Mounter does: the node
// image stays small and errors come back as errnos instead of parsed text.
//
// Mount propagation is left alone. The kubelet's directories sit on a shared
// host mount so that what the agent mounts reaches the kubelet and the pods;
// making targets private or slave here would break that, and making them
// shared would invite mount storms. Nothing in this package removes files or
// directories, recursively or not: removal is the caller's decision.
//
// The syscalls cannot be interrupted. Every operation runs the syscall on its
// own goroutine and returns at the context's end with an error, while the
// kernel may still complete it: after a timeout, callers must look at
// mountinfo rather than assume the operation did not happen.
package mount

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rds-csi/rds-csi/kernel/internal/deadline"
)

// mountInfoPath is the mount table of the agent's own mount namespace, which
// is the host's when the agent runs with the host's mounts.
const mountInfoPath = "/proc/self/mountinfo"

// DevT is a device number as major:minor.
type DevT struct {
	Major, Minor uint32
}

func (d DevT) String() string {
	return fmt.Sprintf("%d:%d", d.Major, d.Minor)
}

// Entry is one line of mountinfo. (Not "Mount": that is the verb below.)
type Entry struct {
	ID       int
	ParentID int
	// Dev is the st_dev of files on this mount: for ext4 and xfs, the block
	// device the filesystem lives on.
	Dev        DevT
	Root       string // the directory of the filesystem mounted here ("/" unless a bind of a subdirectory)
	MountPoint string
	FSType     string
	Source     string
	Options    []string // per-mount options
	// SuperOptions are the filesystem's own options, shared by all its mounts.
	SuperOptions []string
	ReadOnly     bool // of this mount, which a read-only bind can set on a writable filesystem
}

// ErrOtherDevice is returned when a path is mounted, but from another device
// than the caller expected.
var ErrOtherDevice = errors.New("mounted from another device")

// List returns every mount of the agent's mount namespace, in mountinfo
// order (parents before children, older before newer at one mount point).
func List() ([]Entry, error) {
	raw, err := os.ReadFile(mountInfoPath)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", mountInfoPath, err)
	}
	return parseMountInfo(string(raw))
}

// parseMountInfo reads the format of proc(5):
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//
// It is parsed here rather than with mount-utils because that one leaves the
// octal escapes of paths in place.
func parseMountInfo(text string) ([]Entry, error) {
	var mounts []Entry
	for line := range strings.Lines(text) {
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			continue
		}
		m, err := parseMountInfoLine(line)
		if err != nil {
			return nil, fmt.Errorf("mountinfo line %q: %w", line, err)
		}
		mounts = append(mounts, m)
	}
	return mounts, nil
}

func parseMountInfoLine(line string) (Entry, error) {
	fields := strings.Fields(line)
	sep := slices.Index(fields, "-")
	// Six fields before the optional ones, three after the separator.
	if sep < 6 || len(fields) < sep+4 {
		return Entry{}, errors.New("malformed")
	}
	id, err1 := strconv.Atoi(fields[0])
	parent, err2 := strconv.Atoi(fields[1])
	majorText, minorText, ok := strings.Cut(fields[2], ":")
	major, err3 := strconv.ParseUint(majorText, 10, 32)
	minor, err4 := strconv.ParseUint(minorText, 10, 32)
	if err := errors.Join(err1, err2, err3, err4); err != nil || !ok {
		return Entry{}, fmt.Errorf("malformed ids or device number: %w", err)
	}
	options := strings.Split(fields[5], ",")
	return Entry{
		ID:           id,
		ParentID:     parent,
		Dev:          DevT{Major: uint32(major), Minor: uint32(minor)},
		Root:         unescape(fields[3]),
		MountPoint:   unescape(fields[4]),
		FSType:       unescape(fields[sep+1]),
		Source:       unescape(fields[sep+2]),
		Options:      options,
		SuperOptions: strings.Split(fields[sep+3], ","),
		ReadOnly:     slices.Contains(options, "ro"),
	}, nil
}

// unescape undoes the octal escapes (\040 for a space, \011, \012, \134)
// the kernel writes in mountinfo so that fields never contain blanks.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// MountedAt returns the mount visible at mountPoint, that is the most recent
// one when several are stacked there. mountPoint must be absolute and free of
// symlinks, as mountinfo has it; it is not resolved here because resolving
// touches the path, which can hang on a dead filesystem.
func MountedAt(mountPoint string) (Entry, bool, error) {
	mountPoint = filepath.Clean(mountPoint)
	mounts, err := List()
	if err != nil {
		return Entry{}, false, err
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		if mounts[i].MountPoint == mountPoint {
			return mounts[i], true, nil
		}
	}
	return Entry{}, false, nil
}

// MountsOf returns every mount of a filesystem on the device major:minor,
// which is how "is this device still mounted somewhere" is answered.
func MountsOf(major, minor uint32) ([]Entry, error) {
	mounts, err := List()
	if err != nil {
		return nil, err
	}
	var of []Entry
	for _, m := range mounts {
		if m.Dev == (DevT{Major: major, Minor: minor}) {
			of = append(of, m)
		}
	}
	return of, nil
}

// IsMountedFrom makes mounts idempotent: true when mountPoint is mounted from
// the device major:minor, false when nothing is mounted there, and an error
// wrapping ErrOtherDevice when something else is. It is meant for
// filesystems: a device node bind-mounted for a block volume shows the st_dev
// of the filesystem holding the node (devtmpfs), so for those compare the
// node's own rdev (blockdev.DevT) instead.
func IsMountedFrom(mountPoint string, major, minor uint32) (bool, error) {
	m, ok, err := MountedAt(mountPoint)
	if err != nil || !ok {
		return false, err
	}
	if want := (DevT{Major: major, Minor: minor}); m.Dev != want {
		return false, fmt.Errorf("%s: %w: %s (%s, device %s), expected device %s",
			mountPoint, ErrOtherDevice, m.Source, m.FSType, m.Dev, want)
	}
	return true, nil
}

// flagOptions are the options the kernel takes as mount flags rather than as
// filesystem data.
var flagOptions = map[string]struct {
	set, clear uintptr
}{
	"ro":          {set: unix.MS_RDONLY},
	"rw":          {clear: unix.MS_RDONLY},
	"nosuid":      {set: unix.MS_NOSUID},
	"suid":        {clear: unix.MS_NOSUID},
	"nodev":       {set: unix.MS_NODEV},
	"dev":         {clear: unix.MS_NODEV},
	"noexec":      {set: unix.MS_NOEXEC},
	"exec":        {clear: unix.MS_NOEXEC},
	"sync":        {set: unix.MS_SYNCHRONOUS},
	"async":       {clear: unix.MS_SYNCHRONOUS},
	"dirsync":     {set: unix.MS_DIRSYNC},
	"noatime":     {set: unix.MS_NOATIME},
	"atime":       {clear: unix.MS_NOATIME},
	"nodiratime":  {set: unix.MS_NODIRATIME},
	"diratime":    {clear: unix.MS_NODIRATIME},
	"relatime":    {set: unix.MS_RELATIME},
	"norelatime":  {clear: unix.MS_RELATIME},
	"strictatime": {set: unix.MS_STRICTATIME},
	"lazytime":    {set: unix.MS_LAZYTIME},
	"nolazytime":  {clear: unix.MS_LAZYTIME},
	"defaults":    {},
}

// refusedOptions change what kind of mount this is; they have their own
// functions (BindMount) or are the kubelet's business (propagation).
var refusedOptions = []string{"bind", "rbind", "move", "remount", "shared", "rshared",
	"slave", "rslave", "private", "rprivate", "unbindable", "runbindable"}

// Mount mounts the filesystem of type fstype on source at target. Options
// that are mount flags (ro, noatime, nosuid...) become flags; the others are
// passed to the filesystem (for example discard, or nouuid for xfs). It does
// not check what is already mounted: callers use IsMountedFrom first so that
// repeating a call never stacks a second mount.
func Mount(ctx context.Context, source, target, fstype string, options []string) error {
	var flags uintptr
	var data []string
	for _, o := range options {
		if slices.Contains(refusedOptions, o) {
			return fmt.Errorf("mount %s on %s: option %q is not accepted here", source, target, o)
		}
		if f, ok := flagOptions[o]; ok {
			flags = flags&^f.clear | f.set
			continue
		}
		data = append(data, o)
	}
	return bounded(ctx, fmt.Sprintf("mount %s on %s", source, target), func() error {
		return unix.Mount(source, target, fstype, flags, strings.Join(data, ","))
	})
}

const undoTimeout = 10 * time.Second

// BindMount makes source visible at target. With readOnly the new mount is
// made read-only without changing source: a bind takes its flags from the
// source mount and ignores MS_RDONLY, so it takes a second call that
// remounts the bind itself (MS_REMOUNT|MS_BIND|MS_RDONLY). That remount sets
// all the per-mount flags at once, so the ones the bind inherited (nosuid,
// nodev, noexec, atime) are read back and passed again; dropping them would
// quietly grant the pod more than the source allowed. If the remount fails,
// the writable bind is undone: a read-only request never leaves a writable
// mount behind.
func BindMount(ctx context.Context, source, target string, readOnly bool) error {
	what := fmt.Sprintf("bind mount %s on %s", source, target)
	if err := bounded(ctx, what, func() error {
		return unix.Mount(source, target, "", unix.MS_BIND, "")
	}); err != nil {
		return err
	}
	if !readOnly {
		return nil
	}
	err := bounded(ctx, what+" read-only", func() error {
		var st unix.Statfs_t
		if err := unix.Statfs(target, &st); err != nil {
			return fmt.Errorf("read flags of the new bind: %w", err)
		}
		return unix.Mount("", target, "", inheritedFlags(st.Flags)|unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, "")
	})
	if err != nil {
		// ctx may be what just expired; the undo still deserves its chance.
		undoCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
		defer cancel()
		if undo := bounded(undoCtx, "undo "+what, func() error { return unix.Unmount(target, 0) }); undo != nil {
			return fmt.Errorf("%w; undoing the writable bind also failed: %w", err, undo)
		}
		return err
	}
	return nil
}

// inheritedFlags turns statfs's ST_* flags into the per-mount MS_* flags a
// bind remount must repeat. Most share their values, the atime ones do not
// (ST_RELATIME is 0x1000, MS_RELATIME 0x200000), hence the explicit table.
func inheritedFlags(st int64) uintptr {
	var flags uintptr
	for _, f := range []struct {
		st int64
		ms uintptr
	}{
		{unix.ST_NOSUID, unix.MS_NOSUID},
		{unix.ST_NODEV, unix.MS_NODEV},
		{unix.ST_NOEXEC, unix.MS_NOEXEC},
		{unix.ST_NOATIME, unix.MS_NOATIME},
		{unix.ST_NODIRATIME, unix.MS_NODIRATIME},
		{unix.ST_RELATIME, unix.MS_RELATIME},
	} {
		if st&f.st != 0 {
			flags |= f.ms
		}
	}
	// With no atime flag the kernel would default to relatime; a mount that
	// shows none of them is strictatime and must stay so.
	if flags&(unix.MS_NOATIME|unix.MS_RELATIME) == 0 {
		flags |= unix.MS_STRICTATIME
	}
	return flags
}

// Unmount unmounts the most recent mount at target. It is not lazy: a busy
// mount is an error (wrapping EBUSY), never detached in the background. A
// target with nothing mounted is already unmounted, but only once mountinfo
// confirms it, because the kernel's EINVAL also covers other mistakes.
// Stacked mounts come off one per call.
func Unmount(ctx context.Context, target string) error {
	err := bounded(ctx, "unmount "+target, func() error { return unix.Unmount(target, 0) })
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return err
	}
	_, mounted, listErr := MountedAt(target)
	if listErr != nil {
		return fmt.Errorf("%w (and mountinfo could not tell whether it is mounted: %w)", err, listErr)
	}
	if mounted {
		return err
	}
	return nil
}

// Stats are the numbers NodeGetVolumeStats reports.
type Stats struct {
	TotalBytes, AvailableBytes, UsedBytes int64
	TotalInodes, FreeInodes, UsedInodes   int64
}

// Statfs measures the filesystem mounted at path. Available is what an
// unprivileged writer can still use (reserved blocks excluded), as df shows.
func Statfs(ctx context.Context, path string) (Stats, error) {
	return deadline.Run(ctx, "statfs "+path, func() (Stats, error) {
		var st unix.Statfs_t
		if err := unix.Statfs(path, &st); err != nil {
			return Stats{}, fmt.Errorf("statfs %s: %w", path, err)
		}
		// Block counts are in fragment-size units; Frsize is zero on old kernels.
		unit := st.Frsize
		if unit == 0 {
			unit = st.Bsize
		}
		return Stats{
			TotalBytes:     int64(st.Blocks) * unit,
			AvailableBytes: int64(st.Bavail) * unit,
			UsedBytes:      int64(st.Blocks-st.Bfree) * unit,
			TotalInodes:    int64(st.Files),
			FreeInodes:     int64(st.Ffree),
			UsedInodes:     int64(st.Files - st.Ffree),
		}, nil
	})
}

// bounded runs one mount-table syscall under ctx.
func bounded(ctx context.Context, what string, fn func() error) error {
	_, err := deadline.Run(ctx, what, func() (struct{}, error) {
		if err := fn(); err != nil {
			return struct{}{}, fmt.Errorf("%s: %w", what, err)
		}
		return struct{}{}, nil
	})
	return err
}
