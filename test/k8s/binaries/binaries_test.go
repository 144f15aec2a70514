package binaries

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// helloModule copies testdata/hello into a temporary directory, so a test
// can change its go.mod.
func helloModule(t *testing.T) Module {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"go.mod", "main.go"} {
		data, err := os.ReadFile(filepath.Join("testdata", "hello", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return Module{Name: "hello", Dir: dir, Tools: []Tool{{Name: "hello", Package: "example.com/hello"}}}
}

// testConfig builds with the machine's Go build cache, so that the tests do
// not compile the standard library again.
func testConfig(t *testing.T, cache string) (Config, *logLines) {
	t.Helper()
	goCache, err := exec.Command("go", "env", "GOCACHE").Output()
	if err != nil {
		t.Fatal(err)
	}
	lines := &logLines{}
	return Config{CacheDir: cache, GoCache: strings.TrimSpace(string(goCache)), Logf: lines.logf, BuildTimeout: 5 * time.Minute}, lines
}

type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, strings.TrimSpace(fmt.Sprintf(format, args...)))
}

func (l *logLines) contains(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			return true
		}
	}
	return false
}

func runHello(t *testing.T, path string) {
	t.Helper()
	out, err := exec.Command(path).Output()
	if err != nil || !strings.Contains(string(out), "hello from a cached build") {
		t.Fatalf("running %s: %v, %q", path, err, out)
	}
}

