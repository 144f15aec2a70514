package k8s

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"
)

// snapshotCRDs are the CRDs of the snapshot kinds the manifests use
// (VolumeSnapshotClass, VolumeSnapshot and the content the latter binds
// to), as external-snapshotter's client module ships them: the version the
// sidecar tool module pins, so the CRDs match the csi-snapshotter image's.
var snapshotCRDs = []string{
	"snapshot.storage.k8s.io_volumesnapshotclasses.yaml",
	"snapshot.storage.k8s.io_volumesnapshotcontents.yaml",
	"snapshot.storage.k8s.io_volumesnapshots.yaml",
}

// installSnapshotCRDs creates the snapshot CRDs and waits until the
// apiserver serves their kinds.
func installSnapshotCRDs(ctx context.Context, t *testing.T, dyn dynamic.Interface, disc discovery.DiscoveryInterface) {
	t.Helper()
	// go mod download fetches the module if the cache lacks it (binaries
	// cached elsewhere may have spared the build that would have).
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", "github.com/kubernetes-csi/external-snapshotter/client/v8")
	cmd.Dir = filepath.Join(repoRoot(t), "test", "k8s", "tools", "sidecars")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("finding the snapshot CRDs (go mod download in %s): %v\n%s", cmd.Dir, err, out)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("go mod download -json printed no module directory (%v): %s", err, out)
	}
	dir := filepath.Join(mod.Dir, "config", "crd")
	crds := dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	for _, name := range snapshotCRDs {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		obj := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(data, &obj.Object); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := crds.Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating the CRD of %s: %v", name, err)
		}
	}
	deadline := time.Now().Add(time.Minute)
	for {
		res, err := disc.ServerResourcesForGroupVersion("snapshot.storage.k8s.io/v1")
		if err == nil && len(res.APIResources) >= len(snapshotCRDs) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the snapshot CRDs are not served after a minute: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
