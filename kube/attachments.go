package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/rds-csi/rds-csi/volume"
)

// AttachedNodesAnnotation records on a PV, for people, the nodes the
// controller has published its volume to, comma-separated in attach order;
// it is removed when the volume is detached from every node. The
// controller's state is rebuilt from VolumeAttachments, never from it.
const AttachedNodesAnnotation = "rds.csi.dev/attached-nodes"

// Index names of the Watcher's informers.
const (
	byVolumeHandle = "volumeHandle"
	byPV           = "pv"
)

// PVCEvents records an Event on a PVC without waiting (*events.Recorder);
// an empty namespace and name mean the claim is unknown.
type PVCEvents interface {
	PVC(namespace, name, eventType, reason, message string)
}

// Watcher is the controller's view of the cluster: informers on
// VolumeAttachments, PersistentVolumes and Nodes, read from their caches,
// never listed per call. It also records what happens to a volume on its
// PV (an annotation) and its PVC (Events, through an events.Recorder).
type Watcher struct {
	client   kubernetes.Interface
	driver   string
	events   PVCEvents
	factory  informers.SharedInformerFactory
	vas      cache.SharedIndexInformer
	pvs      cache.SharedIndexInformer
	nodes    cache.SharedIndexInformer
	stopping context.CancelFunc
}

// NewWatcher watches the attachments of driverName; events go to the PVCs
// through recorder. Start it before use.
func NewWatcher(client kubernetes.Interface, driverName string, recorder PVCEvents) (*Watcher, error) {
	// No resync: every decision reads the cache when it is made.
	f := informers.NewSharedInformerFactory(client, 0)
	w := &Watcher{
		client:  client,
		driver:  driverName,
		events:  recorder,
		factory: f,
		vas:     f.Storage().V1().VolumeAttachments().Informer(),
		pvs:     f.Core().V1().PersistentVolumes().Informer(),
		nodes:   f.Core().V1().Nodes().Informer(),
	}
	if err := w.pvs.AddIndexers(cache.Indexers{byVolumeHandle: w.volumeHandleIndex}); err != nil {
		return nil, err
	}
	if err := w.vas.AddIndexers(cache.Indexers{byPV: w.pvIndex}); err != nil {
		return nil, err
	}
	return w, nil
}

// volumeHandleIndex indexes this driver's PVs by volume handle (volume ID).
func (w *Watcher) volumeHandleIndex(obj any) ([]string, error) {
	pv, ok := obj.(*corev1.PersistentVolume)
	if !ok || pv.Spec.CSI == nil || pv.Spec.CSI.Driver != w.driver {
		return nil, nil
	}
	return []string{pv.Spec.CSI.VolumeHandle}, nil
}

// pvIndex indexes this driver's VolumeAttachments by PV name.
func (w *Watcher) pvIndex(obj any) ([]string, error) {
	va, ok := obj.(*storagev1.VolumeAttachment)
	if !ok || va.Spec.Attacher != w.driver || va.Spec.Source.PersistentVolumeName == nil {
		return nil, nil
	}
	return []string{*va.Spec.Source.PersistentVolumeName}, nil
}

// Start runs the informers until ctx ends and waits, at most syncTimeout,
// for their caches to fill: the controller's state is rebuilt from them.
func (w *Watcher) Start(ctx context.Context, syncTimeout time.Duration) error {
	ctx, w.stopping = context.WithCancel(ctx)
	w.factory.Start(ctx.Done())
	syncCtx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	if !cache.WaitForCacheSync(syncCtx.Done(), w.vas.HasSynced, w.pvs.HasSynced, w.nodes.HasSynced) {
		return fmt.Errorf("the caches of VolumeAttachments, PersistentVolumes and Nodes did not fill within %s: is the API reachable, and does the controller's ClusterRole allow listing and watching them?", syncTimeout)
	}
	return nil
}

// Stop stops the informers and waits for them.
func (w *Watcher) Stop() {
	if w.stopping != nil {
		w.stopping()
	}
	w.factory.Shutdown()
}

