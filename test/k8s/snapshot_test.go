package k8s

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/rds-csi/rds-csi/test/k8s/cluster"
)

var (
	snapshotClassesGVR = schema.GroupVersionResource{Group: "snapshot.storage.k8s.io", Version: "v1", Resource: "volumesnapshotclasses"}
	snapshotsGVR       = schema.GroupVersionResource{Group: "snapshot.storage.k8s.io", Version: "v1", Resource: "volumesnapshots"}
)

// dynamicClient is the admin's dynamic client, for the snapshot kinds
// (client-go has no typed client for them).
func dynamicClient(t *testing.T, c *cluster.Cluster) dynamic.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig(cluster.AdminUser))
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return dyn
}

// snapshotAndRestore takes a VolumeSnapshot of claim through the
// snapshot-controller and csi-snapshotter, checks the RDS holds it as an
// unexported copy, restores it into a claim twice the size through the
// provisioner, and deletes the restored claim and the snapshot, which must
// leave the RDS.
func (b *bed) snapshotAndRestore(t *testing.T, dyn dynamic.Interface, claim, size string) {
	t.Helper()
	ctx := t.Context()
	class := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
		"metadata": map[string]any{"name": "rds-snapshots"},
		"driver":   cluster.DriverName, "deletionPolicy": "Delete",
	}}
	if _, err := dyn.Resource(snapshotClassesGVR).Create(ctx, class, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	snapName := claim + "-snap"
	snap := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
		"metadata": map[string]any{"name": snapName, "namespace": namespace},
		"spec": map[string]any{
			"volumeSnapshotClassName": "rds-snapshots",
			"source":                  map[string]any{"persistentVolumeClaimName": claim},
		},
	}}
	snaps := dyn.Resource(snapshotsGVR).Namespace(namespace)
	if _, err := snaps.Create(ctx, snap, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var handle string
	for deadline := time.Now().Add(flowTimeout); ; time.Sleep(200 * time.Millisecond) {
		got, err := snaps.Get(ctx, snapName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ready, _, _ := unstructured.NestedBool(got.Object, "status", "readyToUse")
		if ready {
			content, _, _ := unstructured.NestedString(got.Object, "status", "boundVolumeSnapshotContentName")
			handle = b.snapshotHandle(t, dyn, content)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("VolumeSnapshot %s not ready after %s: %v", snapName, flowTimeout, got.Object["status"])
		}
	}
	t.Logf("VolumeSnapshot %s ready after %s as %s", snapName, time.Since(start).Round(10*time.Millisecond), handle)
	disk, found := b.disk(t, handle)
	if !found || disk.Export || disk.NQN != "" {
		t.Fatalf("the RDS holds snapshot %s as %+v (found %v): want an unexported copy", handle, disk, found)
	}

	restored := claim + "-restored"
	pvc := cluster.PVC(restored, "rds", size, false)
	pvc.Spec.DataSource = &corev1.TypedLocalObjectReference{APIGroup: ptr("snapshot.storage.k8s.io"), Kind: "VolumeSnapshot", Name: snapName}
	q := resource.MustParse(size)
	q.Add(q)
	pvc.Spec.Resources.Requests[corev1.ResourceStorage] = q
	if _, err := b.client.CoreV1().PersistentVolumeClaims(namespace).Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pv := b.waitBound(t, restored)
	if got := pv.Spec.Capacity[corev1.ResourceStorage]; got.Cmp(q) != 0 {
		t.Errorf("restored PV has %s, asked for %s", got.String(), q.String())
	}
	if disk, found := b.disk(t, pv.Spec.CSI.VolumeHandle); !found || disk.Size != q.Value() || !disk.Export {
		t.Errorf("the RDS holds the restored volume as %+v (found %v), want %d bytes, exported", disk, found, q.Value())
	}
	b.deletePVC(t, restored, pv)

	if err := snaps.Delete(ctx, snapName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(flowTimeout); ; time.Sleep(200 * time.Millisecond) {
		if _, found := b.disk(t, handle); !found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("snapshot %s still on the RDS %s after its VolumeSnapshot was deleted", handle, flowTimeout)
		}
	}
	for _, slot := range b.disks(t) {
		if strings.HasPrefix(slot, "snap-") {
			t.Errorf("snapshot disk %s left on the RDS", slot)
		}
	}
}

// snapshotHandle reads the snapshot ID from a VolumeSnapshotContent.
func (b *bed) snapshotHandle(t *testing.T, dyn dynamic.Interface, content string) string {
	t.Helper()
	gvr := schema.GroupVersionResource{Group: "snapshot.storage.k8s.io", Version: "v1", Resource: "volumesnapshotcontents"}
	got, err := dyn.Resource(gvr).Get(t.Context(), content, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	handle, _, _ := unstructured.NestedString(got.Object, "status", "snapshotHandle")
	if handle == "" {
		t.Fatalf("VolumeSnapshotContent %s has no snapshot handle: %v", content, got.Object["status"])
	}
	return handle
}

func ptr[T any](v T) *T { return &v }
