package blockdev

import (
	"os/exec"
	"testing"
	"time"

	"github.com/rds-csi/rds-csi/kernel/command"
)

func TestFilesystemSizeReadsTheSuperblock(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		mkfs string
		args []string
	}{
		{"mkfs.ext4", []string{"-q", "-F"}},
		{"mkfs.xfs", []string{"-q", "-f"}},
	} {
		t.Run(tc.mkfs, func(t *testing.T) {
			if _, err := exec.LookPath(tc.mkfs); err != nil {
				t.Skipf("%s is not installed", tc.mkfs)
			}
			dev, _ := loopDevice(t, 512*mib, nil)
			if _, _, err := command.Run(t.Context(), time.Minute, tc.mkfs, append(tc.args, dev)...); err != nil {
				t.Fatal(err)
			}
			size, err := FilesystemSize(t.Context(), dev)
			if err != nil {
				t.Fatal(err)
			}
			// The filesystem covers the device, give or take its last
			// partial allocation unit.
			if size > 512*mib || size < 500*mib {
				t.Fatalf("%s on 512 MiB reads as %d bytes", tc.mkfs, size)
			}
		})
	}
}

func TestFilesystemSizeRefusesWhatIsNoFilesystem(t *testing.T) {
	dev, _ := loopDevice(t, 8<<20, []byte("not a superblock"))
	if size, err := FilesystemSize(t.Context(), dev); err == nil {
		t.Fatalf("read %d bytes from a device with no filesystem", size)
	}
	if _, err := FilesystemSize(t.Context(), "/nonexistent"); err == nil {
		t.Fatal("no error for a missing device")
	}
}
