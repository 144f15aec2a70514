package cluster

import (
	"context"
	"crypto/sha256"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// pollInterval paces every wait of this package.
const pollInterval = 200 * time.Millisecond

// WaitFor polls cond until it reports done, returns an error, or timeout
// passes. cond describes the state it saw, so that a timeout says what was
// waited for and what was last seen instead of only "timed out".
func WaitFor(ctx context.Context, timeout time.Duration, what string, cond func(ctx context.Context) (done bool, state string, err error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	state := "nothing seen yet"
	for {
		done, s, err := cond(ctx)
		if s != "" {
			state = s
		}
		switch {
		case err != nil && ctx.Err() == nil:
			return fmt.Errorf("waiting for %s: %w", what, err)
		case done:
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not within %s; last seen: %s", what, timeout, state)
		case <-tick.C:
		}
	}
}

// StorageClass returns a StorageClass of the rds-csi driver that provisions
// at once (no scheduler runs) and deletes the volume with its PVC.
func StorageClass(name string, parameters map[string]string) *storagev1.StorageClass {
	reclaim := corev1.PersistentVolumeReclaimDelete
	binding := storagev1.VolumeBindingImmediate
	expand := true
	return &storagev1.StorageClass{
		ObjectMeta:           metav1.ObjectMeta{Name: name},
		Provisioner:          DriverName,
		Parameters:           parameters,
		ReclaimPolicy:        &reclaim,
		VolumeBindingMode:    &binding,
		AllowVolumeExpansion: &expand,
	}
}

// PVC returns a ReadWriteOnce claim of size (a quantity: "1Gi") on
// storageClass, for a filesystem or, with block, a raw block volume.
func PVC(name, storageClass, size string, block bool) *corev1.PersistentVolumeClaim {
	mode := corev1.PersistentVolumeFilesystem
	if block {
		mode = corev1.PersistentVolumeBlock
	}
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: &storageClass,
			VolumeMode:       &mode,
			Resources: corev1.VolumeResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)},
			},
		},
	}
}

// WaitBound waits until the claim is Bound and returns its PersistentVolume.
func WaitBound(ctx context.Context, cs kubernetes.Interface, namespace, claim string, timeout time.Duration) (*corev1.PersistentVolume, error) {
	var pv *corev1.PersistentVolume
	err := WaitFor(ctx, timeout, fmt.Sprintf("PVC %s/%s bound", namespace, claim), func(ctx context.Context) (bool, string, error) {
		pvc, err := cs.CoreV1().PersistentVolumeClaims(namespace).Get(ctx, claim, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		state := fmt.Sprintf("phase %s, volume %q, annotations %v", pvc.Status.Phase, pvc.Spec.VolumeName, pvc.Annotations)
		if pvc.Status.Phase != corev1.ClaimBound {
			return false, state, nil
		}
		pv, err = cs.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
		if err != nil {
			return false, state + "; PV: " + err.Error(), nil
		}
		return true, state, nil
	})
	return pv, err
}

// WaitGone waits until get reports NotFound.
func WaitGone(ctx context.Context, what string, timeout time.Duration, get func(ctx context.Context) (metav1.Object, error)) error {
	return WaitFor(ctx, timeout, what+" gone", func(ctx context.Context) (bool, string, error) {
		obj, err := get(ctx)
		switch {
		case apierrors.IsNotFound(err):
			return true, "", nil
		case err != nil:
			return false, err.Error(), nil
		default:
			return false, fmt.Sprintf("still there: deletion %v, finalizers %v", obj.GetDeletionTimestamp(), obj.GetFinalizers()), nil
		}
	})
}

// RegisterNode creates what a kubelet and the rds-csi node agent's
// registration would: a Node and its CSINode naming the driver's node ID
// (the agent's --node-id, the node name in production). With
// controllerAttach, the Node says its volumes are attached by the
// attach-detach controller, which then creates VolumeAttachments for Pods
// bound to it.
func RegisterNode(ctx context.Context, cs kubernetes.Interface, name, nodeID string, controllerAttach bool) error {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if controllerAttach {
		node.Annotations = map[string]string{"volumes.kubernetes.io/controller-managed-attach-detach": "true"}
	}
	if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating node %s: %w", name, err)
	}
	csiNode := &storagev1.CSINode{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       storagev1.CSINodeSpec{Drivers: []storagev1.CSINodeDriver{{Name: DriverName, NodeID: nodeID}}},
	}
	if _, err := cs.StorageV1().CSINodes().Create(ctx, csiNode, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating CSINode %s: %w", name, err)
	}
	return nil
}

// VolumeAttachmentName is the name the attach-detach controller gives the
// attachment of pv to node, so that a test's attachment is the one a Pod
// would have made.
func VolumeAttachmentName(pv, node string) string {
	return fmt.Sprintf("csi-%x", sha256.Sum256([]byte(pv+DriverName+node)))
}

// CreateVolumeAttachment asks for pv to be attached to node, as the
// attach-detach controller does for a Pod scheduled there.
func CreateVolumeAttachment(ctx context.Context, cs kubernetes.Interface, pv, node string) (*storagev1.VolumeAttachment, error) {
	va := &storagev1.VolumeAttachment{
		ObjectMeta: metav1.ObjectMeta{Name: VolumeAttachmentName(pv, node)},
		Spec: storagev1.VolumeAttachmentSpec{
			Attacher: DriverName,
			NodeName: node,
			Source:   storagev1.VolumeAttachmentSource{PersistentVolumeName: &pv},
		},
	}
	return cs.StorageV1().VolumeAttachments().Create(ctx, va, metav1.CreateOptions{})
}

// WaitAttached waits until the attachment's status.attached is true and
// returns it. An attach error the attacher reported is part of the timeout
// error; the attacher retries, so it does not end the wait.
func WaitAttached(ctx context.Context, cs kubernetes.Interface, name string, timeout time.Duration) (*storagev1.VolumeAttachment, error) {
	var va *storagev1.VolumeAttachment
	err := WaitFor(ctx, timeout, "VolumeAttachment "+name+" attached", func(ctx context.Context) (bool, string, error) {
		got, err := cs.StorageV1().VolumeAttachments().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		va = got
		state := fmt.Sprintf("attached=%v", got.Status.Attached)
		if e := got.Status.AttachError; e != nil {
			state += fmt.Sprintf(", attach error %q", e.Message)
		}
		return got.Status.Attached, state, nil
	})
	return va, err
}
