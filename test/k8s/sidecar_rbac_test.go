package k8s

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rds-csi/rds-csi/controller/routeros"
	"github.com/rds-csi/rds-csi/test/harness"
	"github.com/rds-csi/rds-csi/test/k8s/cluster"
	"github.com/rds-csi/rds-csi/test/packaging"
	"github.com/rds-csi/rds-csi/test/rdssim"
)

// Identities of the sidecars acting under deploy/kubernetes/rbac-sidecars.yaml
// alone: in no group but system:authenticated.
const (
	rbacProvisioner = "rds-csi:rbac-provisioner"
	rbacAttacher    = "rds-csi:rbac-attacher"
	rbacSnapshotter = "rds-csi:rbac-snapshotter"
)

// applySidecarRBAC creates the ClusterRoles, Roles and bindings of
// rbac-sidecars.yaml, with each binding's subject (the controller's
// ServiceAccount) replaced by the test's user of that sidecar. The resizer
// is not part of the test bed; its binding is left out.
func applySidecarRBAC(t *testing.T, c *cluster.Cluster) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "kubernetes", "rbac-sidecars.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := packaging.Decode("rbac-sidecars.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	users := func(names ...string) []rbacv1.Subject {
		var s []rbacv1.Subject
		for _, n := range names {
			s = append(s, rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: n})
		}
		return s
	}
	subjects := map[string][]rbacv1.Subject{
		"rds-csi-provisioner":     users(rbacProvisioner),
		"rds-csi-attacher":        users(rbacAttacher),
		"rds-csi-snapshotter":     users(rbacSnapshotter),
		"rds-csi-leader-election": users(rbacProvisioner, rbacAttacher, rbacSnapshotter),
	}
	ctx := t.Context()
	rbac := c.Admin.RbacV1()
	var created int
	for _, o := range objs {
		var err error
		switch v := o.Typed.(type) {
		case *rbacv1.ClusterRole:
			_, err = rbac.ClusterRoles().Create(ctx, v, metav1.CreateOptions{})
		case *rbacv1.Role:
			_, err = rbac.Roles(v.Namespace).Create(ctx, v, metav1.CreateOptions{})
		case *rbacv1.ClusterRoleBinding:
			if subjects[v.Name] == nil {
				continue
			}
			v.Subjects = subjects[v.Name]
			_, err = rbac.ClusterRoleBindings().Create(ctx, v, metav1.CreateOptions{})
		case *rbacv1.RoleBinding:
			if subjects[v.Name] == nil {
				t.Fatalf("RoleBinding %s: the test does not know whose it is", v.Name)
			}
			v.Subjects = subjects[v.Name]
			_, err = rbac.RoleBindings(v.Namespace).Create(ctx, v, metav1.CreateOptions{})
		default:
			t.Fatalf("%s: unexpected %T in rbac-sidecars.yaml", o.Key(), o.Typed)
		}
		if err != nil {
			t.Fatalf("%s: %v", o.Key(), err)
		}
		created++
	}
	t.Logf("applied %d RBAC objects of rbac-sidecars.yaml", created)
}

// The real csi-provisioner, csi-attacher and csi-snapshotter, with leader
// election in the driver's namespace as the Deployment runs them, provision,
// attach, detach, snapshot, restore and delete volumes with no permission
// but rbac-sidecars.yaml's, and log no access the apiserver refused.
func TestTheSidecarsNeedNoMoreThanTheirRBAC(t *testing.T) {
	if os.Getenv("RDS_CSI_K8S") == "skip" {
		t.Skip("SKIP: the control-plane tests are switched off by RDS_CSI_K8S=skip")
	}
	c := cluster.Start(t, cluster.Config{
		Binaries:          bins,
		ControllerManager: true,
		Users:             map[string][]string{rbacProvisioner: nil, rbacAttacher: nil, rbacSnapshotter: nil, controllerUser: nil},
	})
	ctx := t.Context()
	for _, ns := range []string{"rds-csi", namespace} {
		if _, err := c.Admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	applySidecarRBAC(t, c)
	// The controller itself runs under its own RBAC, as in the Deployment.
	if err := applyRBAC(ctx, c.Admin, controllerRBAC); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Admin.StorageV1().StorageClasses().Create(ctx, cluster.StorageClass("rds", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rds := harness.StartRDS(t, rdssim.Config{}, routeros.ClientConfig{})
	ctrl := cluster.StartController(t, cluster.ControllerConfig{Binary: controllerBin, RDS: rds, LogDir: c.LogDir,
		Args: []string{"--kubeconfig=" + c.Kubeconfig(controllerUser)}})
	leader := []string{"--leader-election=true", "--leader-election-namespace=rds-csi"}
	prov := cluster.StartProvisioner(t, c, cluster.SidecarConfig{Binaries: bins, Socket: ctrl.Socket, User: rbacProvisioner, Args: leader})
	att := cluster.StartAttacher(t, c, cluster.SidecarConfig{Binaries: bins, Socket: ctrl.Socket, User: rbacAttacher, Args: leader})
	// Snapshots: the cluster's CRDs and snapshot-controller, and the
	// driver's csi-snapshotter under rbac-sidecars.yaml alone.
	dyn := dynamicClient(t, c)
	installSnapshotCRDs(ctx, t, dyn, c.Admin.Discovery())
	cluster.StartSnapshotController(t, c, bins)
	snapper := cluster.StartSnapshotter(t, c, cluster.SidecarConfig{Binaries: bins, Socket: ctrl.Socket, User: rbacSnapshotter, Args: leader})

	b := &bed{cluster: c, client: c.Admin, rds: rds, controller: ctrl, provisioner: prov, attacher: att}
	if err := cluster.RegisterNode(ctx, c.Admin, "node-1", "node-1", false); err != nil {
		t.Fatal(err)
	}
	b.createPVC(t, "rbac", "rds", "64Mi", false)
	pv := b.waitBound(t, "rbac")
	va, err := cluster.CreateVolumeAttachment(ctx, c.Admin, pv.Name, "node-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cluster.WaitAttached(ctx, c.Admin, va.Name, flowTimeout); err != nil {
		t.Fatal(err)
	}
	if err := c.Admin.StorageV1().VolumeAttachments().Delete(ctx, va.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = cluster.WaitGone(ctx, "VolumeAttachment "+va.Name, flowTimeout, func(ctx context.Context) (metav1.Object, error) {
		return c.Admin.StorageV1().VolumeAttachments().Get(ctx, va.Name, metav1.GetOptions{})
	})
	if err != nil {
		t.Fatal(err)
	}
	b.snapshotAndRestore(t, dyn, "rbac", "64Mi")
	b.deletePVC(t, "rbac", pv)
	leases, err := c.Admin.CoordinationV1().Leases("rds-csi").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(leases.Items) < 3 {
		t.Errorf("%d leader-election Leases in rds-csi, want one per sidecar", len(leases.Items))
	}
	for _, p := range []interface{ LogPath() string }{prov, att, snapper} {
		log, err := os.ReadFile(p.LogPath())
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range bytes.Split(log, []byte("\n")) {
			if bytes.Contains(line, []byte("forbidden")) || bytes.Contains(line, []byte("Forbidden")) {
				t.Errorf("%s: %s", filepath.Base(p.LogPath()), line)
			}
		}
	}
}
