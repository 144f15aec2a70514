package packaging

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/rds-csi/rds-csi/test/k8s/binaries"
)

var (
	rootOnce sync.Once
	root     string
	rootErr  error
)

// repoRoot is the module's directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	rootOnce.Do(func() { root, rootErr = binaries.RepoRoot(t.Context()) })
	if rootErr != nil {
		t.Fatal(rootErr)
	}
	return root
}

func readFile(t *testing.T, rel string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), rel))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// shippedPackages lists the module's packages linked into the two binaries
// the image ships.
func shippedPackages(t *testing.T) []Package {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-json=ImportPath,Dir,GoFiles,Module", "./cmd/rds-csi-controller", "./cmd/rds-csi-agent")
	cmd.Dir = repoRoot(t)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	var pkgs []Package
	for dec.More() {
		var p struct {
			Package
			Module *struct{ Path string }
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		if p.Module != nil && p.Module.Path == "github.com/rds-csi/rds-csi" {
			pkgs = append(pkgs, p.Package)
		}
	}
	if len(pkgs) < 5 {
		t.Fatalf("go list found only %d packages of the module: %v", len(pkgs), pkgs)
	}
	return pkgs
}