// OnNodeDeleted calls fn with the name of every Node deleted from now on.
func (w *Watcher) OnNodeDeleted(fn func(node string)) error {
	_, err := w.nodes.AddEventHandler(cache.ResourceEventHandlerFuncs{
		DeleteFunc: func(obj any) {
			if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			if n, ok := obj.(*corev1.Node); ok {
				fn(n.Name)
			}
		},
	})
	return err
}

// pvsOf returns the cached PVs of this driver whose volume handle is
// volumeID: normally one, but nothing stops two static PVs from naming one
// volume.
func (w *Watcher) pvsOf(volumeID string) ([]*corev1.PersistentVolume, error) {
	objs, err := w.pvs.GetIndexer().ByIndex(byVolumeHandle, volumeID)
	if err != nil {
		return nil, err
	}
	out := make([]*corev1.PersistentVolume, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.(*corev1.PersistentVolume))
	}
	slices.SortFunc(out, func(a, b *corev1.PersistentVolume) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// pv returns the cached PV of volumeID: the one bound to a claim when
// several have its handle.
func (w *Watcher) pv(volumeID string) (*corev1.PersistentVolume, error) {
	pvs, err := w.pvsOf(volumeID)
	if err != nil {
		return nil, err
	}
	if len(pvs) == 0 {
		return nil, fmt.Errorf("no PersistentVolume of %s has volume handle %q", w.driver, volumeID)
	}
	for _, pv := range pvs {
		if pv.Spec.ClaimRef != nil {
			return pv, nil
		}
	}
	return pvs[0], nil
}

// attachmentsOf returns the VolumeAttachments of this driver of every PV
// of volumeID, each with its PV, and whether any PV has the handle.
func (w *Watcher) attachmentsOf(volumeID string) ([]*storagev1.VolumeAttachment, []*corev1.PersistentVolume, bool, error) {
	pvs, err := w.pvsOf(volumeID)
	if err != nil || len(pvs) == 0 {
		return nil, nil, false, err
	}
	var vas []*storagev1.VolumeAttachment
	var of []*corev1.PersistentVolume
	for _, pv := range pvs {
		objs, err := w.vas.GetIndexer().ByIndex(byPV, pv.Name)
		if err != nil {
			return nil, nil, true, err
		}
		for _, o := range objs {
			vas = append(vas, o.(*storagev1.VolumeAttachment))
			of = append(of, pv)
		}
	}
	return vas, of, true, nil
}

// Attachment reports whether a VolumeAttachment of this driver attaches
// volumeID to node (through any PV with its volume handle) and, when every
// such VolumeAttachment is being deleted, since when. When it cannot tell,
// it reports one that exists: an attachment is released only on positive
// evidence that it is gone.
func (w *Watcher) Attachment(volumeID, node string) (exists bool, deleting time.Time) {
	vas, _, known, err := w.attachmentsOf(volumeID)
	if err != nil || !known {
		// No PV of this driver has the handle (a PV deleted, a cache
		// behind) or the cache failed: nobody can tell.
		klog.InfoS("Cannot tell whether the volume is attached to the node: taken as attached", "volumeID", volumeID, "node", node, "err", err)
		return true, time.Time{}
	}
	for _, va := range vas {
		if va.Spec.NodeName != node {
			continue
		}
		if va.DeletionTimestamp == nil {
			return true, time.Time{}
		}
		if !exists || va.DeletionTimestamp.Time.Before(deleting) {
			exists, deleting = true, va.DeletionTimestamp.Time
		}
	}
	return exists, deleting
}

// LiveAttachments lists the VolumeAttachments of this driver of volumeID
// (through every PV with its volume handle) that are not being deleted:
// attached, or being attached. Without a PV there are none.
func (w *Watcher) LiveAttachments(volumeID string) ([]volume.Attachment, error) {
	vas, pvs, _, err := w.attachmentsOf(volumeID)
	if err != nil {
		return nil, err
	}
	var out []volume.Attachment
	for i, va := range vas {
		if va.DeletionTimestamp != nil {
			continue
		}
		out = append(out, clusterAttachment(va, pvs[i]))
	}
	return out, nil
}

func clusterAttachment(va *storagev1.VolumeAttachment, pv *corev1.PersistentVolume) volume.Attachment {
	var recorded []string
	if v := pv.Annotations[AttachedNodesAnnotation]; v != "" {
		recorded = strings.Split(v, ",")
	}
	return volume.Attachment{
		Node:          va.Spec.NodeName,
		Name:          va.Name,
		Created:       va.CreationTimestamp.Time,
		Attached:      va.Status.Attached,
		MultiWriter:   slices.Contains(pv.Spec.AccessModes, corev1.ReadWriteMany),
		VolumeContext: pv.Spec.CSI.VolumeAttributes,
		Recorded:      recorded,
	}
}

// NodeExists reports whether the cluster has a Node named node. The
// driver's node IDs are node names (the agent's --node-id).
func (w *Watcher) NodeExists(node string) bool {
	_, exists, err := w.nodes.GetIndexer().GetByKey(node)
	return err == nil && exists
}

// EachAttached calls fn for every VolumeAttachment of this driver whose
// status says attached and whose PV is known.
func (w *Watcher) EachAttached(fn func(volumeID string, a volume.Attachment)) {
	for _, o := range w.vas.GetStore().List() {
		va := o.(*storagev1.VolumeAttachment)
		if va.Spec.Attacher != w.driver || !va.Status.Attached || va.Spec.Source.PersistentVolumeName == nil {
			continue
		}
		obj, exists, err := w.pvs.GetStore().GetByKey(*va.Spec.Source.PersistentVolumeName)
		if err != nil || !exists {
			continue
		}
		pv := obj.(*corev1.PersistentVolume)
		if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != w.driver {
			continue
		}
		fn(pv.Spec.CSI.VolumeHandle, clusterAttachment(va, pv))
	}
}

// Annotate records nodes on the volume's PVs (AttachedNodesAnnotation), or
// removes the record when there are none. The merge patch is idempotent and
// always sent: the informer's cache may not show this process's last write
// yet, so it cannot tell that nothing changed.
func (w *Watcher) Annotate(ctx context.Context, volumeID string, nodes []string) error {
	pvs, err := w.pvsOf(volumeID)
	if err != nil {
		return err
	}
	if len(pvs) == 0 {
		return fmt.Errorf("no PersistentVolume of %s has volume handle %q", w.driver, volumeID)
	}
	var value any // nil removes the key in a merge patch
	if len(nodes) > 0 {
		value = strings.Join(nodes, ",")
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{AttachedNodesAnnotation: value}}})
	if err != nil {
		return err
	}
	var errs []error
	for _, pv := range pvs {
		_, err = w.client.CoreV1().PersistentVolumes().Patch(ctx, pv.Name, types.MergePatchType, patch, metav1.PatchOptions{})
		if err != nil && !apierrors.IsNotFound(err) { // deleted meanwhile: nothing left to record on
			errs = append(errs, fmt.Errorf("annotating PV %s: %w", pv.Name, err))
		}
	}
	return errors.Join(errs...)
}

// Event records an event on the PVC the volume's PV is bound to. A volume
// without a known PV or claim is dropped and counted by the recorder.
func (w *Watcher) Event(volumeID, eventType, reason, message string) {
	var namespace, name string
	pv, err := w.pv(volumeID)
	switch {
	case err != nil:
		klog.V(2).InfoS("No PV found for an event", "volumeID", volumeID, "reason", reason, "err", err)
	case pv.Spec.ClaimRef != nil:
		namespace, name = pv.Spec.ClaimRef.Namespace, pv.Spec.ClaimRef.Name
	}
	w.events.PVC(namespace, name, eventType, reason, message)
}
