package k8s

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/rds-csi/rds-csi/test/k8s/binaries"
	"github.com/rds-csi/rds-csi/test/k8s/cluster"
	"github.com/rds-csi/rds-csi/test/packaging"
)

// chartKubeVersion is the Kubernetes version helm renders the chart for:
// the test bed's apiserver's.
const chartKubeVersion = "1.37.2"

// rbacController is the controller's own RBAC, written with ControllerPublish
// (issue 6). Until that work is merged this tree may not have it.
const rbacController = "rbac-controller.yaml"

var (
	toolsOnce sync.Once
	tools     binaries.Set
	toolsErr  error
)

// packagingTools builds (or finds in the cache) helm and kustomize.
func packagingTools(t *testing.T) binaries.Set {
	t.Helper()
	if os.Getenv("RDS_CSI_K8S") == "skip" {
		t.Skip("SKIP: the control-plane tests are switched off by RDS_CSI_K8S=skip")
	}
	toolsOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
		defer cancel()
		root, err := binaries.RepoRoot(ctx)
		if err != nil {
			toolsErr = err
			return
		}
		tools, toolsErr = binaries.Ensure(ctx, binaries.Config{CacheDir: binaries.CacheDir(), Logf: t.Logf}, binaries.Packaging(root)...)
	})
	if toolsErr != nil {
		t.Fatalf("building helm and kustomize: %v", toolsErr)
	}
	return tools
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := binaries.RepoRoot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func runTool(t *testing.T, dir, name string, args ...string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w\n%s", filepath.Base(name), strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

// kustomizeBuild renders deploy/kubernetes. Without rbac-controller.yaml in
// the tree it renders a copy whose kustomization leaves that one file out,
// and says so: everything else is still checked.
func kustomizeBuild(t *testing.T) []packaging.Object {
	t.Helper()
	bin := packagingTools(t)[binaries.Kustomize]
	dir := filepath.Join(repoRoot(t), "deploy", "kubernetes")
	if _, err := os.Stat(filepath.Join(dir, rbacController)); os.IsNotExist(err) {
		t.Logf("NOTE: deploy/kubernetes/%s is not in this tree yet (the controller's own RBAC comes with ControllerPublish); rendering the kustomization without it", rbacController)
		dir = copyWithout(t, dir, rbacController)
	}
	out, err := runTool(t, dir, bin, "build", ".")
	if err != nil {
		t.Fatal(err)
	}
	objs, err := packaging.Decode("kustomize build deploy/kubernetes", out)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// copyWithout copies the top level of a kustomization directory, dropping
// one resource from it.
func copyWithout(t *testing.T, dir, resource string) string {
	t.Helper()
	tmp := t.TempDir()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if e.Name() == "kustomization.yaml" {
			line := "  - " + resource + "\n"
			if !bytes.Contains(data, []byte(line)) {
				t.Fatalf("kustomization.yaml does not list %s", resource)
			}
			data = bytes.Replace(data, []byte(line), nil, 1)
		}
		if err := os.WriteFile(filepath.Join(tmp, e.Name()), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return tmp
}

// helmTemplate renders the chart into namespace rds-csi with the image tag
// of the kustomization.
func helmTemplate(t *testing.T, args ...string) ([]packaging.Object, error) {
	t.Helper()
	bin := packagingTools(t)[binaries.Helm]
	base := []string{"template", "rds-csi", filepath.Join(repoRoot(t), "deploy", "helm", "rds-csi"),
		"--namespace", "rds-csi", "--kube-version", chartKubeVersion, "--set", "image.tag=dev"}
	out, err := runTool(t, "", bin, append(base, args...)...)
	if err != nil {
		return nil, err
	}
	return packaging.Decode("helm template", out)
}

func mustHelmTemplate(t *testing.T, args ...string) []packaging.Object {
	t.Helper()
	objs, err := helmTemplate(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// diffObjects lists how two renderings differ: objects only in one, and
// objects whose content differs. skip names keys left out of the
// comparison.
func diffObjects(kust, chart []packaging.Object, skip func(key string) bool) []string {
	index := func(objs []packaging.Object) map[string]packaging.Object {
		m := map[string]packaging.Object{}
		for _, o := range objs {
			if !skip(o.Key()) {
				m[o.Key()] = o
			}
		}
		return m
	}
	k, c := index(kust), index(chart)
	var diffs []string
	for _, key := range slices.Sorted(mapKeys(k)) {
		co, ok := c[key]
		switch {
		case !ok:
			diffs = append(diffs, "only in deploy/kubernetes: "+key)
		case !reflect.DeepEqual(k[key].Unstructured.Object, co.Unstructured.Object):
			diffs = append(diffs, fmt.Sprintf("%s differs:\n  kustomize: %v\n  chart:     %v", key, k[key].Unstructured.Object, co.Unstructured.Object))
		}
	}
	for _, key := range slices.Sorted(mapKeys(c)) {
		if _, ok := k[key]; !ok {
			diffs = append(diffs, "only in the chart: "+key)
		}
	}
	return diffs
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// The chart with its default values renders the same objects as
// deploy/kubernetes, field for field, RBAC rules included; the namespace is
// helm's to create (--create-namespace).
func TestTheChartRendersTheSameObjectsAsTheKustomization(t *testing.T) {
	kust := kustomizeBuild(t)
	chart := mustHelmTemplate(t)
	_, err := os.Stat(filepath.Join(repoRoot(t), "deploy", "kubernetes", rbacController))
	haveControllerRBAC := err == nil
	skip := func(key string) bool {
		if key == "Namespace rds-csi" {
			return true
		}
		// Until rbac-controller.yaml is merged, the chart's ServiceAccount
		// of the controller has no kustomize counterpart.
		return !haveControllerRBAC && key == "ServiceAccount rds-csi/rds-csi-controller"
	}
	if diffs := diffObjects(kust, chart, skip); len(diffs) > 0 {
		t.Fatalf("the chart and deploy/kubernetes differ:\n%s", strings.Join(diffs, "\n"))
	}
	var rbac int
	for _, o := range chart {
		if o.GVK.Group == "rbac.authorization.k8s.io" {
			rbac++
		}
	}
	t.Logf("%d objects compared, %d of them RBAC", len(chart), rbac)
	if rbac < 10 {
		t.Fatalf("only %d RBAC objects rendered", rbac)
	}
}

// The comparison above catches a rule that drifts on one side.
func TestTheRenderingComparisonCatchesADriftedRule(t *testing.T) {
	kust := kustomizeBuild(t)
	chart := mustHelmTemplate(t)
	var drifted []packaging.Object
	for _, o := range chart {
		o.Unstructured = o.Unstructured.DeepCopy()
		if o.Key() == "ClusterRole rds-csi-attacher" {
			rules := o.Unstructured.Object["rules"].([]any)
			rule := rules[0].(map[string]any)
			rule["verbs"] = append(rule["verbs"].([]any), "update")
		}
		drifted = append(drifted, o)
	}
	diffs := diffObjects(kust, drifted, func(key string) bool { return key != "ClusterRole rds-csi-attacher" })
	if len(diffs) != 1 || !strings.Contains(diffs[0], "ClusterRole rds-csi-attacher differs") {
		t.Fatalf("diffs = %q, want the attacher's ClusterRole", diffs)
	}
}

// values.schema.json refuses a misspelt or mistyped value instead of
// rendering without it.
func TestTheChartRefusesValuesOutsideItsSchema(t *testing.T) {
	for _, set := range []string{"controller.replica=2", "node.kubeletDir=var/lib/kubelet", "image.pullPolicy=Sometimes", "sidecars.timeout=soon"} {
		t.Run(set, func(t *testing.T) {
			if _, err := helmTemplate(t, "--set", set); err == nil || !strings.Contains(err.Error(), "schema") {
				t.Fatalf("helm template --set %s: %v, want a schema error", set, err)
			}
		})
	}
}

// chartVariants are renderings with the optional parts switched on.
var chartVariants = map[string][]string{
	"defaults": nil,
	"options": {
		"--set", "metrics.serviceMonitor.enabled=true",
		"--set", "rds.hostKeyFingerprint=SHA256:placeholderplaceholderplaceholderplace",
		"--set-json", `storageClasses=[{"name":"rds-ext4","isDefault":true,"parameters":{"csi.storage.k8s.io/fstype":"ext4","nvmeAddress":"10.0.0.1"}},{"name":"rds-kubevirt","parameters":{"migrationTimeoutSeconds":600}}]`,
		"--set-json", `controller.extraArgs=["--nvme-address=10.0.0.1"]`,
		"--set-json", `node.extraArgs=["--storage-interfaces=eth1"]`,
		"--set-json", `volumeSnapshotClasses=[{"name":"rds-snapshots","isDefault":true}]`,
	},
}

func TestTheChartRendersItsOptions(t *testing.T) {
	objs := mustHelmTemplate(t, chartVariants["options"]...)
	keys := map[string]bool{}
	for _, o := range objs {
		keys[o.Key()] = true
	}
	for _, want := range []string{"ServiceMonitor rds-csi/rds-csi", "StorageClass rds-ext4", "StorageClass rds-kubevirt", "VolumeSnapshotClass rds-snapshots"} {
		if !keys[want] {
			t.Errorf("no %s rendered", want)
		}
	}
}

// Every manifest and every rendering of the chart is accepted by a real
// kube-apiserver in a server-side dry run with strict field validation.
// Kinds whose CRD the test bed lacks (ServiceMonitor) are skipped, and
// named in the log; the snapshot CRDs are installed.
func TestTheAPIServerAcceptsEveryManifest(t *testing.T) {
	sets := map[string][]packaging.Object{"kustomize build deploy/kubernetes": kustomizeBuild(t)}
	for name, args := range chartVariants {
		sets["helm template ("+name+")"] = mustHelmTemplate(t, args...)
	}
	extra, err := filepath.Glob(filepath.Join(repoRoot(t), "deploy", "kubernetes", "*", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range extra {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(repoRoot(t), path)
		if sets[rel], err = packaging.Decode(rel, data); err != nil {
			t.Fatal(err)
		}
	}

	c := cluster.Start(t, cluster.Config{Binaries: bins})
	dyn := dynamicClient(t, c)
	// The VolumeSnapshotClass and VolumeSnapshot examples need their CRDs.
	installSnapshotCRDs(t.Context(), t, dyn, c.Admin.Discovery())
	groups, err := restmapper.GetAPIGroupResources(c.Admin.Discovery())
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDiscoveryRESTMapper(groups)
	ctx := t.Context()
	// Namespaced objects need their namespace to exist; a dry run creates
	// nothing, so it is created for real.
	if _, err := c.Admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "rds-csi"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Pods need their ServiceAccount, which kube-controller-manager (not
	// run here) would create.
	if _, err := c.Admin.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var accepted int
	for _, name := range slices.Sorted(mapKeys(sets)) {
		for _, o := range sets[name] {
			m, err := mapper.RESTMapping(o.GVK.GroupKind(), o.GVK.Version)
			if meta.IsNoMatchError(err) {
				t.Logf("SKIP %s from %s: the test bed has no CRD for %s", o.Key(), name, o.GVK)
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			res := dyn.Resource(m.Resource)
			var ri dynamic.ResourceInterface = res
			if ns := o.Unstructured.GetNamespace(); ns != "" {
				ri = res.Namespace(ns)
			}
			_, err = ri.Create(ctx, o.Unstructured, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"})
			if apierrors.IsAlreadyExists(err) && o.Key() == "Namespace rds-csi" {
				err = nil
			}
			if err != nil {
				t.Errorf("%s from %s: %v", o.Key(), name, err)
				continue
			}
			accepted++
		}
	}
	t.Logf("the apiserver accepted %d objects in dry run", accepted)
}

func TestTheChartPassesHelmLint(t *testing.T) {
	bin := packagingTools(t)[binaries.Helm]
	out, err := runTool(t, "", bin, "lint", "--strict", "--kube-version", chartKubeVersion, filepath.Join(repoRoot(t), "deploy", "helm", "rds-csi"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s", out)
}
