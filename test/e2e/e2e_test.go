// Package e2e boots the guest tests of test/e2e/guest under qemu, on real
// Debian kernels, and reports each guest test as a subtest of its boot.
// docs/testing.md explains the environment variables and how to read a
// failure.
package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/rds-csi/rds-csi/test/e2e/vm"
)

// cell is one boot of the matrix.
type cell struct {
	flavor    string
	multipath bool
}

func (c cell) String() string {
	mp := "N"
	if c.multipath {
		mp = "Y"
	}
	return "kernel-" + c.flavor + "/multipath-" + mp
}

// defaultMatrix: both kernels with native multipath (the Debian default),
// and multipath off once, where namespaces live elsewhere in sysfs.
var defaultMatrix = []cell{{"6.1", true}, {"6.12", true}, {"6.12", false}}

// matrix reads RDS_CSI_E2E_MATRIX ("6.1:Y,6.12:N"), or the default.
func matrix() ([]cell, error) {
	env := strings.TrimSpace(os.Getenv("RDS_CSI_E2E_MATRIX"))
	if env == "" {
		return defaultMatrix, nil
	}
	var out []cell
	for item := range strings.SplitSeq(env, ",") {
		flavor, mp, ok := strings.Cut(strings.TrimSpace(item), ":")
		if !ok || (mp != "Y" && mp != "N") || (flavor != "6.1" && flavor != "6.12") {
			return nil, fmt.Errorf("RDS_CSI_E2E_MATRIX item %q: want <6.1|6.12>:<Y|N>", item)
		}
		out = append(out, cell{flavor, mp == "Y"})
	}
	return out, nil
}

// guestFaultAgent is where the guest finds the fault-injecting agent.
const guestFaultAgent = "/rds-csi-agent-fault"

const (
	// bootTimeout ends a guest that hangs; guestTimeout (the guest
	// binary's -test.timeout) is shorter, so that a hung guest test panics
	// with every goroutine's stack rather than vanishing. A boot runs
	// every scenario, the crash matrix included: about 5–6 min under TCG.
	bootTimeout  = 16 * time.Minute
	guestTimeout = 14 * time.Minute
)

func TestE2E(t *testing.T) {
	if os.Getenv("RDS_CSI_E2E") == "skip" {
		t.Skip("SKIP: the VM end-to-end tests are switched off by RDS_CSI_E2E=skip")
	}
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Fatalf("the VM test bed needs linux/amd64 (Debian amd64 kernels under qemu), not %s/%s; RDS_CSI_E2E=skip turns it off", runtime.GOOS, runtime.GOARCH)
	}
	cells, err := matrix()
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	start := time.Now()
	if err := vm.EnsureTools(ctx, t.Logf); err != nil {
		t.Fatalf("preparing the host: %v", err)
	}
	t.Logf("TIMING tools ready after %v", time.Since(start).Round(time.Millisecond))

	logDir := os.Getenv("RDS_CSI_E2E_LOGDIR")
	if logDir == "" {
		logDir = t.TempDir()
	} else if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	binDir := t.TempDir()
	bin := filepath.Join(binDir, "guest.test")
	// The crash tests (crash_test.go in the guest) run the real agent,
	// built with the faultinject tag so that RDS_CSI_FAULT kills it at a
	// named point. Both builds run at once: they share the build cache.
	faultAgent := filepath.Join(binDir, "rds-csi-agent-fault")
	buildStart := time.Now()
	agentBuilt := make(chan error, 1)
	go func() { agentBuilt <- vm.BuildStatic(ctx, faultAgent, "./cmd/rds-csi-agent", false, "faultinject") }()
	err = vm.BuildStatic(ctx, bin, "./test/e2e/guest", true)
	if aerr := <-agentBuilt; aerr != nil {
		t.Fatal(aerr)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("TIMING guest test binary and fault-injecting agent built in %v", time.Since(buildStart).Round(time.Millisecond))
	files := map[string]string{guestFaultAgent: faultAgent}

	args := []string{"-test.timeout=" + guestTimeout.String(), "-rds.crash.agent=" + guestFaultAgent}
	if run := os.Getenv("RDS_CSI_E2E_RUN"); run != "" {
		args = append(args, "-test.run="+run)
	}
	kernels := map[string]*vm.Kernel{}
	for _, c := range cells {
		t.Run(c.String(), func(t *testing.T) {
			k := kernels[c.flavor]
			if k == nil {
				fetchStart := time.Now()
				var err error
				if k, err = vm.FetchKernel(ctx, c.flavor, t.Logf); err != nil {
					t.Fatalf("kernel %s: %v", c.flavor, err)
				}
				kernels[c.flavor] = k
				t.Logf("TIMING kernel %s ready in %v", k.Package, time.Since(fetchStart).Round(time.Millisecond))
			}
			bootOne(ctx, t, c, k, bin, args, files, logDir)
		})
	}
	t.Logf("TIMING whole matrix: %v", time.Since(start).Round(time.Second))
}

