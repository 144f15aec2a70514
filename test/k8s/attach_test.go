package k8s

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rds-csi/rds-csi/controller"
	"github.com/rds-csi/rds-csi/controller/routeros"
	"github.com/rds-csi/rds-csi/kube"
	"github.com/rds-csi/rds-csi/test/k8s/cluster"
	"github.com/rds-csi/rds-csi/volume"
)

// A ReadWriteOnce volume through the real csi-attacher and
// ControllerPublish, with target fencing on: node-1 attaches; node-2 is
// refused, with the holder named in the VolumeAttachment's status and an
// AttachmentConflict Event on the PVC; the RDS admits node-1's host NQN
// only, and the PV records node-1. The controller is then killed and
// started again: the new process refuses node-2 too, which it can only do
// by rebuilding its state from the VolumeAttachments. Once node-1's
// attachment is deleted, node-2 attaches (the attacher retries) and the
// RDS admits node-2 only.
func TestReadWriteOnceAttachesToOneNodeAtATime(t *testing.T) {
	b := newBed(t)
	ctx := t.Context()
	b.registerNodes(t, "node-1", "node-2")
	b.createPVC(t, "rwo", "rds", "1Gi", false)
	pv := b.waitBound(t, "rwo")
	slot := pv.Spec.CSI.VolumeHandle

	b.attach(t, pv.Name, "node-1")
	b.wantAllowed(t, slot, "node-1")
	b.wantRecorded(t, pv.Name, "node-1")

	if _, err := cluster.CreateVolumeAttachment(ctx, b.client, pv.Name, "node-2"); err != nil {
		t.Fatal(err)
	}
	b.waitAttachError(t, pv.Name, "node-2", "attached to node node-1")
	b.waitEvents(t, "rwo", "AttachmentConflict", 1)
	b.wantAllowed(t, slot, "node-1")

	if err := b.controller.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := b.controller.Start(); err != nil {
		t.Fatal(err)
	}
	if err := b.controller.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	t.Log("controller restarted")
	// Each process records its own Event object: a second one is the new
	// process refusing node-2.
	b.waitEvents(t, "rwo", "AttachmentConflict", 2)
	b.wantAllowed(t, slot, "node-1")
	if va := b.va(t, pv.Name, "node-2"); va.Status.Attached {
		t.Fatal("node-2 attached while node-1 holds the ReadWriteOnce volume")
	}

	b.detach(t, pv.Name, "node-1")
	if _, err := cluster.WaitAttached(ctx, b.client, cluster.VolumeAttachmentName(pv.Name, "node-2"), flowTimeout); err != nil {
		t.Fatal(err)
	}
	b.wantAllowed(t, slot, "node-2")
	b.wantRecorded(t, pv.Name, "node-2")
	b.waitEvents(t, "rwo", "VolumeDetached", 1)
	b.waitEvents(t, "rwo", "VolumeAttached", 2)

	b.detach(t, pv.Name, "node-2")
	b.wantAllowed(t, slot)
	b.wantRecorded(t, pv.Name)
	b.deletePVC(t, "rwo", pv)
	if left := b.disks(t); len(left) != 0 {
		t.Errorf("disks left on the RDS: %v", left)
	}
}

// A ReadWriteMany block volume (a KubeVirt live migration): node-a and
// node-b attach together, the RDS admits both; node-c is refused (at most
// two nodes). node-a detaching completes the migration: the RDS keeps
// admitting node-b, and the PVC has MigrationStarted and MigrationCompleted.
// Then node-c attaches beside node-b.
func TestReadWriteManyBlockAttachesTwoNodesForAMigration(t *testing.T) {
	b := newBed(t)
	ctx := t.Context()
	b.registerNodes(t, "node-a", "node-b", "node-c")
	claim := cluster.PVC("vm-disk", "rds", "1Gi", true)
	claim.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}
	claim.Spec.Resources.Requests[corev1.ResourceStorage] = resource.MustParse("1Gi")
	if _, err := b.client.CoreV1().PersistentVolumeClaims(namespace).Create(ctx, claim, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pv := b.waitBound(t, "vm-disk")
	slot := pv.Spec.CSI.VolumeHandle

	b.attach(t, pv.Name, "node-a")
	b.attach(t, pv.Name, "node-b")
	b.wantAllowed(t, slot, "node-a", "node-b")
	b.wantRecorded(t, pv.Name, "node-a", "node-b")
	b.waitEvents(t, "vm-disk", "MigrationStarted", 1)

	if _, err := cluster.CreateVolumeAttachment(ctx, b.client, pv.Name, "node-c"); err != nil {
		t.Fatal(err)
	}
	b.waitAttachError(t, pv.Name, "node-c", "at most 2 nodes")
	b.wantAllowed(t, slot, "node-a", "node-b")

	b.detach(t, pv.Name, "node-a")
	b.waitEvents(t, "vm-disk", "MigrationCompleted", 1)
	if _, err := cluster.WaitAttached(ctx, b.client, cluster.VolumeAttachmentName(pv.Name, "node-c"), flowTimeout); err != nil {
		t.Fatal(err)
	}
	b.wantAllowed(t, slot, "node-b", "node-c")
	b.wantRecorded(t, pv.Name, "node-b", "node-c")

	b.detach(t, pv.Name, "node-b")
	b.detach(t, pv.Name, "node-c")
	b.wantAllowed(t, slot)
	b.deletePVC(t, "vm-disk", pv)
}

// registerNodes registers Nodes whose node IDs are their names.
func (b *bed) registerNodes(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if err := cluster.RegisterNode(t.Context(), b.client, n, n, false); err != nil {
			t.Fatal(err)
		}
	}
}

