package blockdev

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rds-csi/rds-csi/kernel/command"
	"github.com/rds-csi/rds-csi/kernel/loop"
)

// loopDevice attaches a sparse file of size bytes, optionally filled with
// content at offset 0, and detaches it when the test ends.
func loopDevice(t *testing.T, size int64, content []byte) (dev, backing string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("block device tests need root for loop devices")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("no /dev/loop-control on this machine, cannot create loop devices: %v", err)
	}
	backing = filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(backing, content, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(backing, size); err != nil {
		t.Fatal(err)
	}
	dev, err := loop.Attach(t.Context(), backing)
	if err != nil {
		t.Fatalf("attach loop device: %v", err)
	}
	t.Cleanup(func() {
		if err := loop.Detach(context.Background(), dev); err != nil {
			t.Errorf("detach %s: %v", dev, err)
		}
	})
	return dev, backing
}

func mkfsExt4(t *testing.T, dev string) {
	t.Helper()
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 is not installed")
	}
	if _, _, err := command.Run(t.Context(), time.Minute, "mkfs.ext4", "-q", "-F", dev); err != nil {
		t.Fatalf("mkfs.ext4: %v", err)
	}
}

func TestSizeReportsTheDeviceSize(t *testing.T) {
	dev, _ := loopDevice(t, 8<<20, nil)
	size, err := Size(t.Context(), dev)
	if err != nil || size != 8<<20 {
		t.Fatalf("Size = %d, %v; want %d", size, err, 8<<20)
	}
}

