package loop

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

func requireLoop(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loop devices need root; run the kernel tests as root")
	}
	if _, err := os.Stat(controlPath); err != nil {
		t.Skipf("no %s on this machine: %v", controlPath, err)
	}
}

func sparseFile(t *testing.T, size int64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "backing.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return path
}

func attach(t *testing.T, file string) string {
	t.Helper()
	dev, err := Attach(t.Context(), file)
	if err != nil {
		t.Fatalf("attach: %v", err)
	}
	t.Cleanup(func() {
		if err := Detach(context.Background(), dev); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return dev
}

func TestAttachGivesABlockDeviceThatFindSeesAndDetachReleases(t *testing.T) {
	requireLoop(t)
	file := sparseFile(t, 8<<20)
	dev, err := Attach(t.Context(), file)
	if err != nil {
		t.Fatalf("attach: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
		t.Fatalf("%s is not a block device: %v", dev, err)
	}
	found, err := Find(file)
	if err != nil || len(found) != 1 || found[0] != dev {
		t.Fatalf("Find = %v, %v; want [%s]", found, err, dev)
	}
	if err := Detach(t.Context(), dev); err != nil {
		t.Fatalf("detach: %v", err)
	}
	if found, err := Find(file); err != nil || len(found) != 0 {
		t.Fatalf("after detach Find = %v, %v; want none", found, err)
	}
	if err := Detach(t.Context(), dev); err != nil {
		t.Fatalf("detaching a detached device: %v, want nil", err)
	}
}

func TestFindMatchesTheFileNotThePath(t *testing.T) {
	requireLoop(t)
	file := sparseFile(t, 1<<20)
	dev := attach(t, file)
	link := filepath.Join(t.TempDir(), "other-name")
	if err := os.Symlink(file, link); err != nil {
		t.Fatal(err)
	}
	if found, err := Find(link); err != nil || len(found) != 1 || found[0] != dev {
		t.Fatalf("Find through a symlink = %v, %v; want [%s]", found, err, dev)
	}
	unrelated := sparseFile(t, 1<<20)
	if found, err := Find(unrelated); err != nil || len(found) != 0 {
		t.Fatalf("Find of an unattached file = %v, %v; want none", found, err)
	}
}

func TestConcurrentAttachesGetDistinctDevices(t *testing.T) {
	requireLoop(t)
	const n = 8
	devs := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		file := sparseFile(t, 1<<20)
		wg.Go(func() { devs[i], errs[i] = Attach(t.Context(), file) })
	}
	wg.Wait()
	seen := map[string]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Errorf("attach %d: %v", i, errs[i])
			continue
		}
		t.Cleanup(func() { _ = Detach(context.Background(), devs[i]) })
		if seen[devs[i]] {
			t.Errorf("%s handed out twice", devs[i])
		}
		seen[devs[i]] = true
	}
}

func TestDetachOfAnOpenDeviceSaysItWasDeferred(t *testing.T) {
	requireLoop(t)
	dev, err := Attach(t.Context(), sparseFile(t, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	holder, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	if err := Detach(t.Context(), dev); !errors.Is(err, ErrDetachDeferred) {
		_ = holder.Close()
		t.Fatalf("detach while open: %v, want ErrDetachDeferred", err)
	}
	_ = holder.Close() // the last close performs the detach
	if bound(filepath.Base(dev)) {
		t.Fatalf("%s still bound after its last close", dev)
	}
}

func TestAttachRefusesWhatIsNotARegularFile(t *testing.T) {
	requireLoop(t)
	if _, err := Attach(t.Context(), t.TempDir()); err == nil {
		t.Fatal("attaching a directory succeeded")
	}
}

func TestDetachRefusesPathsThatAreNotLoopDevices(t *testing.T) {
	for _, dev := range []string{"/dev/vda", "/dev/loopx", "/tmp/loop0"} {
		t.Run(dev, func(t *testing.T) {
			if err := Detach(t.Context(), dev); err == nil {
				t.Fatalf("Detach(%s) succeeded", dev)
			}
		})
	}
}
