package k8s

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rds-csi/rds-csi/test/k8s/cluster"
)

// VolumeAttachments of one volume for one node and then for a second reach
// status.attached through the real csi-attacher, and deleting them detaches.
//
// The controller does not offer PUBLISH_UNPUBLISH_VOLUME yet, so the
// attacher marks attachments attached by itself without calling the driver
// (its "trivial handler"). This test therefore proves the path and the
// helpers (RegisterNode, CreateVolumeAttachment, WaitAttached), not
// ControllerPublish; when the controller implements ControllerPublish
// (issue 6) the same steps call it, and the test must then also check the
// RDS side of each attachment.
func TestVolumeAttachments(t *testing.T) {
	b := newBed(t)
	ctx := t.Context()
	nodes := []string{"node-1", "node-2"}
	for _, n := range nodes {
		if err := cluster.RegisterNode(ctx, b.client, n, n, false); err != nil {
			t.Fatal(err)
		}
	}
	b.createPVC(t, "shared", "rds", "1Gi", false)
	pv := b.waitBound(t, "shared")

	for _, n := range nodes {
		va, err := cluster.CreateVolumeAttachment(ctx, b.client, pv.Name, n)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cluster.WaitAttached(ctx, b.client, va.Name, flowTimeout); err != nil {
			t.Fatal(err)
		}
		t.Logf("VolumeAttachment %s of %s to %s attached", va.Name, pv.Name, n)
	}
	for _, n := range nodes {
		name := cluster.VolumeAttachmentName(pv.Name, n)
		if err := b.client.StorageV1().VolumeAttachments().Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		err := cluster.WaitGone(ctx, "VolumeAttachment "+name, flowTimeout, func(ctx context.Context) (metav1.Object, error) {
			return b.client.StorageV1().VolumeAttachments().Get(ctx, name, metav1.GetOptions{})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	b.deletePVC(t, "shared", pv)
	if left := b.disks(t); len(left) != 0 {
		t.Errorf("disks left on the RDS: %v", left)
	}
}
