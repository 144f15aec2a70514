package binaries

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/semver"
)

// The tools of the test bed, by name.
const (
	Etcd                  = "etcd"
	KubeAPIServer         = "kube-apiserver"
	KubeControllerManager = "kube-controller-manager"
	CSIProvisioner        = "csi-provisioner"
	CSIAttacher           = "csi-attacher"
	CSISnapshotter        = "csi-snapshotter"
	SnapshotController    = "snapshot-controller"
)

// DefaultCacheDir is the cache when RDS_CSI_K8S_CACHE is not set.
const DefaultCacheDir = "/var/cache/rds-csi-k8s"

// CacheDir returns $RDS_CSI_K8S_CACHE, or DefaultCacheDir.
func CacheDir() string {
	if d := os.Getenv("RDS_CSI_K8S_CACHE"); d != "" {
		return d
	}
	return DefaultCacheDir
}

// Kubernetes returns the test bed's two wrapper modules under repoRoot:
// test/k8s/tools/controlplane (etcd, kube-apiserver, kube-controller-manager)
// and test/k8s/tools/sidecars (csi-provisioner, csi-attacher,
// csi-snapshotter, snapshot-controller). The
// apiserver's version stamp is read from the k8s.io/kubernetes requirement,
// so that bumping the version in go.mod is the whole upgrade.
func Kubernetes(repoRoot string) ([]Module, error) {
	tools := filepath.Join(repoRoot, "test", "k8s", "tools")
	controlplane := filepath.Join(tools, "controlplane")
	ldflags, err := versionLDFlags(filepath.Join(controlplane, "go.mod"))
	if err != nil {
		return nil, err
	}
	return []Module{
		{
			Name: "controlplane",
			Dir:  controlplane,
			Tools: []Tool{
				{Name: KubeAPIServer, Package: "k8s.io/kubernetes/cmd/kube-apiserver", LDFlags: ldflags, ColdHint: "6-10 min on 2 cores"},
				{Name: Etcd, Package: "go.etcd.io/etcd/server/v3", ColdHint: "under a minute"},
				{Name: KubeControllerManager, Package: "k8s.io/kubernetes/cmd/kube-controller-manager", LDFlags: ldflags, ColdHint: "about 4 min after the apiserver"},
			},
		},
		{
			Name: "sidecars",
			Dir:  filepath.Join(tools, "sidecars"),
			Tools: []Tool{
				{Name: CSIProvisioner, Package: "github.com/kubernetes-csi/external-provisioner/v6/cmd/csi-provisioner", ColdHint: "about 5 min"},
				{Name: CSIAttacher, Package: "github.com/kubernetes-csi/external-attacher/v4/cmd/csi-attacher", ColdHint: "seconds after the provisioner"},
				{Name: CSISnapshotter, Package: "github.com/kubernetes-csi/external-snapshotter/v8/cmd/csi-snapshotter", ColdHint: "about 3 min"},
				{Name: SnapshotController, Package: "github.com/kubernetes-csi/external-snapshotter/v8/cmd/snapshot-controller", ColdHint: "seconds after the snapshotter"},
			},
		},
	}, nil
}

// versionLDFlags stamps component-base's version variables with the
// k8s.io/kubernetes version the go.mod requires. Without them the apiserver
// reports v0.0.0, which clients and the sidecars' version checks dislike.
func versionLDFlags(goMod string) (string, error) {
	data, err := os.ReadFile(goMod)
	if err != nil {
		return "", err
	}
	f, err := modfile.ParseLax(goMod, data, nil)
	if err != nil {
		return "", err
	}
	for _, r := range f.Require {
		if r.Mod.Path != "k8s.io/kubernetes" {
			continue
		}
		return LDFlagsFor(r.Mod.Version)
	}
	return "", fmt.Errorf("%s does not require k8s.io/kubernetes", goMod)
}

// LDFlagsFor returns the -X flags that stamp version v ("v1.37.2").
func LDFlagsFor(v string) (string, error) {
	if !semver.IsValid(v) {
		return "", fmt.Errorf("k8s.io/kubernetes version %q is not a semantic version", v)
	}
	mm := strings.TrimPrefix(semver.MajorMinor(v), "v")
	major, minor, _ := strings.Cut(mm, ".")
	const pkg = "k8s.io/component-base/version."
	return fmt.Sprintf("-X %sgitVersion=%s -X %sgitMajor=%s -X %sgitMinor=%s", pkg, v, pkg, major, pkg, minor), nil
}

// RepoRoot returns the directory of the main module's go.mod, as the go
// command sees it from the working directory (a test runs in its package's
// directory).
func RepoRoot(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the rds-csi module (go env GOMOD is empty)")
	}
	return filepath.Dir(gomod), nil
}
