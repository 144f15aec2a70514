package vm

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// hostPackages are the Debian packages the host side needs, each with a
// file that proves it is installed. The file, not dpkg's database, is
// checked: what matters is that the program is there.
var hostPackages = []struct{ pkg, file string }{
	{"qemu-system-x86", "/usr/bin/qemu-system-x86_64"},
	{"busybox-static", "/bin/busybox"},
	{"kmod", "/sbin/modprobe"},
	{"kmod", "/sbin/depmod"},
	{"e2fsprogs", "/sbin/mke2fs"},
	{"e2fsprogs", "/sbin/resize2fs"},
	{"xfsprogs", "/sbin/mkfs.xfs"},
	{"xfsprogs", "/usr/sbin/xfs_growfs"},
	{"util-linux", "/sbin/blkid"},
	{"xz-utils", "/usr/bin/xz"},
	{"zstd", "/usr/bin/zstd"},
	{"dpkg", "/usr/bin/dpkg-deb"},
	{"apt", "/usr/bin/apt-get"},
}

// EnsureTools installs, with apt-get, whatever the host lacks. CI machines
// start fresh, so a missing tool is installed rather than reported; only
// when that fails is it an error.
func EnsureTools(ctx context.Context, logf func(string, ...any)) error {
	var missing []string
	seen := map[string]bool{}
	for _, p := range hostPackages {
		if _, err := os.Stat(p.file); err == nil || seen[p.pkg] {
			continue
		}
		seen[p.pkg] = true
		missing = append(missing, p.pkg)
	}
	if len(missing) == 0 {
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("missing packages %s, and installing them needs root (or set RDS_CSI_E2E=skip)", strings.Join(missing, " "))
	}
	logf("installing %s", strings.Join(missing, " "))
	if _, err := run(ctx, "apt-get", "update", "-qq"); err != nil {
		return err
	}
	args := append([]string{"install", "-y", "-qq", "--no-install-recommends"}, missing...)
	if _, err := run(ctx, "apt-get", args...); err != nil {
		return err
	}
	for _, p := range hostPackages {
		if _, err := os.Stat(p.file); err != nil {
			return fmt.Errorf("%s still missing after installing %s: %w", p.file, p.pkg, err)
		}
	}
	return nil
}

// run runs a command non-interactively and returns its stdout; the error
// carries stderr, which is where apt and depmod say what went wrong.
func run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	cmd.Stdin = nil
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, tail(stderr.String(), 40))
	}
	return stdout.String(), nil
}

// tail keeps the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
