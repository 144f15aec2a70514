package kube

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/rds-csi/rds-csi/kube/events"
)

// EventsAPI is events.API over a clientset: the controller records its
// Events through the clientset it watches the cluster with (the agent,
// which has no clientset, uses events.NewAPI).
func EventsAPI(client kubernetes.Interface) events.API { return clientsetEvents{client} }

type clientsetEvents struct{ c kubernetes.Interface }

func (a clientsetEvents) GetPVC(ctx context.Context, namespace, name string) (*corev1.PersistentVolumeClaim, error) {
	// resourceVersion=0: the API server's cache will do, only the UID is
	// needed.
	return a.c.CoreV1().PersistentVolumeClaims(namespace).Get(ctx, name, metav1.GetOptions{ResourceVersion: "0"})
}

func (a clientsetEvents) CreateEvent(ctx context.Context, e *corev1.Event) (*corev1.Event, error) {
	return a.c.CoreV1().Events(e.Namespace).Create(ctx, e, metav1.CreateOptions{})
}

func (a clientsetEvents) UpdateEvent(ctx context.Context, e *corev1.Event) (*corev1.Event, error) {
	return a.c.CoreV1().Events(e.Namespace).Update(ctx, e, metav1.UpdateOptions{})
}

func (a clientsetEvents) PatchEvent(ctx context.Context, e *corev1.Event, patch []byte) (*corev1.Event, error) {
	return a.c.CoreV1().Events(e.Namespace).Patch(ctx, e.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
}
