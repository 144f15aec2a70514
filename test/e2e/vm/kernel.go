package vm

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Kernel is a Debian kernel package extracted into the cache: vmlinuz and
// the module directories the test bed loads, with a modules.dep.
type Kernel struct {
	Flavor  string // "6.1" or "6.12"
	Package string // linux-image-6.1.0-56-amd64
	Release string // uname -r: 6.1.0-56-amd64
	Root    string // holds boot/ and lib/modules/<Release>/
}

// Vmlinuz is the kernel image.
func (k *Kernel) Vmlinuz() string { return filepath.Join(k.Root, "boot", "vmlinuz-"+k.Release) }

// ModulesDir is lib/modules/<Release> of the extracted tree.
func (k *Kernel) ModulesDir() string { return filepath.Join(k.Root, "lib", "modules", k.Release) }

// CacheDir is where kernels are kept between runs.
func CacheDir() string {
	if d := os.Getenv("RDS_CSI_E2E_CACHE"); d != "" {
		return d
	}
	return "/var/cache/rds-csi-e2e"
}

// ResolvePackage names the kernel package of a flavor as the archive has it
// today. Names roll with every security update (…-56 becomes …-57 and the
// old .deb disappears), so they are looked up at run time, never pinned.
func ResolvePackage(ctx context.Context, flavor string) (string, error) {
	pkg, err := resolvePackage(ctx, flavor)
	if err == nil {
		return pkg, nil
	}
	// A fresh machine has empty package lists.
	if _, uerr := run(ctx, "apt-get", "update", "-qq"); uerr != nil {
		return "", errors.Join(err, uerr)
	}
	return resolvePackage(ctx, flavor)
}

var deb12Kernel612 = regexp.MustCompile(`^linux-image-(6\.12\.[0-9.]+)\+deb12-amd64$`)

func resolvePackage(ctx context.Context, flavor string) (string, error) {
	switch flavor {
	case "6.1":
		out, err := run(ctx, "apt-cache", "depends", "linux-image-amd64")
		if err != nil {
			return "", err
		}
		for line := range strings.Lines(out) {
			if dep, ok := strings.CutPrefix(strings.TrimSpace(line), "Depends: "); ok && strings.HasPrefix(dep, "linux-image-") {
				return dep, nil
			}
		}
		return "", fmt.Errorf("apt-cache depends linux-image-amd64 names no linux-image package:\n%s", out)
	case "6.12":
		out, err := run(ctx, "apt-cache", "search", "--names-only", `^linux-image-6\.12\.[0-9.]+\+deb12-amd64$`)
		if err != nil {
			return "", err
		}
		var best string
		var bestVer []int
		for line := range strings.Lines(out) {
			name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
			m := deb12Kernel612.FindStringSubmatch(name)
			if m == nil {
				continue
			}
			if v := versionParts(m[1]); best == "" || slices.Compare(v, bestVer) > 0 {
				best, bestVer = name, v
			}
		}
		if best == "" {
			return "", errors.New("no linux-image-6.12.*+deb12-amd64 package in the apt lists (is bookworm-security configured?)")
		}
		return best, nil
	}
	return "", fmt.Errorf("unknown kernel flavor %q (want 6.1 or 6.12)", flavor)
}

func versionParts(v string) []int {
	var out []int
	for p := range strings.SplitSeq(v, ".") {
		n, _ := strconv.Atoi(p)
		out = append(out, n)
	}
	return out
}

// slimModules are the module directories (below lib/modules/<release>/)
// whose modules the guest loads, with everything they depend on: 15–25 MB
// instead of the package's 400 MB.
var slimModules = []string{
	"kernel/drivers/nvme/",
	"kernel/drivers/block/loop.ko",
	"kernel/drivers/md/",
	"kernel/drivers/scsi/scsi_mod.ko", // dm-multipath needs it
	"kernel/drivers/scsi/scsi_common.ko",
	"kernel/fs/configfs/",
	"kernel/fs/ext4/",
	"kernel/fs/jbd2/",
	"kernel/fs/mbcache.ko",
	"kernel/fs/xfs/",
	"kernel/lib/",
	"kernel/crypto/",
	"kernel/arch/x86/crypto/",
	"kernel/block/",
	"modules.order",
	"modules.builtin",
}