func bootOne(ctx context.Context, t *testing.T, c cell, k *vm.Kernel, bin string, args []string, files map[string]string, logDir string) {
	name := strings.ReplaceAll(c.String(), "/", "-")
	initrd := filepath.Join(t.TempDir(), "initrd.gz")
	ir := vm.Initramfs{Kernel: k, TestBinary: bin, TestArgs: args, Files: files, Work: t.TempDir()}
	irStart := time.Now()
	if err := ir.Build(ctx, initrd); err != nil {
		t.Fatalf("initramfs: %v", err)
	}
	t.Logf("TIMING initramfs built in %v", time.Since(irStart).Round(time.Millisecond))

	logPath := filepath.Join(logDir, name+".serial.log")
	t.Logf("serial console of %s (%s, %s): %s", c, k.Package, k.Release, logPath)
	boot := vm.Boot{Kernel: k, Initrd: initrd, Multipath: c.multipath, Log: logPath, Timeout: bootTimeout,
		Progress: func(line string) {
			// Only the milestones: the full console is in the log, and a
			// failing test's share of it is printed below.
			if strings.HasPrefix(line, "=== RUN") || strings.HasPrefix(line, "--- ") ||
				strings.Contains(line, "RDS-CSI-") || strings.Contains(line, "Kernel panic") {
				t.Log("guest| " + line)
			}
		}}
	bootStart := time.Now()
	console, err := boot.Run(ctx)
	t.Logf("TIMING boot to power-off %v", time.Since(bootStart).Round(time.Millisecond))
	res := vm.ParseConsole(console)
	// Under TCG the guest kernel rarely oopses while it boots (seen once:
	// an int3 in sched_clock_cpu during code patching, before any of our
	// code ran). That says nothing about the driver, so such a boot is
	// tried once more, visibly. A crash after a guest test started is
	// never retried.
	if len(res.Tests) == 0 && res.ExitCode < 0 && strings.Contains(console, "Kernel panic") {
		t.Logf("RETRYING %s: the guest kernel panicked while booting, before any test ran (emulation flake; console kept at %s)", c, logPath)
		if err := os.Rename(logPath, logPath+".panic"); err != nil {
			t.Fatal(err)
		}
		bootStart = time.Now()
		console, err = boot.Run(ctx)
		t.Logf("TIMING boot to power-off %v (second boot)", time.Since(bootStart).Round(time.Millisecond))
		res = vm.ParseConsole(console)
	}
	if res.Kernel != "" {
		t.Logf("guest kernel: %s", res.Kernel)
	}
	for _, gt := range res.Tests {
		t.Run(gt.Name, func(t *testing.T) {
			t.Logf("guest verdict %s %s", gt.Status, gt.Elapsed)
			switch gt.Status {
			case "PASS":
			case "SKIP":
				t.Skipf("SKIP in the guest:\n%s", strings.Join(gt.Output, "\n"))
			case "FAIL":
				t.Errorf("FAIL in the guest (%s):\n%s", c, strings.Join(gt.Output, "\n"))
			default:
				t.Errorf("no verdict: the guest binary died during this test (panic, -test.timeout or kernel crash); its output:\n%s", strings.Join(gt.Output, "\n"))
			}
		})
	}
	switch {
	case err != nil:
		t.Errorf("%v; the console ends with:\n%s", err, res.Tail(80))
	case res.ExitCode < 0:
		t.Errorf("the guest never printed %s (no verdict); the console ends with:\n%s", vm.EndMarker, res.Tail(80))
	case res.ExitCode != 0 && !t.Failed():
		t.Errorf("the guest test binary exited %d; the console ends with:\n%s", res.ExitCode, res.Tail(80))
	case len(res.Tests) == 0:
		t.Errorf("the guest ran no tests (RDS_CSI_E2E_RUN=%q matched none?)", os.Getenv("RDS_CSI_E2E_RUN"))
	}
}
