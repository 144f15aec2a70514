package vm

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// BuildStatic compiles pkg (a path relative to the module root, such as
// "./cmd/rds-csi-agent") into a static executable at out: the initramfs has
// no C library. With guestTests it compiles pkg's tests instead, under the
// e2eguest build tag, as the VM test beds run them. Extra build tags
// (faultinject, for the agent the crash tests kill) are added to either.
// It builds from the module root, wherever the caller runs.
func BuildStatic(ctx context.Context, out, pkg string, guestTests bool, tags ...string) error {
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	args := []string{"build", "-trimpath"}
	if guestTests {
		args = []string{"test", "-c"}
		tags = append([]string{"e2eguest"}, tags...)
	}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	args = append(args, "-o", out, pkg)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building %s: %w\n%s", pkg, err, b)
	}
	return nil
}