// FetchKernel returns the flavor's kernel, downloading and extracting it into
// the cache unless a previous run did.
func FetchKernel(ctx context.Context, flavor string, logf func(string, ...any)) (*Kernel, error) {
	pkg, err := ResolvePackage(ctx, flavor)
	if err != nil {
		return nil, err
	}
	k := &Kernel{Flavor: flavor, Package: pkg, Root: filepath.Join(CacheDir(), pkg)}
	// Named for the slimModules it holds: a cache made for an older list
	// lacks modules, so it is extracted again.
	done := filepath.Join(k.Root, ".complete-scsi")
	if b, err := os.ReadFile(done); err == nil {
		k.Release = strings.TrimSpace(string(b))
		logf("kernel %s: %s (release %s), cached in %s", flavor, pkg, k.Release, k.Root)
		return k, nil
	}
	dl := filepath.Join(CacheDir(), "download")
	if err := os.MkdirAll(dl, 0o755); err != nil {
		return nil, err
	}
	// apt-get download writes into the working directory and is run as
	// root, so it runs unsandboxed (the _apt user cannot write here).
	cmd := exec.CommandContext(ctx, "apt-get", "download", "-qq", "-o", "APT::Sandbox::User=root", pkg)
	cmd.Dir = dl
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("apt-get download %s: %w\n%s", pkg, err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(dl, pkg+"_*.deb"))
	if len(debs) == 0 {
		return nil, fmt.Errorf("apt-get download %s left no .deb in %s", pkg, dl)
	}
	if err := os.RemoveAll(k.Root); err != nil {
		return nil, err
	}
	if k.Release, err = extractSlim(ctx, debs[0], k.Root); err != nil {
		return nil, fmt.Errorf("extracting %s: %w", debs[0], err)
	}
	// The .deb ships no modules.dep.
	if _, err := run(ctx, "depmod", "-b", k.Root, k.Release); err != nil {
		return nil, err
	}
	if err := os.WriteFile(done, []byte(k.Release+"\n"), 0o644); err != nil {
		return nil, err
	}
	for _, d := range debs {
		_ = os.Remove(d) // the extracted tree is the cache; the .deb is 70–110 MB
	}
	logf("kernel %s: %s (release %s), extracted into %s", flavor, pkg, k.Release, k.Root)
	return k, nil
}

// extractSlim unpacks vmlinuz and the slim module set of a kernel .deb into
// root and returns the kernel release. The data tarball is read in Go
// rather than with tar wildcards, because modules live under lib/ in some
// packages and under usr/lib/ in others, and tar fails on a pattern that
// matches nothing.
func extractSlim(ctx context.Context, deb, root string) (string, error) {
	cmd := exec.CommandContext(ctx, "dpkg-deb", "--fsys-tarfile", deb)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return "", err
	}
	release, err := extractTar(stdout, root)
	_, _ = io.Copy(io.Discard, stdout)
	if werr := cmd.Wait(); werr != nil && err == nil {
		err = fmt.Errorf("dpkg-deb: %w: %s", werr, stderr.String())
	}
	if err == nil && release == "" {
		err = errors.New("no boot/vmlinuz-* in the package")
	}
	return release, err
}

func extractTar(r io.Reader, root string) (string, error) {
	var release string
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return release, nil
		}
		if err != nil {
			return "", err
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "./"))
		name = strings.TrimPrefix(name, "usr/")
		dst, ok := "", false
		if v, found := strings.CutPrefix(name, "boot/vmlinuz-"); found {
			release, dst, ok = v, name, true
		} else if rest, found := strings.CutPrefix(name, "lib/modules/"); found {
			_, inside, _ := strings.Cut(rest, "/")
			for _, p := range slimModules {
				if strings.HasPrefix(inside, p) {
					dst, ok = name, true
					break
				}
			}
		}
		if !ok {
			continue
		}
		out := filepath.Join(root, filepath.FromSlash(dst))
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return "", err
		}
		f, err := os.OpenFile(out, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err != nil {
			return "", err
		}
		_, err = io.Copy(f, tr)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return "", err
		}
	}
}