func TestEnsureBuildsOnceThenReuses(t *testing.T) {
	m := helloModule(t)
	cfg, _ := testConfig(t, t.TempDir())
	set, err := Ensure(t.Context(), cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	runHello(t, set["hello"])
	before, err := os.Stat(set["hello"])
	if err != nil {
		t.Fatal(err)
	}

	cfg, lines := testConfig(t, cfg.CacheDir)
	again, err := Ensure(t.Context(), cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(again["hello"])
	if err != nil {
		t.Fatal(err)
	}
	if again["hello"] != set["hello"] || !os.SameFile(before, after) || !after.ModTime().Equal(before.ModTime()) {
		t.Errorf("second Ensure did not reuse %s (got %s)", set["hello"], again["hello"])
	}
	if !lines.contains("reusing hello") || lines.contains("go build") {
		t.Errorf("second Ensure should only reuse; it logged %q", lines.lines)
	}
}

func TestEnsureRebuildsWhenTheModuleChanges(t *testing.T) {
	m := helloModule(t)
	cfg, _ := testConfig(t, t.TempDir())
	old, err := Ensure(t.Context(), cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	// What a version bump does to go.mod: the key changes.
	f, err := os.OpenFile(filepath.Join(m.Dir, "go.mod"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("\n// another version\n"); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()

	cfg, lines := testConfig(t, cfg.CacheDir)
	set, err := Ensure(t.Context(), cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	if set["hello"] == old["hello"] {
		t.Fatalf("a changed go.mod reused %s", old["hello"])
	}
	runHello(t, set["hello"])
	if !lines.contains("go build") {
		t.Errorf("a changed go.mod must be built; log: %q", lines.lines)
	}
	if _, err := os.Stat(filepath.Dir(old["hello"])); !os.IsNotExist(err) {
		t.Errorf("the earlier version's directory %s should be removed: %v", filepath.Dir(old["hello"]), err)
	}
}

func TestEnsureDoesNotTrustAnIncompleteDirectory(t *testing.T) {
	m := helloModule(t)
	cfg, lines := testConfig(t, t.TempDir())
	key, err := Key(m)
	if err != nil {
		t.Fatal(err)
	}
	// An empty binary where a finished build would be, and the temporary
	// directory of a build that was interrupted.
	final := filepath.Join(cfg.CacheDir, "bin", "hello-"+key)
	leftover := filepath.Join(cfg.CacheDir, "bin", ".build-hello-123")
	for _, d := range []string{final, leftover} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(final, "hello"), nil, 0o755); err != nil {
		t.Fatal(err)
	}
	set, err := Ensure(t.Context(), cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	runHello(t, set["hello"])
	if !lines.contains("go build") {
		t.Errorf("an incomplete directory was reused; log: %q", lines.lines)
	}
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Errorf("the interrupted build's %s should be removed: %v", leftover, err)
	}
}

func TestEnsureReportsABuildFailureWithItsOutput(t *testing.T) {
	m := helloModule(t)
	if err := os.WriteFile(filepath.Join(m.Dir, "main.go"), []byte("package main\n\nfunc main() { undefinedThing() }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, _ := testConfig(t, t.TempDir())
	_, err := Ensure(t.Context(), cfg, m)
	if err == nil || !strings.Contains(err.Error(), "undefinedThing") {
		t.Fatalf("want the compiler's complaint about undefinedThing, got %v", err)
	}
	if matches, _ := filepath.Glob(filepath.Join(cfg.CacheDir, "bin", "hello-*")); len(matches) != 0 {
		t.Errorf("a failed build left %v", matches)
	}
}

func TestEnsureWaitsForTheLockWithADeadline(t *testing.T) {
	m := helloModule(t)
	cfg, _ := testConfig(t, t.TempDir())
	if err := os.MkdirAll(cfg.CacheDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Another build holds the lock.
	held, err := lock(t.Context(), cfg, filepath.Join(cfg.CacheDir, "lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer held()
	cfg.LockTimeout = 1500 * time.Millisecond
	start := time.Now()
	_, err = Ensure(context.Background(), cfg, m)
	if err == nil || !strings.Contains(err.Error(), "held") {
		t.Fatalf("want a lock timeout, got %v", err)
	}
	if waited := time.Since(start); waited > 10*time.Second {
		t.Errorf("the lock wait took %s, beyond its deadline", waited)
	}
}

func TestKeyFollowsTheModuleFiles(t *testing.T) {
	m := helloModule(t)
	k1, err := Key(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(m.Dir, "go.sum"), []byte("example.com/dep v1.0.0 h1:x=\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	k2, err := Key(m)
	if err != nil {
		t.Fatal(err)
	}
	m.Tools[0].LDFlags = "-X main.version=v2"
	k3, err := Key(m)
	if err != nil {
		t.Fatal(err)
	}
	if k1 == k2 || k2 == k3 || k1 == k3 {
		t.Errorf("keys must differ when go.sum or the flags change: %s %s %s", k1, k2, k3)
	}
}

func TestLDFlagsFor(t *testing.T) {
	for _, tc := range []struct {
		version, want string
		fails         bool
	}{
		{version: "v1.37.2", want: "-X k8s.io/component-base/version.gitVersion=v1.37.2 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37"},
		{version: "v1.38.0-alpha.1", want: "-X k8s.io/component-base/version.gitVersion=v1.38.0-alpha.1 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=38"},
		{version: "1.37.2", fails: true},
		{version: "latest", fails: true},
	} {
		got, err := LDFlagsFor(tc.version)
		if (err != nil) != tc.fails || got != tc.want {
			t.Errorf("LDFlagsFor(%q) = %q, %v; want %q (fails: %v)", tc.version, got, err, tc.want, tc.fails)
		}
	}
}

// The test bed's own wrapper modules: both parse, and the apiserver is
// stamped with the version its go.mod requires.
func TestKubernetesModules(t *testing.T) {
	modules, err := Kubernetes(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	tools := map[string]Tool{}
	for _, m := range modules {
		if _, err := Key(m); err != nil {
			t.Errorf("module %s: %v", m.Name, err)
		}
		for _, tool := range m.Tools {
			tools[tool.Name] = tool
		}
	}
	for _, name := range []string{Etcd, KubeAPIServer, KubeControllerManager, CSIProvisioner, CSIAttacher} {
		if _, ok := tools[name]; !ok {
			t.Errorf("no module builds %s", name)
		}
	}
	if !strings.Contains(tools[KubeAPIServer].LDFlags, "gitVersion=v1.") {
		t.Errorf("kube-apiserver is not version-stamped: %q", tools[KubeAPIServer].LDFlags)
	}
}