func TestDevTMatchesWhatSysfsSays(t *testing.T) {
	dev, _ := loopDevice(t, 1<<20, nil)
	major, minor, err := DevT(dev)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join("/sys/class/block", filepath.Base(dev), "dev"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprintf("%d:%d", major, minor), strings.TrimSpace(string(raw)); got != want {
		t.Fatalf("DevT = %s, sysfs says %s", got, want)
	}
}

func TestDevTRefusesWhatIsNotABlockDevice(t *testing.T) {
	for _, path := range []string{"/dev/null", t.TempDir(), "/nonexistent"} {
		t.Run(path, func(t *testing.T) {
			if _, _, err := DevT(path); err == nil {
				t.Fatalf("DevT(%s) succeeded", path)
			}
		})
	}
}

func TestInUseSeesExclusiveClaims(t *testing.T) {
	tests := []struct {
		name  string
		claim func(t *testing.T, dev string)
		want  bool
	}{
		{name: "an idle device is not in use", claim: func(*testing.T, string) {}, want: false},
		{name: "a plain reader does not make it in use", claim: func(t *testing.T, dev string) {
			f, err := os.Open(dev)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = f.Close() })
		}, want: false},
		{name: "an exclusive opener makes it in use", claim: func(t *testing.T, dev string) {
			fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = unix.Close(fd) })
		}, want: true},
		{name: "a mounted filesystem makes it in use", claim: func(t *testing.T, dev string) {
			mkfsExt4(t, dev)
			dir := t.TempDir()
			if err := unix.Mount(dev, dir, "ext4", 0, ""); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = unix.Unmount(dir, 0) })
		}, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev, _ := loopDevice(t, 16<<20, nil)
			tt.claim(t, dev)
			got, err := InUse(dev)
			if err != nil || got != tt.want {
				t.Fatalf("InUse = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestHoldersOfAnUnstackedDeviceIsEmpty(t *testing.T) {
	dev, _ := loopDevice(t, 1<<20, nil)
	holders, err := Holders("/sys", filepath.Base(dev))
	if err != nil || len(holders) != 0 {
		t.Fatalf("Holders = %v, %v; want none", holders, err)
	}
}

func TestALoopDeviceIsRequestBased(t *testing.T) {
	dev, _ := loopDevice(t, 1<<20, nil)
	rq, err := RequestBased("/sys", filepath.Base(dev))
	if err != nil || !rq {
		t.Fatalf("RequestBased(%s) = %v, %v; loop devices are blk-mq", dev, rq, err)
	}
}

func TestRequestBasedLooksForTheMqDirectory(t *testing.T) {
	sys := t.TempDir()
	for _, d := range []string{"block/nvme0n1/mq", "block/nvme1n1"} {
		if err := os.MkdirAll(filepath.Join(sys, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, want := range map[string]bool{"nvme0n1": true, "nvme1n1": false} {
		got, err := RequestBased(sys, name)
		if err != nil || got != want {
			t.Errorf("RequestBased(%s) = %v, %v; want %v", name, got, err, want)
		}
	}
	for _, bad := range []string{"", "..", "a/b", "missing"} {
		if _, err := RequestBased(sys, bad); err == nil {
			t.Errorf("RequestBased(%q) succeeded", bad)
		}
	}
}

func TestHoldersListsTheEntriesOfTheHoldersDirectory(t *testing.T) {
	sys := t.TempDir()
	dir := filepath.Join(sys, "class", "block", "nvme0n1", "holders")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"dm-0", "dm-3"} {
		if err := os.WriteFile(filepath.Join(dir, h), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	got, err := Holders(sys, "nvme0n1")
	if err != nil || !slices.Equal(got, []string{"dm-0", "dm-3"}) {
		t.Fatalf("Holders = %v, %v", got, err)
	}
	for _, bad := range []string{"", "..", "a/b", "missing"} {
		if _, err := Holders(sys, bad); err == nil {
			t.Errorf("Holders(%q) succeeded", bad)
		}
	}
}

func TestOpenersFindsAProcessHoldingTheDevice(t *testing.T) {
	dev, _ := loopDevice(t, 1<<20, nil)
	major, minor, err := DevT(dev)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if procs, err := Openers(ctx, "/proc", major, minor); err != nil || len(procs) != 0 {
		t.Fatalf("before opening: Openers = %v, %v; want none", procs, err)
	}
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	procs, err := Openers(ctx, "/proc", major, minor)
	if err != nil {
		t.Fatal(err)
	}
	want := Process{PID: os.Getpid(), Comm: commOf(t, os.Getpid())}
	if !slices.Contains(procs, want) {
		t.Fatalf("Openers = %v, want it to contain %v", procs, want)
	}
}

func TestOpenersStopsAtTheDeadline(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := Openers(ctx, "/proc", 7, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("Openers with an ended context: %v, want context.Canceled", err)
	}
}

func commOf(t *testing.T, pid int) string {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(raw))
}

func TestReadHeadReturnsTheDeviceContent(t *testing.T) {
	content := bytes.Repeat([]byte("rds-csi!"), 16<<10) // 128 KiB
	dev, _ := loopDevice(t, 1<<20, content)
	got, err := ReadHead(t.Context(), dev, 100_000)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, content[:100_000]) {
		t.Fatal("ReadHead returned different bytes than the device holds")
	}
}

func TestReadHeadStopsAtTheEndOfASmallDevice(t *testing.T) {
	dev, _ := loopDevice(t, 128<<10, nil)
	got, err := ReadHead(t.Context(), dev, 1<<20)
	if err != nil || len(got) != 128<<10 {
		t.Fatalf("ReadHead = %d bytes, %v; want %d", len(got), err, 128<<10)
	}
}

func TestHasSignatureOnRealDevices(t *testing.T) {
	random := make([]byte, 4096)
	if _, err := rand.Read(random); err != nil {
		t.Fatal(err)
	}
	lateByte := make([]byte, headSize)
	lateByte[headSize-1] = 1
	tests := []struct {
		name      string
		content   []byte
		prepare   func(t *testing.T, dev string)
		wantFound bool
		wantWhat  string
	}{
		{name: "a zeroed volume is blank", wantFound: false},
		{name: "an ext4 volume is found", prepare: mkfsExt4, wantFound: true, wantWhat: "ext2/3/4"},
		{name: "random bytes are found", content: random, wantFound: true, wantWhat: "data in the first MiB"},
		{name: "a single byte at the end of the first MiB is found", content: lateByte, wantFound: true, wantWhat: "data in the first MiB"},
		{name: "an xfs volume is found", prepare: func(t *testing.T, dev string) {
			if _, err := exec.LookPath("mkfs.xfs"); err != nil {
				t.Skip("mkfs.xfs is not installed (apt-get install xfsprogs)")
			}
			if _, _, err := command.Run(t.Context(), time.Minute, "mkfs.xfs", "-q", "-f", dev); err != nil {
				t.Fatalf("mkfs.xfs: %v", err)
			}
		}, wantFound: true, wantWhat: "xfs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := exec.LookPath("blkid"); err != nil {
				t.Skip("blkid is not installed")
			}
			dev, _ := loopDevice(t, 320<<20, tt.content)
			if tt.prepare != nil {
				tt.prepare(t, dev)
			}
			found, what, err := HasSignature(t.Context(), dev)
			if err != nil || found != tt.wantFound || what != tt.wantWhat {
				t.Fatalf("HasSignature = %v, %q, %v; want %v, %q", found, what, err, tt.wantFound, tt.wantWhat)
			}
		})
	}
}

func TestHasSignatureFailsClosedWhenBlkidCannotVouch(t *testing.T) {
	tests := []struct {
		name      string
		blkid     func() ([]byte, error)
		wantFound bool
		wantWhat  string
		wantErr   bool
	}{
		{name: "blkid finding nothing means blank", blkid: func() ([]byte, error) {
			return nil, &command.ExitError{Name: "blkid", Code: 2}
		}},
		{name: "blkid naming a type beyond the first MiB means found", blkid: func() ([]byte, error) {
			return []byte("DEVNAME=/dev/x\nTYPE=zfs_member\n"), nil
		}, wantFound: true, wantWhat: "zfs_member (blkid)"},
		{name: "blkid naming only a partition table means found", blkid: func() ([]byte, error) {
			return []byte("PTTYPE=gpt\n"), nil
		}, wantFound: true, wantWhat: "gpt (blkid)"},
		{name: "blkid reporting an ambiguous probe is an error", blkid: func() ([]byte, error) {
			return nil, &command.ExitError{Name: "blkid", Code: 8, Stderr: "ambivalent"}
		}, wantErr: true},
		{name: "blkid failing with a usage error is an error", blkid: func() ([]byte, error) {
			return nil, &command.ExitError{Name: "blkid", Code: 4}
		}, wantErr: true},
		{name: "blkid missing from the image is an error", blkid: func() ([]byte, error) {
			return nil, fmt.Errorf("run blkid: %w", exec.ErrNotFound)
		}, wantErr: true},
		{name: "blkid timing out is an error", blkid: func() ([]byte, error) {
			return nil, fmt.Errorf("run blkid: killed (timed out): %w", context.DeadlineExceeded)
		}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev, _ := loopDevice(t, 4<<20, nil)
			fakeBlkid(t, func(name string, args []string) ([]byte, error) {
				if name != "blkid" || !slices.Equal(args, []string{"-p", "-o", "export", dev}) {
					t.Errorf("unexpected command %s %v", name, args)
				}
				return tt.blkid()
			})
			found, what, err := HasSignature(t.Context(), dev)
			if (err != nil) != tt.wantErr || found != tt.wantFound || what != tt.wantWhat {
				t.Fatalf("HasSignature = %v, %q, %v; want found=%v what=%q error=%v",
					found, what, err, tt.wantFound, tt.wantWhat, tt.wantErr)
			}
		})
	}
}

