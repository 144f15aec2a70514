package packaging

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/rds-csi/rds-csi/kernel/command"
)

func dockerfile(t *testing.T) *Dockerfile {
	t.Helper()
	d, err := ParseDockerfile(readFile(t, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestTheImageShipsExactlyTheToolsTheAgentRuns(t *testing.T) {
	if err := CheckTools(dockerfile(t), command.Allowed()); err != nil {
		t.Fatal(err)
	}
}

func TestTheToolCheckFailsWhenTheDockerfileDrifts(t *testing.T) {
	allowed := command.Allowed()
	for _, tc := range []struct {
		name, tools, packages string
	}{
		{"a tool missing", "blkid mkfs.ext4 mkfs.xfs resize2fs", "e2fsprogs util-linux xfsprogs"},
		{"a tool the code does not run", "blkid mkfs.ext4 mkfs.xfs resize2fs xfs_growfs nvme", "e2fsprogs util-linux xfsprogs"},
		{"a package nothing needs", "blkid mkfs.ext4 mkfs.xfs resize2fs xfs_growfs", "e2fsprogs util-linux xfsprogs nvme-cli"},
		{"a package missing", "blkid mkfs.ext4 mkfs.xfs resize2fs xfs_growfs", "e2fsprogs util-linux"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &Dockerfile{Args: map[string]string{"TOOLS": tc.tools, "TOOL_PACKAGES": tc.packages}}
			if err := CheckTools(d, allowed); err == nil {
				t.Fatal("CheckTools accepted a drifted Dockerfile")
			} else {
				t.Log(err)
			}
		})
	}
	if err := CheckTools(&Dockerfile{Args: map[string]string{"TOOLS": "a", "TOOL_PACKAGES": ""}}, []string{"a"}); err == nil {
		t.Fatal("CheckTools accepted a tool with no known package")
	}
}

func TestOnlyKernelCommandStartsProcessesAndEveryAllowedToolIsRun(t *testing.T) {
	r, err := ScanExec(shippedPackages(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("tools the shipped code runs: %q", r.Tools)
	if err := CheckExec(r, command.Allowed()); err != nil {
		t.Fatal(err)
	}
}

func TestTheExecScanFindsProcessesStartedOutsideKernelCommand(t *testing.T) {
	dir := t.TempDir()
	src := `package bad

import (
	"errors"
	"fmt"
	"sync"
	"context"
	"os"
	"os/exec"

	cmd "github.com/rds-csi/rds-csi/kernel/command"
)

var run = cmd.Run

func f(ctx context.Context, name string) {
	_ = exec.Command("nvme", "connect").Run()
	_, _ = os.StartProcess("/bin/true", nil, nil)
	_, _, _ = cmd.Run(ctx, 0, "mount", "/dev/x", "/mnt")
	_, _, _ = run(ctx, 0, name)
}
`
	if err := os.WriteFile(filepath.Join(dir, "bad.go"), []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := ScanExec([]Package{{ImportPath: "example/bad", Dir: dir, GoFiles: []string{"bad.go"}}})
	if err != nil {
		t.Fatal(err)
	}
	err = CheckExec(r, []string{"blkid"})
	if err == nil {
		t.Fatal("CheckExec found nothing wrong")
	}
	for _, want := range []string{"imports os/exec", "starts a process directly", `runs "mount"`, "not a constant", `lists "blkid", but no call runs it`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("report lacks %q:\n%v", want, err)
		}
	}
}

// The build stage runs the Makefile's build; running the same command here
// must produce every file the runtime stage copies from it, each static.
// Every other COPY source must exist in the tree.
func TestEveryFileTheDockerfileCopiesExistsAfterTheBuild(t *testing.T) {
	d := dockerfile(t)
	root := repoRoot(t)
	builtBinaries(t)
	var binaries int
	for _, c := range d.Copies {
		for _, src := range c.Sources {
			switch c.From {
			case "":
				if _, err := os.Stat(filepath.Join(root, src)); err != nil {
					t.Errorf("COPY %s: %v", src, err)
				}
			case "build":
				rel, ok := strings.CutPrefix(src, "/src/")
				if !ok {
					t.Errorf("COPY --from=build %s: not under the build stage's WORKDIR /src", src)
					continue
				}
				path := filepath.Join(root, rel)
				if err := CheckStatic(path); err != nil {
					t.Errorf("COPY --from=build %s: %v", src, err)
					continue
				}
				out, err := exec.Command(path, "--version").Output()
				if err != nil {
					t.Errorf("%s --version: %v", path, err)
				} else if !strings.Contains(string(out), "test-version (commit test-commit)") {
					t.Errorf("%s --version = %q: the build args are not stamped", path, out)
				}
				binaries++
			case "tools":
				// Made by the tools stage from Debian packages: checked by
				// TestTheImageShipsExactlyTheToolsTheAgentRuns.
			default:
				t.Errorf("COPY --from=%s: a stage this test does not know", c.From)
			}
		}
	}
	// The build stage sees only what it copies: every package the binaries
	// import must be under one of those directories.
	var copied []string
	for _, c := range d.Copies {
		if c.Stage == "build" && c.From == "" {
			copied = append(copied, c.Sources...)
		}
	}
	for _, p := range shippedPackages(t) {
		rel, err := filepath.Rel(root, p.Dir)
		if err != nil {
			t.Fatal(err)
		}
		top := strings.Split(rel, string(filepath.Separator))[0]
		if !slices.Contains(copied, top) {
			t.Errorf("package %s is not in the build stage's COPYs (%q): the image build would fail", p.ImportPath, copied)
		}
	}
	if binaries != 2 {
		t.Errorf("the runtime stage copies %d binaries from the build, want 2 (controller and agent)", binaries)
	}
}

func TestTheStaticCheckRejectsADynamicBinary(t *testing.T) {
	for _, p := range []string{"/bin/sh", "/usr/bin/env"} {
		if _, err := os.Stat(p); err != nil {
			continue
		}
		if err := CheckStatic(p); err == nil {
			t.Fatalf("CheckStatic accepted %s, which is dynamically linked on Debian", p)
		}
		return
	}
	t.Fatal("no dynamically linked binary found to test with")
}

var (
	buildOnce sync.Once
	buildErr  error
)

// builtBinaries runs the build stage's command (the Makefile's build, with
// VERSION=test-version and COMMIT=test-commit) once, and returns the
// directory of the binaries.
func builtBinaries(t *testing.T) string {
	t.Helper()
	root := repoRoot(t)
	buildOnce.Do(func() {
		var build string
		for _, run := range dockerfile(t).Runs["build"] {
			if strings.HasPrefix(run, "make build") {
				build = run
			}
		}
		if build == "" {
			buildErr = errors.New(`the Dockerfile's build stage has no "make build" RUN: the image would not be stamped like make build`)
			return
		}
		cmdline := strings.NewReplacer(`"${VERSION}"`, "test-version", `"${COMMIT}"`, "test-commit").Replace(build)
		cmd := exec.Command("bash", "-c", cmdline)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("%s: %w\n%s", cmdline, err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(root, "bin")
}

// The tools stage's script, run here on Debian with /rootfs in a temporary
// directory, makes a root in which each tool runs with nothing but what the
// script copied: mkfs.ext4 and mkfs.xfs format a file that blkid then
// recognises.
func TestTheToolsStageMakesARootWhereEveryToolRuns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (chroot); make test runs as root")
	}
	d := dockerfile(t)
	runs := d.Runs["tools"]
	if len(runs) == 0 {
		t.Fatal("no RUN in the tools stage")
	}
	for _, tool := range append(strings.Fields(d.Args["TOOLS"]), "ldd") {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed here (.ci/run installs e2fsprogs, xfsprogs, util-linux)", tool)
		}
	}
	root := filepath.Join(t.TempDir(), "rootfs")
	script := strings.ReplaceAll(runs[len(runs)-1], "/rootfs", root)
	cmd := exec.Command("sh", "-c", script)
	cmd.Env = append(os.Environ(), "TOOLS="+d.Args["TOOLS"])
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the tools stage's script: %v\n%s", err, out)
	}
	for _, fs := range []struct{ tool, size, want string }{
		{"mkfs.ext4", "64M", `TYPE="ext4"`},
		{"mkfs.xfs", "320M", `TYPE="xfs"`},
	} {
		img := filepath.Join(root, "tmp", "img")
		if err := os.WriteFile(img, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := exec.Command("truncate", "-s", fs.size, img).Run(); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("chroot", root, "/usr/sbin/"+fs.tool, "-q", "/tmp/img").CombinedOutput(); err != nil {
			t.Fatalf("%s in the tools root: %v\n%s", fs.tool, err, out)
		}
		out, err := exec.Command("chroot", root, "/usr/sbin/blkid", "-p", "/tmp/img").CombinedOutput()
		if err != nil || !strings.Contains(string(out), fs.want) {
			t.Fatalf("blkid -p in the tools root after %s: %v\n%s", fs.tool, err, out)
		}
	}
	for _, tool := range []string{"resize2fs", "xfs_growfs"} {
		err := exec.Command("chroot", root, "/usr/sbin/"+tool, "-V").Run()
		var exit *exec.ExitError
		if errors.As(err, &exit) && exit.ExitCode() == 127 || err != nil && exit == nil {
			t.Fatalf("%s does not start in the tools root: %v", tool, err)
		}
	}
}