// attach creates the VolumeAttachment of pv on node and waits until it is
// attached.
func (b *bed) attach(t *testing.T, pv, node string) {
	t.Helper()
	va, err := cluster.CreateVolumeAttachment(t.Context(), b.client, pv, node)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cluster.WaitAttached(t.Context(), b.client, va.Name, flowTimeout); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s attached to %s", pv, node)
}

// detach deletes the VolumeAttachment of pv on node and waits until it is
// gone: the attacher removes its finalizer after ControllerUnpublish.
func (b *bed) detach(t *testing.T, pv, node string) {
	t.Helper()
	ctx := t.Context()
	name := cluster.VolumeAttachmentName(pv, node)
	if err := b.client.StorageV1().VolumeAttachments().Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err := cluster.WaitGone(ctx, "VolumeAttachment "+name, flowTimeout, func(ctx context.Context) (metav1.Object, error) {
		return b.client.StorageV1().VolumeAttachments().Get(ctx, name, metav1.GetOptions{})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s detached from %s", pv, node)
}

// va reads the VolumeAttachment of pv on node.
func (b *bed) va(t *testing.T, pv, node string) *storagev1.VolumeAttachment {
	t.Helper()
	va, err := b.client.StorageV1().VolumeAttachments().Get(t.Context(), cluster.VolumeAttachmentName(pv, node), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return va
}

// waitAttachError waits until the attacher reports an attach error
// mentioning want on the VolumeAttachment of pv on node.
func (b *bed) waitAttachError(t *testing.T, pv, node, want string) {
	t.Helper()
	name := cluster.VolumeAttachmentName(pv, node)
	err := cluster.WaitFor(t.Context(), flowTimeout, fmt.Sprintf("an attach error on %s mentioning %q", node, want), func(ctx context.Context) (bool, string, error) {
		va, err := b.client.StorageV1().VolumeAttachments().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		if va.Status.Attached {
			return false, "", fmt.Errorf("%s attached", node)
		}
		if e := va.Status.AttachError; e != nil {
			return strings.Contains(e.Message, want), e.Message, nil
		}
		return false, "no attach error yet", nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// wantAllowed checks the host NQNs the simulated RDS admits to the disk:
// those of nodes, or nobody (the controller's FencedHostNQN) without nodes.
func (b *bed) wantAllowed(t *testing.T, slot string, nodes ...string) {
	t.Helper()
	disk, found := b.disk(t, slot)
	if !found {
		t.Fatalf("disk %s is gone", slot)
	}
	got := routeros.SplitAllowedHosts(disk.AllowHostName)
	want := []string{controller.FencedHostNQN}
	if len(nodes) > 0 {
		want = want[:0]
		for _, n := range nodes {
			want = append(want, volume.HostNQN(n))
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("the RDS admits %q to %s, want %q", got, slot, want)
	}
}

// wantRecorded checks the PV's record of the attached nodes.
func (b *bed) wantRecorded(t *testing.T, pvName string, nodes ...string) {
	t.Helper()
	pv, err := b.client.CoreV1().PersistentVolumes().Get(t.Context(), pvName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, ok := pv.Annotations[kube.AttachedNodesAnnotation]
	if want := strings.Join(nodes, ","); got != want || ok != (len(nodes) > 0) {
		t.Fatalf("PV %s records %s=%q (present %v), want %q", pvName, kube.AttachedNodesAnnotation, got, ok, want)
	}
}

// waitEvents waits until the claim has at least n Event objects of reason.
func (b *bed) waitEvents(t *testing.T, claim, reason string, n int) {
	t.Helper()
	err := cluster.WaitFor(t.Context(), flowTimeout, fmt.Sprintf("%d %s event(s) on PVC %s", n, reason, claim), func(ctx context.Context) (bool, string, error) {
		evs, err := b.client.CoreV1().Events(namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		var seen []string
		count := 0
		for _, e := range evs.Items {
			if e.InvolvedObject.Kind == "PersistentVolumeClaim" && e.InvolvedObject.Name == claim {
				seen = append(seen, e.Reason)
				if e.Reason == reason {
					count++
				}
			}
		}
		return count >= n, fmt.Sprintf("events on the claim: %v", seen), nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Deleting a Node releases what it held: node-1 holds a ReadWriteOnce
// volume; once the Node object of node-1 is deleted, the controller
// (watching Nodes, with no other call to prompt it) unpublishes node-1: the
// RDS admits nobody and the PV record is cleared. node-2 then attaches, and
// node-1's VolumeAttachment, deleted afterwards, detaches without an error.
func TestADeletedNodeReleasesItsAttachments(t *testing.T) {
	b := newBed(t)
	ctx := t.Context()
	b.registerNodes(t, "node-1", "node-2")
	b.createPVC(t, "held", "rds", "1Gi", false)
	pv := b.waitBound(t, "held")
	slot := pv.Spec.CSI.VolumeHandle
	b.attach(t, pv.Name, "node-1")

	if err := b.client.CoreV1().Nodes().Delete(ctx, "node-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err := cluster.WaitFor(ctx, flowTimeout, "the RDS to stop admitting the deleted node-1", func(context.Context) (bool, string, error) {
		disk, found := b.disk(t, slot)
		if !found {
			return false, "", fmt.Errorf("disk %s is gone", slot)
		}
		return disk.AllowHostName == controller.FencedHostNQN, "allowed hosts " + disk.AllowHostName, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The Event follows the PV's annotation.
	b.waitEvents(t, "held", "VolumeDetached", 1)
	b.wantRecorded(t, pv.Name)

	b.attach(t, pv.Name, "node-2")
	b.wantAllowed(t, slot, "node-2")
	b.detach(t, pv.Name, "node-1")
	b.wantAllowed(t, slot, "node-2")
	b.detach(t, pv.Name, "node-2")
	b.deletePVC(t, "held", pv)
}
