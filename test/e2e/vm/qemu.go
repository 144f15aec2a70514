package vm

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Boot is one qemu run.
type Boot struct {
	Kernel *Kernel
	Initrd string
	// Multipath is nvme_core.multipath: native NVMe multipath on (the
	// Debian default) or off, which changes where namespaces appear in
	// sysfs and how they are named.
	Multipath bool
	// Log receives the serial console, as it arrives.
	Log string
	// Timeout ends qemu, hung or not.
	Timeout time.Duration
	// Progress, when set, sees each console line as it arrives.
	Progress func(line string)
}

// Run boots the guest and returns everything it printed on the serial
// console. An error means qemu failed or timed out; the output is returned
// in every case so that the caller can show what the guest got to.
func (b *Boot) Run(ctx context.Context) (string, error) {
	mp := "N"
	if b.Multipath {
		mp = "Y"
	}
	// KVM is unusable on these machines (KVM_PVM runs only enlightened
	// guests), so the CPU is emulated: TCG with every feature qemu has.
	args := []string{
		"-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "1024",
		"-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
		"-kernel", b.Kernel.Vmlinuz(), "-initrd", b.Initrd,
		"-append", "console=ttyS0 panic=-1 quiet loglevel=4 nvme_core.multipath=" + mp,
	}
	ctx, cancel := context.WithTimeout(ctx, b.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	// A closed stdin makes "-serial stdio" fail; exec gives /dev/null.
	cmd.Stdin = nil
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	logf, err := os.Create(b.Log)
	if err != nil {
		return "", err
	}
	defer func() { _ = logf.Close() }()
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("starting qemu: %w", err)
	}
	var out strings.Builder
	done := make(chan struct{})
	go func() {
		defer close(done)
		r := bufio.NewReader(pr)
		for {
			line, err := r.ReadString('\n')
			if line != "" {
				line = strings.ReplaceAll(line, "\r", "")
				out.WriteString(line)
				_, _ = logf.WriteString(line)
				if b.Progress != nil {
					b.Progress(strings.TrimRight(line, "\n"))
				}
			}
			if err != nil {
				return
			}
		}
	}()
	werr := cmd.Wait()
	_ = pw.Close()
	<-done
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return out.String(), fmt.Errorf("qemu did not finish within %v", b.Timeout)
	}
	if werr != nil {
		return out.String(), fmt.Errorf("qemu: %w", werr)
	}
	return out.String(), nil
}
