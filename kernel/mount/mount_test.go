package mount

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rds-csi/rds-csi/kernel/command"
	"github.com/rds-csi/rds-csi/kernel/loop"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mount tests need root")
	}
}

// mountTmpfs mounts a tmpfs at a new directory and unmounts it when the test
// ends, whatever the test did to it.
func mountTmpfs(t *testing.T, options ...string) string {
	t.Helper()
	requireRoot(t)
	dir := t.TempDir()
	if err := Mount(t.Context(), "rds-csi-test", dir, "tmpfs", append([]string{"size=4m"}, options...)); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unmountAll(dir) })
	return dir
}

func unmountAll(dir string) {
	for unix.Unmount(dir, 0) == nil {
	}
}

// ext4Device returns a loop device holding a fresh ext4 filesystem.
func ext4Device(t *testing.T) string {
	t.Helper()
	requireRoot(t)
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("no /dev/loop-control on this machine: %v", err)
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 is not installed")
	}
	backing := filepath.Join(t.TempDir(), "ext4.img")
	if err := os.WriteFile(backing, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(backing, 32<<20); err != nil {
		t.Fatal(err)
	}
	dev, err := loop.Attach(t.Context(), backing)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = loop.Detach(context.Background(), dev) })
	if _, _, err := command.Run(t.Context(), time.Minute, "mkfs.ext4", "-q", "-F", dev); err != nil {
		t.Fatal(err)
	}
	return dev
}

func devT(t *testing.T, dev string) (uint32, uint32) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		t.Fatal(err)
	}
	return unix.Major(st.Rdev), unix.Minor(st.Rdev)
}

func TestMountOfAnExt4DeviceShowsInMountinfoWithItsDevT(t *testing.T) {
	dev := ext4Device(t)
	major, minor := devT(t, dev)
	target := t.TempDir()
	if err := Mount(t.Context(), dev, target, "ext4", []string{"noatime", "nosuid"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unmountAll(target) })

	m, ok, err := MountedAt(target)
	if err != nil || !ok {
		t.Fatalf("MountedAt = %v, %v", ok, err)
	}
	if m.Dev != (DevT{major, minor}) || m.FSType != "ext4" || m.Source != dev || m.ReadOnly {
		t.Fatalf("mountinfo entry %+v does not describe a writable ext4 on %s (%d:%d)", m, dev, major, minor)
	}
	for _, o := range []string{"noatime", "nosuid"} {
		if !slices.Contains(m.Options, o) {
			t.Errorf("option %s missing from %v", o, m.Options)
		}
	}
	if of, err := MountsOf(major, minor); err != nil || len(of) != 1 || of[0].MountPoint != target {
		t.Fatalf("MountsOf = %+v, %v; want the one mount at %s", of, err, target)
	}
}

func TestIsMountedFromTellsTheThreeCasesApart(t *testing.T) {
	dev := ext4Device(t)
	major, minor := devT(t, dev)
	target := t.TempDir()

	if ok, err := IsMountedFrom(target, major, minor); ok || err != nil {
		t.Fatalf("before mounting: %v, %v; want false, nil", ok, err)
	}
	if err := Mount(t.Context(), dev, target, "ext4", nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unmountAll(target) })
	if ok, err := IsMountedFrom(target, major, minor); !ok || err != nil {
		t.Fatalf("mounted from the device: %v, %v; want true, nil", ok, err)
	}
	if ok, err := IsMountedFrom(target, major, minor+1000); ok || !errors.Is(err, ErrOtherDevice) {
		t.Fatalf("checked against another device: %v, %v; want ErrOtherDevice", ok, err)
	}
}

