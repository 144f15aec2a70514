// Package binaries builds the Kubernetes control plane (etcd, kube-apiserver,
// kube-controller-manager) and the CSI sidecars (csi-provisioner,
// csi-attacher) from the wrapper modules under test/k8s/tools, into a cache
// directory, and reuses them for as long as the wrapper modules do not change.
//
// Each wrapper module is a go.mod (and go.sum) of its own, outside the main
// module: it pins the upstream version and replaces the staging modules that
// k8s.io/kubernetes cannot resolve on its own. Nothing but Go modules is
// downloaded.
package binaries

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Tool is one binary of a wrapper module.
type Tool struct {
	// Name is the binary's file name in the cache.
	Name string
	// Package is the import path built, a tool of the wrapper module.
	Package string
	// LDFlags are passed to the linker (the version stamp of the apiserver).
	LDFlags string
	// ColdHint tells a reader of the log what to expect, e.g. "about 10 min".
	ColdHint string
}

// Module is a wrapper module and the tools built from it.
type Module struct {
	// Name names the module's directory in the cache.
	Name string
	// Dir holds the module's go.mod and go.sum.
	Dir   string
	Tools []Tool
}

// Config says where and how to build.
type Config struct {
	// CacheDir holds bin/ (one directory per module and key), gocache/ and
	// logs/ (the output of the latest build of each step).
	CacheDir string
	// GoCache is the Go build cache of these builds; <CacheDir>/gocache if
	// empty. Kept between runs, it turns a cold build of many minutes into
	// seconds after a version change.
	GoCache string
	// Logf receives progress lines. A cold build runs for many minutes, so
	// it also receives a line every Heartbeat while a build runs.
	Logf func(format string, args ...any)
	// Heartbeat is the interval of "still building" lines; 30 s if zero.
	Heartbeat time.Duration
	// BuildTimeout bounds each go command; 45 min if zero.
	BuildTimeout time.Duration
	// LockTimeout bounds the wait for another process building into the
	// same cache; 90 min if zero.
	LockTimeout time.Duration
}

func (c *Config) defaults() {
	if c.GoCache == "" {
		c.GoCache = filepath.Join(c.CacheDir, "gocache")
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = 30 * time.Second
	}
	if c.BuildTimeout <= 0 {
		c.BuildTimeout = 45 * time.Minute
	}
	if c.LockTimeout <= 0 {
		c.LockTimeout = 90 * time.Minute
	}
}

// Set maps a tool's name to the path of its binary.
type Set map[string]string

// recipe is part of every key: a change to how binaries are built must
// rebuild them even when the wrapper modules stay the same.
const recipe = "rds-csi k8s binaries v1: go build -trimpath, CGO_ENABLED=0"

