//go:build e2eguest

package guest

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"k8s.io/klog/v2"
)

func TestMain(m *testing.M) {
	// These tests create nvmet subsystems, connect and delete NVMe
	// controllers and mount filesystems: on a developer's machine they
	// would meddle with its real devices. /init of the test bed sets this.
	if os.Getenv("RDS_CSI_E2E_GUEST") != "1" {
		fmt.Fprintln(os.Stderr, "refusing to run: these tests run only inside the VM test bed (go test ./test/e2e/)")
		os.Exit(2)
	}
	for _, p := range []string{"/dev/nvme-fabrics", "/sys/kernel/config/nvmet/subsystems", "/sys/module/nvmet_tcp"} {
		if _, err := os.Stat(p); err != nil {
			fmt.Fprintf(os.Stderr, "the guest is not ready: %v (did a modprobe in /init fail?)\n", err)
			os.Exit(2)
		}
	}
	// The agent's V(2) lines (attach, format, mount) are what explains a
	// failure; they go to stderr, into the test's output on the console.
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	_ = fs.Set("v", "2")
	os.Exit(m.Run())
}