func TestBindMountIsWritableUnlessReadOnlyIsAsked(t *testing.T) {
	tests := []struct {
		name      string
		readOnly  bool
		wantWrite error
	}{
		{name: "a read-write bind accepts writes", readOnly: false, wantWrite: nil},
		{name: "a read-only bind refuses writes with EROFS", readOnly: true, wantWrite: unix.EROFS},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			source := mountTmpfs(t, "nosuid", "nodev", "noexec", "noatime")
			target := t.TempDir()
			if err := BindMount(t.Context(), source, target, tt.readOnly); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { unmountAll(target) })

			err := os.WriteFile(filepath.Join(target, "file"), []byte("x"), 0o600)
			if !errors.Is(err, tt.wantWrite) && (err != nil || tt.wantWrite != nil) {
				t.Fatalf("write through the bind: %v, want %v", err, tt.wantWrite)
			}
			// The source itself must stay writable.
			if err := os.WriteFile(filepath.Join(source, "other"), []byte("x"), 0o600); err != nil {
				t.Fatalf("write to the source: %v", err)
			}
			m, ok, err := MountedAt(target)
			if err != nil || !ok || m.ReadOnly != tt.readOnly {
				t.Fatalf("mountinfo at target: %+v, %v, %v", m, ok, err)
			}
			for _, o := range []string{"nosuid", "nodev", "noexec", "noatime"} {
				if !slices.Contains(m.Options, o) {
					t.Errorf("the bind lost %s inherited from its source: %v", o, m.Options)
				}
			}
		})
	}
}

func TestBindMountOfADeviceNodeOntoAFile(t *testing.T) {
	dev := ext4Device(t)
	target := filepath.Join(t.TempDir(), "block")
	if err := os.WriteFile(target, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := BindMount(t.Context(), dev, target, false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unmountAll(target) })
	major, minor := devT(t, dev)
	gotMajor, gotMinor := devT(t, target)
	if gotMajor != major || gotMinor != minor {
		t.Fatalf("target is %d:%d, want %d:%d", gotMajor, gotMinor, major, minor)
	}
}

func TestUnmount(t *testing.T) {
	t.Run("a mounted tmpfs is unmounted", func(t *testing.T) {
		dir := mountTmpfs(t)
		if err := Unmount(t.Context(), dir); err != nil {
			t.Fatal(err)
		}
		if _, ok, err := MountedAt(dir); ok || err != nil {
			t.Fatalf("still mounted after Unmount: %v, %v", ok, err)
		}
	})
	t.Run("a directory with nothing mounted is already unmounted", func(t *testing.T) {
		requireRoot(t)
		if err := Unmount(t.Context(), t.TempDir()); err != nil {
			t.Fatalf("Unmount of a plain directory: %v, want nil", err)
		}
	})
	t.Run("a path that does not exist is already unmounted", func(t *testing.T) {
		requireRoot(t)
		if err := Unmount(t.Context(), filepath.Join(t.TempDir(), "gone")); err != nil {
			t.Fatalf("Unmount of a missing path: %v, want nil", err)
		}
	})
	t.Run("a busy mount is an error, not a lazy unmount", func(t *testing.T) {
		dir := mountTmpfs(t)
		f, err := os.Create(filepath.Join(dir, "open"))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = f.Close() }()
		if err := Unmount(t.Context(), dir); !errors.Is(err, unix.EBUSY) {
			t.Fatalf("Unmount of a busy mount: %v, want EBUSY", err)
		}
		if _, ok, _ := MountedAt(dir); !ok {
			t.Fatal("the busy mount went away")
		}
	})
	t.Run("stacked mounts come off one at a time", func(t *testing.T) {
		dir := mountTmpfs(t)
		if err := Mount(t.Context(), "second", dir, "tmpfs", []string{"size=1m"}); err != nil {
			t.Fatal(err)
		}
		if err := Unmount(t.Context(), dir); err != nil {
			t.Fatal(err)
		}
		m, ok, err := MountedAt(dir)
		if err != nil || !ok || m.Source != "rds-csi-test" {
			t.Fatalf("after one Unmount the first tmpfs should show: %+v, %v, %v", m, ok, err)
		}
	})
}

func TestMountRefusesOptionsThatChangeTheKindOfMount(t *testing.T) {
	for _, o := range []string{"bind", "remount", "shared", "rprivate"} {
		t.Run(o, func(t *testing.T) {
			if err := Mount(t.Context(), "x", t.TempDir(), "tmpfs", []string{o}); err == nil {
				t.Fatalf("option %s accepted", o)
			}
		})
	}
}

