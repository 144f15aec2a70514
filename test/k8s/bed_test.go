// Package k8s runs the rds-csi controller under a real Kubernetes control
// plane (test/k8s/cluster): real etcd, kube-apiserver,
// kube-controller-manager, csi-provisioner and csi-attacher, with the
// RouterOS simulator as the RDS. docs/testing.md describes the test bed.
package k8s

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/rds-csi/rds-csi/controller/routeros"
	"github.com/rds-csi/rds-csi/test/harness"
	"github.com/rds-csi/rds-csi/test/k8s/binaries"
	"github.com/rds-csi/rds-csi/test/k8s/cluster"
	"github.com/rds-csi/rds-csi/test/rdssim"
)

const (
	// namespace holds every claim of a test.
	namespace = "rds-csi-test"
	// Identities of the sidecars. Until the project ships its manifests
	// (and their ClusterRoles) they are in system:masters; each acts under
	// its own name, so the apiserver's log shows who did what.
	provisionerUser = "rds-csi:csi-provisioner"
	attacherUser    = "rds-csi:csi-attacher"
	// controllerUser is the name the API server gives the controller's
	// service account (deploy/kubernetes/rbac-controller.yaml): the test bed
	// applies that manifest's ClusterRole and binding, so the controller
	// runs with exactly the permissions it ships with.
	controllerUser = "system:serviceaccount:rds-csi:rds-csi-controller"
	controllerRBAC = "../../deploy/kubernetes/rbac-controller.yaml"
	// gracePeriod is the controller's --rwo-grace-period here.
	gracePeriod = "2s"

	// flowTimeout bounds each step of a flow (a PVC bound, a PV gone). The
	// steps take about a second; the margin is for a loaded machine.
	flowTimeout = 60 * time.Second
	// setupTimeout bounds building the test bed's binaries; a cold build
	// takes about 18 minutes on 2 cores.
	setupTimeout = 60 * time.Minute
)

