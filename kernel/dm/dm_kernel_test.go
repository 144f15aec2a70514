package dm

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rds-csi/rds-csi/kernel/loop"
)

// The tests below use the host's device-mapper and loop devices; the
// multipath behaviour itself is exercised by the guest test TestDM.

func requireDM(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("device-mapper needs root; run the kernel tests as root")
	}
	if _, err := os.Stat(sys.control); err != nil {
		t.Skipf("no device-mapper on this machine (%v); the VM tests cover it", err)
	}
}

func loopDevice(t *testing.T, size int64) (string, uint32, uint32) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "backing.img")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	dev, err := loop.Attach(t.Context(), file)
	if err != nil {
		t.Skipf("no loop device: %v", err)
	}
	t.Cleanup(func() { _ = loop.Detach(context.Background(), dev) })
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		t.Fatal(err)
	}
	return dev, unix.Major(st.Rdev), unix.Minor(st.Rdev)
}

func TestALinearDeviceOverLoopDevicesIsCreatedRepointedAndRemoved(t *testing.T) {
	requireDM(t)
	const size = 4 << 20
	devA, majA, minA := loopDevice(t, size)
	devB, majB, minB := loopDevice(t, size)
	for dev, mark := range map[string]string{devA: "device A", devB: "device B"} {
		f, err := os.OpenFile(dev, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.WriteAt([]byte(mark), 0)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	name := fmt.Sprintf("rds-csi-test-%d", os.Getpid())
	linear := func(maj, mnr uint32) []Target {
		return []Target{{Length: size / 512, Type: "linear", Params: fmt.Sprintf("%d:%d 0", maj, mnr)}}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	d, err := Create(ctx, name, linear(majA, minA))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Remove(context.Background(), name) })
	readMark := func() string {
		f, err := os.Open(d.Path())
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = f.Close() }()
		_ = unix.IoctlSetInt(int(f.Fd()), unix.BLKFLSBUF, 0)
		b := make([]byte, 8)
		if _, err := f.ReadAt(b, 0); err != nil {
			t.Fatal(err)
		}
		return string(bytes.TrimRight(b, "\x00"))
	}
	if got := readMark(); got != "device A" {
		t.Errorf("read %q through %s, want device A", got, d.Path())
	}
	if err := Reload(ctx, name, linear(majB, minB)); err != nil {
		t.Fatal(err)
	}
	if got := readMark(); got != "device B" {
		t.Errorf("after reload read %q, want device B", got)
	}
	table, err := Table(ctx, name)
	if err != nil || len(table) != 1 || table[0].Type != "linear" || !strings.HasPrefix(table[0].Params, fmt.Sprintf("%d:%d ", majB, minB)) {
		t.Errorf("table %+v, %v", table, err)
	}
	if lines, err := Status(ctx, name); err != nil || len(lines) != 1 || !strings.HasPrefix(lines[0], fmt.Sprintf("0 %d linear", size/512)) {
		t.Errorf("status %q, %v", lines, err)
	}
	if got, ok, err := Lookup(name); err != nil || !ok || got != d {
		t.Errorf("Lookup %+v %v %v, want %+v", got, ok, err, d)
	}
	if err := Remove(ctx, name); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := Lookup(name); ok || err != nil {
		t.Errorf("still there after Remove: %v %v", ok, err)
	}
	if _, err := os.Lstat(d.Path()); !os.IsNotExist(err) {
		t.Errorf("node left behind: %v", err)
	}
}