func TestHasSignatureFailsClosedWhenTheDeviceCannotBeRead(t *testing.T) {
	fakeBlkid(t, func(string, []string) ([]byte, error) {
		return nil, &command.ExitError{Name: "blkid", Code: 2}
	})
	// A directory opens but every read fails, like a device that has lost
	// its transport.
	for _, path := range []string{t.TempDir(), "/nonexistent/device"} {
		found, _, err := HasSignature(t.Context(), path)
		if err == nil || found {
			t.Fatalf("HasSignature(%s) = %v, %v; want an error", path, found, err)
		}
	}
}

func fakeBlkid(t *testing.T, fake func(name string, args []string) ([]byte, error)) {
	t.Helper()
	t.Cleanup(func() { runTool = command.Run })
	runTool = func(_ context.Context, _ time.Duration, name string, args ...string) ([]byte, []byte, error) {
		out, err := fake(name, args)
		return out, nil, err
	}
}

func TestRecogniseNamesKnownSignatures(t *testing.T) {
	tests := []struct {
		name   string
		offset int
		magic  string
		want   string
	}{
		{"an ext4 superblock magic", 0x438, "\x53\xef", "ext2/3/4"},
		{"an xfs superblock", 0, "XFSB", "xfs"},
		{"a LUKS header", 0, "LUKS\xba\xbe", "crypto_LUKS"},
		{"a swap area", 4086, "SWAPSPACE2", "swap"},
		{"an MBR boot signature", 510, "\x55\xaa", "dos partition table or boot sector"},
		{"a GPT header", 512, "EFI PART", "gpt partition table"},
		{"an LVM label", 512, "LABELONE", "LVM2_member"},
		{"a btrfs superblock", 0x10040, "_BHRfS_M", "btrfs"},
		{"an unknown byte", 77, "\x01", "data in the first MiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			head := make([]byte, headSize)
			copy(head[tt.offset:], tt.magic)
			if got := recognise(head); got != tt.want {
				t.Fatalf("recognise = %q, want %q", got, tt.want)
			}
		})
	}
}
