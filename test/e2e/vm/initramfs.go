package vm

import (
	"compress/gzip"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// GuestModules are loaded by /init, in this order. The closure the
// initramfs carries is computed from them (plus optionalModules).
// dm-multipath brings dm-mod and scsi_mod.
var GuestModules = []string{"configfs", "nvmet-tcp", "nvme-tcp", "loop", "crc32c_generic", "ext4", "xfs", "dm-multipath", "dm-service-time"}

// optionalModules are copied when the kernel has them: the accelerated
// crc32c is what ext4 asks for first, but it is not built on every kernel.
var optionalModules = []string{"crc32c-intel", "libcrc32c"}

// guestTools are the programs the agent executes (kernel/command), copied
// with their shared libraries. The guest's PATH finds them before busybox's
// applets of the same names, which behave differently.
var guestTools = []string{"mkfs.ext4", "mkfs.xfs", "resize2fs", "xfs_growfs", "blkid"}

// checkTools are programs the guest tests run themselves, copied the same
// way: the crash tests check with e2fsck that a filesystem made across a
// crash is clean.
var checkTools = []string{"e2fsck"}

// guestConfigFiles are data files the tools read.
var guestConfigFiles = []string{"/etc/mke2fs.conf"}

// EndMarker starts the line /init prints when the guest test binary exits,
// followed by its exit code.
const EndMarker = "RDS-CSI-GUEST-EXIT="

// KernelMarker starts the line that tells which kernel the guest booted.
const KernelMarker = "RDS-CSI-GUEST-KERNEL="

// Initramfs describes one boot's initramfs.
type Initramfs struct {
	Kernel *Kernel
	// TestBinary is the guest test binary, run as /e2e.test.
	TestBinary string
	// TestArgs are passed to it after -test.v.
	TestArgs []string
	// Plain marks TestBinary as an ordinary program (the demo): it gets
	// TestArgs alone, since it would reject -test.v. Its exit code is
	// reported after EndMarker all the same.
	Plain bool
	// Files are extra executables, by guest path ("/rds-csi-agent") to
	// host path: the benchmarks run the real agent binary in the guest.
	Files map[string]string
	// Work is a scratch directory for the staging tree.
	Work string
}

// Build writes the gzip-compressed initramfs to out.
func (i *Initramfs) Build(ctx context.Context, out string) error {
	root := filepath.Join(i.Work, "initramfs")
	if err := os.RemoveAll(root); err != nil {
		return err
	}
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "lib64", "etc", "dev", "proc", "sys", "tmp", "run", "mnt", "root", "var/tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	steps := []func(context.Context, string) error{i.addBusybox, i.addModules, i.addTools, i.addFiles}
	for _, step := range steps {
		if err := step(ctx, root); err != nil {
			return err
		}
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	// The fastest level: the archive is written for every boot, and the
	// kernel decompresses it at the same speed whatever the level.
	zw, _ := gzip.NewWriterLevel(f, gzip.BestSpeed)
	err = writeTree(newCPIOWriter(zw), root)
	if cerr := zw.Close(); err == nil {
		err = cerr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func (i *Initramfs) addBusybox(ctx context.Context, root string) error {
	if err := copyFile("/bin/busybox", filepath.Join(root, "bin/busybox"), 0o755); err != nil {
		return err
	}
	list, err := run(ctx, "/bin/busybox", "--list")
	if err != nil {
		return err
	}
	for applet := range strings.FieldsSeq(list) {
		if applet == "busybox" {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(root, "bin", applet)); err != nil {
			return err
		}
	}
	// The kernel runs /sbin/modprobe itself (request_module: ext4 asks for
	// crc32c that way), and busybox cannot load a module otherwise.
	for _, a := range []string{"modprobe", "insmod", "rmmod", "lsmod"} {
		if err := os.Symlink("../bin/busybox", filepath.Join(root, "sbin", a)); err != nil {
			return err
		}
	}
	return nil
}

// addModules copies the dependency closure of the guest's modules,
// decompressed (busybox insmod reads only plain .ko), and runs depmod on the
// copy so that modprobe in the guest resolves dependencies itself.
func (i *Initramfs) addModules(ctx context.Context, root string) error {
	k := i.Kernel
	files := map[string]bool{}
	closure := func(mod string) error {
		out, err := run(ctx, "modprobe", "-d", k.Root, "-S", k.Release, "--show-depends", mod)
		if err != nil {
			return err
		}
		for line := range strings.Lines(out) {
			f := strings.Fields(line)
			if len(f) >= 2 && f[0] == "insmod" {
				files[f[1]] = true
			}
		}
		return nil
	}
	for _, m := range GuestModules {
		if err := closure(m); err != nil {
			return fmt.Errorf("module %s of kernel %s: %w", m, k.Release, err)
		}
	}
	for _, m := range optionalModules {
		_ = closure(m)
	}
	for src := range files {
		rel, err := filepath.Rel(k.Root, src)
		if err != nil || strings.HasPrefix(rel, "..") {
			return fmt.Errorf("module %s is outside %s", src, k.Root)
		}
		dst := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		switch {
		case strings.HasSuffix(src, ".xz"):
			err = decompress(ctx, dst[:len(dst)-3], "xz", "-dc", src)
		case strings.HasSuffix(src, ".zst"):
			err = decompress(ctx, dst[:len(dst)-4], "zstd", "-qdc", src)
		default:
			err = copyFile(src, dst, 0o644)
		}
		if err != nil {
			return err
		}
	}
	for _, name := range []string{"modules.order", "modules.builtin", "modules.builtin.modinfo"} {
		src := filepath.Join(k.ModulesDir(), name)
		if _, err := os.Stat(src); err == nil {
			if err := copyFile(src, filepath.Join(root, "lib/modules", k.Release, name), 0o644); err != nil {
				return err
			}
		}
	}
	_, err := run(ctx, "depmod", "-b", root, k.Release)
	return err
}

func decompress(ctx context.Context, dst, prog string, args ...string) error {
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, prog, args...)
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = f, &stderr
	err = cmd.Run()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%s %v: %w: %s", prog, args, err, stderr.String())
	}
	return nil
}

// addTools copies each tool and every shared library ldd names, at the same
// paths, so the dynamic loader finds them as it would on the host.
func (i *Initramfs) addTools(ctx context.Context, root string) error {
	path := "/usr/sbin:/usr/bin:/sbin:/bin"
	for _, tool := range append(slices.Clone(guestTools), checkTools...) {
		src, err := lookPath(tool, path)
		if err != nil {
			return err
		}
		// Copied under the tool's name, not its link target: mke2fs picks
		// the filesystem type from the name it is called by.
		if err := copyFile(src, filepath.Join(root, "usr/sbin", tool), 0o755); err != nil {
			return err
		}
		out, err := run(ctx, "ldd", src)
		if err != nil {
			return err
		}
		for line := range strings.Lines(out) {
			lib := ""
			f := strings.Fields(line)
			switch {
			case len(f) >= 3 && f[1] == "=>":
				lib = f[2]
			case len(f) >= 1 && filepath.IsAbs(f[0]):
				lib = f[0]
			}
			if lib == "" {
				continue
			}
			dst := filepath.Join(root, lib)
			if _, err := os.Stat(dst); err == nil {
				continue
			}
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return err
			}
			if err := copyFile(lib, dst, 0o755); err != nil {
				return err
			}
		}
	}
	for _, f := range guestConfigFiles {
		if err := copyFile(f, filepath.Join(root, f), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func lookPath(name, path string) (string, error) {
	for dir := range strings.SplitSeq(path, ":") {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in %s", name, path)
}

func (i *Initramfs) addFiles(_ context.Context, root string) error {
	if err := os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, "etc/group"), []byte("root:x:0:\n"), 0o644); err != nil {
		return err
	}
	if err := copyFile(i.TestBinary, filepath.Join(root, "e2e.test"), 0o755); err != nil {
		return err
	}
	for guest, host := range i.Files {
		dst := filepath.Join(root, filepath.Clean("/"+guest))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := copyFile(host, dst, 0o755); err != nil {
			return fmt.Errorf("extra file %s: %w", guest, err)
		}
	}
	return os.WriteFile(filepath.Join(root, "init"), []byte(i.initScript()), 0o755)
}

// initScript is the guest's PID 1: mount the pseudo filesystems, load the
// modules, run the test binary and report its exit code on the console,
// then power off so that qemu exits.
func (i *Initramfs) initScript() string {
	var args []string
	if !i.Plain {
		args = append(args, "-test.v")
	}
	args = append(args, i.TestArgs...)
	quoted := make([]string, len(args))
	for n, a := range args {
		quoted[n] = shellQuote(a)
	}
	var b strings.Builder
	b.WriteString(`#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root RDS_CSI_E2E_GUEST=1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs tmpfs /run
`)
	fmt.Fprintf(&b, "for m in %s; do modprobe $m || echo \"RDS-CSI-GUEST-MODPROBE-FAILED=$m\"; done\n", strings.Join(GuestModules, " "))
	fmt.Fprintf(&b, `mount -t configfs configfs /sys/kernel/config
ip link set lo up
echo "%s$(uname -r) multipath=$(cat /sys/module/nvme_core/parameters/multipath 2>/dev/null) uptime=$(cut -d' ' -f1 /proc/uptime)s"
cd /tmp
/e2e.test %s 2>&1
rc=$?
echo "%s$rc"
sync
poweroff -f
`, KernelMarker, strings.Join(quoted, " "), EndMarker)
	return b.String()
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func copyFile(src, dst string, perm os.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, perm)
}