// Key identifies a module's build: its go.mod, go.sum, tools and flags. A new
// version in either file is a new key, so the binaries are built again.
func Key(m Module) (string, error) {
	h := sha256.New()
	h.Write(fmt.Appendf(nil, "%s\n", recipe))
	for _, t := range m.Tools {
		h.Write(fmt.Appendf(nil, "tool %q %q %q\n", t.Name, t.Package, t.LDFlags))
	}
	for _, name := range []string{"go.mod", "go.sum"} {
		data, err := os.ReadFile(filepath.Join(m.Dir, name))
		if errors.Is(err, os.ErrNotExist) && name == "go.sum" {
			continue // a module without dependencies has none
		}
		if err != nil {
			return "", err
		}
		h.Write(fmt.Appendf(nil, "%s %d\n", name, len(data)))
		h.Write(data)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// Ensure returns the binaries of every module, building those whose key has
// no complete directory in the cache yet. A build happens in a temporary
// directory that is renamed into place only once every tool is built, so an
// interrupted build is never mistaken for a finished one.
func Ensure(ctx context.Context, cfg Config, modules ...Module) (Set, error) {
	if cfg.CacheDir == "" {
		return nil, errors.New("binaries: no cache directory")
	}
	cfg.defaults()
	if err := os.MkdirAll(filepath.Join(cfg.CacheDir, "bin"), 0o755); err != nil {
		return nil, fmt.Errorf("binaries: cache directory (set RDS_CSI_K8S_CACHE to use another): %w", err)
	}
	set := Set{}
	for _, m := range modules {
		dir, err := ensureModule(ctx, cfg, m)
		if err != nil {
			return nil, err
		}
		for _, t := range m.Tools {
			set[t.Name] = filepath.Join(dir, t.Name)
		}
	}
	return set, nil
}

func ensureModule(ctx context.Context, cfg Config, m Module) (string, error) {
	key, err := Key(m)
	if err != nil {
		return "", fmt.Errorf("binaries: module %s: %w", m.Name, err)
	}
	final := filepath.Join(cfg.CacheDir, "bin", m.Name+"-"+key)
	if complete(final, m) {
		cfg.Logf("k8s binaries: reusing %s (key %s) from %s", m.Name, key, final)
		return final, nil
	}
	unlock, err := lock(ctx, cfg, filepath.Join(cfg.CacheDir, "lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	// Another process may have built it while this one waited.
	if complete(final, m) {
		cfg.Logf("k8s binaries: reusing %s (key %s), built meanwhile by another run", m.Name, key)
		return final, nil
	}
	// Holding the lock, every temporary build directory is a leftover of an
	// interrupted build, and so is an incomplete final directory (a binary
	// deleted by hand, a disk that filled up).
	removeMatching(cfg, filepath.Join(cfg.CacheDir, "bin", ".build-*"))
	removeMatching(cfg, final)

	start := time.Now()
	cfg.Logf("k8s binaries: building %s (key %s) into %s", m.Name, key, final)
	tmp, err := os.MkdirTemp(filepath.Join(cfg.CacheDir, "bin"), ".build-"+m.Name+"-")
	if err != nil {
		return "", err
	}
	defer func() { _ = os.RemoveAll(tmp) }()

	pkgs := make([]string, 0, len(m.Tools))
	for _, t := range m.Tools {
		pkgs = append(pkgs, t.Package)
	}
	if err := goCommand(ctx, cfg, m, "modules of "+m.Name, "", append([]string{"list", "-deps", "-f", "{{if false}}{{end}}"}, pkgs...)...); err != nil {
		return "", err
	}
	for _, t := range m.Tools {
		args := []string{"build", "-trimpath", "-o", filepath.Join(tmp, t.Name)}
		if t.LDFlags != "" {
			args = append(args, "-ldflags", t.LDFlags)
		}
		if err := goCommand(ctx, cfg, m, t.Name, t.ColdHint, append(args, t.Package)...); err != nil {
			return "", err
		}
	}
	if err := os.Rename(tmp, final); err != nil {
		return "", fmt.Errorf("binaries: moving the build into place: %w", err)
	}
	cfg.Logf("k8s binaries: %s built in %s", m.Name, time.Since(start).Round(time.Second))
	// Binaries of earlier versions are hundreds of MB each.
	for _, old := range glob(filepath.Join(cfg.CacheDir, "bin", m.Name+"-*")) {
		if old != final {
			cfg.Logf("k8s binaries: removing %s, an earlier version", old)
			_ = os.RemoveAll(old)
		}
	}
	return final, nil
}

// complete reports whether dir holds every tool of m as a non-empty file.
func complete(dir string, m Module) bool {
	for _, t := range m.Tools {
		fi, err := os.Stat(filepath.Join(dir, t.Name))
		if err != nil || !fi.Mode().IsRegular() || fi.Size() == 0 {
			return false
		}
	}
	return true
}

// goCommand runs the go command in m's directory with the cache's build
// cache, logging its output to logs/<step>.log and a heartbeat meanwhile.
func goCommand(ctx context.Context, cfg Config, m Module, step, hint string, args ...string) error {
	logs := filepath.Join(cfg.CacheDir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return err
	}
	logPath := filepath.Join(logs, strings.ReplaceAll(step, " ", "-")+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer func() { _ = logFile.Close() }()

	ctx, cancel := context.WithTimeout(ctx, cfg.BuildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = m.Dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = append(os.Environ(),
		"GOCACHE="+cfg.GoCache,
		"GOWORK=off",
		"GOFLAGS=-mod=readonly",
		// Static binaries: no C toolchain needed, and they run anywhere.
		"CGO_ENABLED=0",
	)
	// The go command starts compilers and linkers; a timeout kills them all.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second

	what := "k8s binaries: " + step
	if hint != "" {
		what += " (cold: " + hint + ")"
	}
	cfg.Logf("%s: go %s", what, strings.Join(args, " "))
	start := time.Now()
	stop := heartbeat(cfg, step, start)
	err = cmd.Run()
	stop()
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (timed out after %s)", err, cfg.BuildTimeout)
		}
		return fmt.Errorf("binaries: %s: go %s in %s: %w\n%s\n(whole output in %s)",
			step, args[0], m.Dir, err, tail(logPath, 40), logPath)
	}
	cfg.Logf("k8s binaries: %s done in %s", step, time.Since(start).Round(100*time.Millisecond))
	return nil
}

// heartbeat logs every cfg.Heartbeat until the returned stop is called, and
// stop returns only once no more lines will be logged.
func heartbeat(cfg Config, step string, start time.Time) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(cfg.Heartbeat)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				cfg.Logf("k8s binaries: still working on %s, %s so far", step, time.Since(start).Round(time.Second))
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

// lock takes an exclusive lock on path, polling so that the wait is bounded
// by cfg.LockTimeout and ctx. The lock goes with the process if it dies.
func lock(ctx context.Context, cfg Config, path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("binaries: lock file: %w", err)
	}
	deadline := time.Now().Add(cfg.LockTimeout)
	lastNote := time.Time{}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				_ = f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			_ = f.Close()
			return nil, fmt.Errorf("binaries: locking %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			_ = f.Close()
			return nil, fmt.Errorf("binaries: another build has held %s for more than %s", path, cfg.LockTimeout)
		}
		if time.Since(lastNote) >= cfg.Heartbeat {
			cfg.Logf("k8s binaries: waiting for another build into %s to finish", cfg.CacheDir)
			lastNote = time.Now()
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func glob(pattern string) []string {
	m, _ := filepath.Glob(pattern) // the only error is a bad pattern
	return m
}

func removeMatching(cfg Config, pattern string) {
	for _, p := range glob(pattern) {
		cfg.Logf("k8s binaries: removing %s, left incomplete by an earlier build", p)
		_ = os.RemoveAll(p)
	}
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer func() { _ = f.Close() }()
	data, err := io.ReadAll(io.LimitReader(f, 16<<20))
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
