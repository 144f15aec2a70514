package k8s

import (
	"context"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rds-csi/rds-csi/test/k8s/cluster"
)

// A controller that dies mid-way loses nothing. It is killed (SIGKILL, as a
// crash or an evicted node would) with two claims bound; while it is away
// one claim is deleted and a new one is made. When it is back: the new claim
// is provisioned exactly once, the claim deleted meanwhile has its disk
// removed, and the claim that survived the restart is deleted normally —
// after which the RDS holds no disk at all.
func TestControllerRestart(t *testing.T) {
	b := newBed(t)
	ctx := t.Context()
	b.createPVC(t, "kept", "rds", "1Gi", false)
	b.createPVC(t, "deleted-while-down", "rds", "1Gi", false)
	kept := b.waitBound(t, "kept")
	deletedWhileDown := b.waitBound(t, "deleted-while-down")

	if err := b.controller.Kill(); err != nil {
		t.Fatal(err)
	}
	t.Log("controller killed")
	// csi-provisioner notices the lost socket at its next call (its gRPC
	// channel just goes idle) and exits; the test bed starts it again, as
	// the kubelet would, and the new one waits for the socket.

	b.createPVC(t, "created-while-down", "rds", "1Gi", false)
	if err := b.client.CoreV1().PersistentVolumeClaims(namespace).Delete(ctx, "deleted-while-down", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// Nothing can provision or delete while the controller is away.
	if _, found := b.disk(t, deletedWhileDown.Spec.CSI.VolumeHandle); !found {
		t.Fatal("the disk of deleted-while-down vanished while no controller ran")
	}

	if err := b.controller.Start(); err != nil {
		t.Fatal(err)
	}
	if err := b.controller.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	t.Log("controller started again")

	createdWhileDown := b.waitBound(t, "created-while-down")
	err := cluster.WaitGone(ctx, "PV "+deletedWhileDown.Name, flowTimeout, func(ctx context.Context) (metav1.Object, error) {
		return b.client.CoreV1().PersistentVolumes().Get(ctx, deletedWhileDown.Name, metav1.GetOptions{})
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{kept.Spec.CSI.VolumeHandle, createdWhileDown.Spec.CSI.VolumeHandle}
	slices.Sort(want)
	got := b.disks(t)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("disks on the RDS after the restart: %v, want exactly those of kept and created-while-down: %v", got, want)
	}
	if files := b.files(t, deletedWhileDown.Spec.CSI.VolumeHandle); len(files) != 0 {
		t.Errorf("the backing file of deleted-while-down is still on the RDS: %+v", files)
	}

	b.deletePVC(t, "kept", kept)
	b.deletePVC(t, "created-while-down", createdWhileDown)
	if left := b.disks(t); len(left) != 0 {
		t.Errorf("disks left on the RDS: %v", left)
	}
	t.Logf("csi-provisioner was started %d times, csi-attacher %d times", b.provisioner.Starts(), b.attacher.Starts())
}