func TestMountGivesUpAtTheDeadline(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := Mount(ctx, "x", t.TempDir(), "tmpfs", nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Mount with an ended context: %v, want context.Canceled", err)
	}
}

func TestStatfsOfAMountedExt4(t *testing.T) {
	dev := ext4Device(t)
	target := t.TempDir()
	if err := Mount(t.Context(), dev, target, "ext4", nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unmountAll(target) })
	if err := os.WriteFile(filepath.Join(target, "data"), make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Statfs(t.Context(), target)
	if err != nil {
		t.Fatal(err)
	}
	if s.TotalBytes <= 0 || s.TotalBytes > 32<<20 || s.UsedBytes < 1<<20 || s.AvailableBytes <= 0 ||
		s.AvailableBytes > s.TotalBytes-s.UsedBytes || s.TotalInodes <= 0 || s.UsedInodes <= 0 ||
		s.FreeInodes+s.UsedInodes != s.TotalInodes {
		t.Fatalf("implausible stats for a 32 MiB ext4 holding 1 MiB: %+v", s)
	}
}

func TestParseMountInfo(t *testing.T) {
	tests := []struct {
		name string
		line string
		want Entry
	}{
		{
			name: "a line with optional fields parses",
			line: "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=continue\n",
			want: Entry{ID: 36, ParentID: 35, Dev: DevT{98, 0}, Root: "/mnt1", MountPoint: "/mnt2", FSType: "ext3",
				Source: "/dev/root", Options: []string{"rw", "noatime"}, SuperOptions: []string{"rw", "errors=continue"}},
		},
		{
			name: "escaped blanks in paths are restored",
			line: `40 1 259:3 / /var/lib/kubelet/pods/a\040b/vol ro,relatime - xfs /dev/nvme0n1 rw`,
			want: Entry{ID: 40, ParentID: 1, Dev: DevT{259, 3}, Root: "/", MountPoint: "/var/lib/kubelet/pods/a b/vol",
				FSType: "xfs", Source: "/dev/nvme0n1", Options: []string{"ro", "relatime"}, SuperOptions: []string{"rw"}, ReadOnly: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseMountInfo(tt.line)
			if err != nil || len(got) != 1 {
				t.Fatalf("parse: %v, %v", got, err)
			}
			g := got[0]
			if g.ID != tt.want.ID || g.ParentID != tt.want.ParentID || g.Dev != tt.want.Dev || g.Root != tt.want.Root ||
				g.MountPoint != tt.want.MountPoint || g.FSType != tt.want.FSType || g.Source != tt.want.Source ||
				!slices.Equal(g.Options, tt.want.Options) || !slices.Equal(g.SuperOptions, tt.want.SuperOptions) ||
				g.ReadOnly != tt.want.ReadOnly {
				t.Fatalf("got %+v\nwant %+v", g, tt.want)
			}
		})
	}
	for _, bad := range []string{"36 35 98:0 /mnt1 /mnt2 rw - ext3", "x 35 98:0 / / rw - ext3 a rw", "1 2 98 / / rw - ext3 a rw"} {
		if _, err := parseMountInfo(bad); err == nil {
			t.Errorf("malformed line %q accepted", bad)
		}
	}
}

func TestInheritedFlags(t *testing.T) {
	tests := []struct {
		name string
		st   int64
		want uintptr
	}{
		{"a mount without atime flags stays strictatime", unix.ST_NOSUID, unix.MS_NOSUID | unix.MS_STRICTATIME},
		{"relatime is translated to its mount flag", unix.ST_RELATIME | unix.ST_NODEV, unix.MS_RELATIME | unix.MS_NODEV},
		{"read-only is not inherited, the caller decides it", unix.ST_RDONLY | unix.ST_NOATIME, unix.MS_NOATIME},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := inheritedFlags(tt.st); got != tt.want {
				t.Fatalf("inheritedFlags(%#x) = %#x, want %#x", tt.st, got, tt.want)
			}
		})
	}
}
