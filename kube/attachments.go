package kube

import (
	"context"
	"encoding/json"
	"fmt"
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

// pv returns the cached PV of volumeID.
func (w *Watcher) pv(volumeID string) (*corev1.PersistentVolume, error) {
	objs, err := w.pvs.GetIndexer().ByIndex(byVolumeHandle, volumeID)
	if err != nil {
		return nil, err
	}
	switch len(objs) {
	case 0:
		return nil, fmt.Errorf("no PersistentVolume of %s has volume handle %q", w.driver, volumeID)
	case 1:
		return objs[0].(*corev1.PersistentVolume), nil
	default:
		return nil, fmt.Errorf("%d PersistentVolumes of %s have volume handle %q", len(objs), w.driver, volumeID)
	}
}

// Attachment reports whether a VolumeAttachment of this driver attaches
// volumeID to node and, when it is being deleted, since when.
func (w *Watcher) Attachment(volumeID, node string) (exists bool, deleting time.Time) {
	pv, err := w.pv(volumeID)
	if err != nil {
		return false, time.Time{}
	}
	objs, err := w.vas.GetIndexer().ByIndex(byPV, pv.Name)
	if err != nil {
		return false, time.Time{}
	}
	for _, o := range objs {
		va := o.(*storagev1.VolumeAttachment)
		if va.Spec.NodeName != node {
			continue
		}
		if ts := va.DeletionTimestamp; ts != nil {
			return true, ts.Time
		}
		return true, time.Time{}
	}
	return false, time.Time{}
}

// NodeExists reports whether the cluster has a Node named node. The
// driver's node IDs are node names (the agent's --node-id).
func (w *Watcher) NodeExists(node string) bool {
	_, exists, err := w.nodes.GetIndexer().GetByKey(node)
	return err == nil && exists
}

// EachAttached calls fn for every VolumeAttachment of this driver whose
// status says attached and whose PV is known.
func (w *Watcher) EachAttached(fn func(volumeID, node string, since time.Time, volumeContext map[string]string)) {
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
		fn(pv.Spec.CSI.VolumeHandle, va.Spec.NodeName, va.CreationTimestamp.Time, pv.Spec.CSI.VolumeAttributes)
	}
}

// Annotate records nodes on the volume's PV (AttachedNodesAnnotation), or
// removes the record when there are none. It writes only a change.
func (w *Watcher) Annotate(ctx context.Context, volumeID string, nodes []string) error {
	pv, err := w.pv(volumeID)
	if err != nil {
		return err
	}
	want := strings.Join(nodes, ",")
	have, present := pv.Annotations[AttachedNodesAnnotation]
	if have == want && present == (len(nodes) > 0) {
		return nil
	}
	var value any // nil removes the key in a merge patch
	if len(nodes) > 0 {
		value = want
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{AttachedNodesAnnotation: value}}})
	if err != nil {
		return err
	}
	_, err = w.client.CoreV1().PersistentVolumes().Patch(ctx, pv.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	if apierrors.IsNotFound(err) {
		return nil // deleted meanwhile: nothing left to record on
	}
	if err != nil {
		return fmt.Errorf("annotating PV %s: %w", pv.Name, err)
	}
	return nil
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
