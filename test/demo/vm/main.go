// Command vm is the second half of `make demo`: it boots the VM test bed
// (docs/testing.md) with test/demo/vmguest as the guest program and streams
// the guest's narration as it happens. A machine that cannot run the VM
// (not root, no apt, no network to the Debian archive) gets a clear note and
// exit status 0, because the demo is for people; `make e2e` is where a
// missing VM fails.
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/rds-csi/rds-csi/test/e2e/vm"
)

const (
	flavor = "6.1"
	// bootTimeout ends a hung guest; a good run takes 40–90 s.
	bootTimeout = 10 * time.Minute
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx)
	stop()
	os.Exit(code)
}

func run(ctx context.Context) int {
	fmt.Println("\n==> Part two: the whole driver inside a VM, on a real Debian kernel")
	if reason := cannotRun(); reason != "" {
		skip(reason)
		return 0
	}
	work, err := os.MkdirTemp("", "rds-csi-demo-vm-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	keep := false
	defer func() {
		if !keep {
			_ = os.RemoveAll(work)
		}
	}()
	logf := func(format string, args ...any) { fmt.Printf("  "+format+"\n", args...) }

	if err := vm.EnsureTools(ctx, logf); err != nil {
		skip("the host tools could not be installed: " + err.Error())
		return 0
	}
	k, err := vm.FetchKernel(ctx, flavor, logf)
	if err != nil {
		skip("the Debian kernel could not be fetched: " + err.Error())
		return 0
	}
	guest := filepath.Join(work, "demo-guest")
	if err := vm.BuildStatic(ctx, guest, "./test/demo/vmguest", false); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		return 1
	}
	initrd := filepath.Join(work, "initrd.gz")
	ir := vm.Initramfs{Kernel: k, TestBinary: guest, Plain: true, Work: work}
	if err := ir.Build(ctx, initrd); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed: initramfs:", err)
		return 1
	}

	logPath := filepath.Join(work, "serial.log")
	fmt.Printf("  booting %s under qemu (emulated CPU: this takes a minute or so)\n\n", k.Package)
	var s streamer
	boot := vm.Boot{Kernel: k, Initrd: initrd, Multipath: true, Log: logPath, Timeout: bootTimeout, Progress: s.line}
	console, err := boot.Run(ctx)
	res := vm.ParseConsole(console)
	switch {
	case err != nil:
		fmt.Fprintf(os.Stderr, "\ndemo failed: %v; the console ends with:\n%s\n", err, res.Tail(40))
	case res.ExitCode < 0:
		fmt.Fprintf(os.Stderr, "\ndemo failed: the guest never finished (no %s); the console ends with:\n%s\n", vm.EndMarker, res.Tail(40))
	case res.ExitCode != 0:
		fmt.Fprintf(os.Stderr, "\ndemo failed: the guest program exited %d\n", res.ExitCode)
	default:
		return 0
	}
	keep = true
	fmt.Fprintln(os.Stderr, "the whole serial console is in", logPath)
	return 1
}

// cannotRun names what keeps this machine from booting the VM, or "".
func cannotRun() string {
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		return fmt.Sprintf("the VM needs linux/amd64, this is %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	if os.Geteuid() != 0 {
		return "it needs root (to install qemu and unpack a kernel with apt)"
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return "it needs apt-get (a Debian host) to fetch qemu and the kernel"
	}
	return ""
}

func skip(reason string) {
	fmt.Printf("  VM demo skipped: %s.\n  The controller-only part above ran; run `make demo` as root on Debian to see the node side.\n", reason)
}

// printk matches a kernel message's timestamp; the guest keeps them off the
// console once it runs, but the boot prints a few before.
var printk = regexp.MustCompile(`\[ *[0-9]+\.[0-9]{6}\]`)

// streamer passes the guest's narration through as it arrives and drops the
// firmware's and the kernel's console output around it.
type streamer struct{ started bool }

func (s *streamer) line(l string) {
	if i := strings.Index(l, vm.KernelMarker); i >= 0 {
		s.started = true
		fmt.Println("guest kernel " + l[i+len(vm.KernelMarker):])
		return
	}
	switch {
	case !s.started, printk.MatchString(l), strings.HasPrefix(l, vm.EndMarker):
	default:
		fmt.Println(l)
	}
}