// Built once per test binary by TestMain.
var (
	bins          binaries.Set
	controllerBin string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Getenv("RDS_CSI_K8S") == "skip" {
		return m.Run() // every test skips and says why
	}
	log.SetFlags(log.Ltime)
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	root, err := binaries.RepoRoot(ctx)
	if err == nil {
		var modules []binaries.Module
		if modules, err = binaries.Kubernetes(root); err == nil {
			bins, err = binaries.Ensure(ctx, binaries.Config{CacheDir: binaries.CacheDir(), Logf: log.Printf}, modules...)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: the control-plane test bed has no binaries: %v\n(RDS_CSI_K8S=skip skips these tests; RDS_CSI_K8S_CACHE moves the cache)\n", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "rds-csi-k8s-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	defer func() { _ = os.RemoveAll(dir) }()
	if controllerBin, err = cluster.BuildController(ctx, root, dir); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	return m.Run()
}

// bed is one test's control plane, simulated RDS, controller and sidecars.
type bed struct {
	cluster     *cluster.Cluster
	client      kubernetes.Interface
	rds         *harness.RDS
	controller  *cluster.Controller
	provisioner *cluster.Process
	attacher    *cluster.Process
}

// newBed starts a test bed with kube-controller-manager, so that claims
// bind by themselves, and a StorageClass named "rds" (reclaim Delete).
func newBed(t *testing.T) *bed {
	t.Helper()
	if os.Getenv("RDS_CSI_K8S") == "skip" {
		t.Skip("SKIP: the control-plane tests are switched off by RDS_CSI_K8S=skip")
	}
	start := time.Now()
	b := &bed{}
	b.cluster = cluster.Start(t, cluster.Config{
		Binaries:          bins,
		ControllerManager: true,
		Users: map[string][]string{
			provisionerUser: {cluster.MastersGroup},
			attacherUser:    {cluster.MastersGroup},
			controllerUser:  nil,
		},
	})
	b.client = b.cluster.Admin
	if err := applyRBAC(t.Context(), b.client, controllerRBAC); err != nil {
		t.Fatal(err)
	}
	b.rds = harness.StartRDS(t, rdssim.Config{}, routeros.ClientConfig{})
	b.controller = cluster.StartController(t, cluster.ControllerConfig{Binary: controllerBin, RDS: b.rds, LogDir: b.cluster.LogDir, Args: []string{
		"--kubeconfig=" + b.cluster.Kubeconfig(controllerUser),
		"--target-fencing",
		"--rwo-grace-period=" + gracePeriod,
	}})
	b.provisioner = cluster.StartProvisioner(t, b.cluster, cluster.SidecarConfig{Binaries: bins, Socket: b.controller.Socket, User: provisionerUser})
	b.attacher = cluster.StartAttacher(t, b.cluster, cluster.SidecarConfig{Binaries: bins, Socket: b.controller.Socket, User: attacherUser})

	ctx := t.Context()
	if _, err := b.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.client.StorageV1().StorageClasses().Create(ctx, cluster.StorageClass("rds", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Logf("test bed up in %s; logs in %s", time.Since(start).Round(10*time.Millisecond), b.cluster.LogDir)
	return b
}

// applyRBAC creates the ServiceAccount, ClusterRole and ClusterRoleBinding
// of a manifest in deploy/.
func applyRBAC(ctx context.Context, cs kubernetes.Interface, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	docs := yaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	for {
		doc, err := docs.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		switch o := obj.(type) {
		case *corev1.ServiceAccount:
			if _, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: o.Namespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				return err
			}
			_, err = cs.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRole:
			_, err = cs.RbacV1().ClusterRoles().Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRoleBinding:
			_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
		default:
			err = fmt.Errorf("%s: unexpected %T", path, obj)
		}
		if err != nil {
			return err
		}
	}
}

// createPVC creates a claim on storageClass.
func (b *bed) createPVC(t *testing.T, name, storageClass, size string, block bool) {
	t.Helper()
	if _, err := b.client.CoreV1().PersistentVolumeClaims(namespace).Create(t.Context(), cluster.PVC(name, storageClass, size, block), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitBound waits for the claim to bind and returns its PV.
func (b *bed) waitBound(t *testing.T, claim string) *corev1.PersistentVolume {
	t.Helper()
	start := time.Now()
	pv, err := cluster.WaitBound(t.Context(), b.client, namespace, claim, flowTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("PVC %s bound to %s (volume %s) after %s", claim, pv.Name, pv.Spec.CSI.VolumeHandle, time.Since(start).Round(10*time.Millisecond))
	return pv
}

// deletePVC deletes the claim and waits until its PV is gone too: with
// reclaim Delete, the provisioner calls DeleteVolume first.
func (b *bed) deletePVC(t *testing.T, claim string, pv *corev1.PersistentVolume) {
	t.Helper()
	ctx := t.Context()
	start := time.Now()
	if err := b.client.CoreV1().PersistentVolumeClaims(namespace).Delete(ctx, claim, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err := cluster.WaitGone(ctx, "PV "+pv.Name, flowTimeout, func(ctx context.Context) (metav1.Object, error) {
		return b.client.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("PVC %s and PV %s deleted after %s", claim, pv.Name, time.Since(start).Round(10*time.Millisecond))
}

// disk returns the simulator's disk in slot; found is false when there is
// none.
func (b *bed) disk(t *testing.T, slot string) (disk routeros.Disk, found bool) {
	t.Helper()
	disk, err := b.rds.Disks.Get(t.Context(), slot)
	if routeros.IsKind(err, routeros.KindNotFound) {
		return routeros.Disk{}, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return disk, true
}

// files returns the backing files of slot on the simulator.
func (b *bed) files(t *testing.T, slot string) []routeros.File {
	t.Helper()
	files, err := b.rds.Disks.FilesNamed(t.Context(), slot, slot+".img")
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// disks returns the slots of every disk on the simulator.
func (b *bed) disks(t *testing.T) []string {
	t.Helper()
	list, err := b.rds.Disks.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	slots := make([]string, 0, len(list))
	for _, d := range list {
		slots = append(slots, d.Slot)
	}
	return slots
}
