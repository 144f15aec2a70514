// Package kube is the controller's side of the Kubernetes API: a clientset,
// and the Watcher that keeps the controller's view of attachments
// (VolumeAttachments, PVs, Nodes) and records what happens on PVs and PVCs.
// Events on PVCs are kube/events, which the node agent uses without this
// package.
package kube

import (
	"k8s.io/client-go/kubernetes"

	"github.com/rds-csi/rds-csi/kube/events"
)

// ErrNotConfigured is events.ErrNotConfigured: no API server to talk to.
var ErrNotConfigured = events.ErrNotConfigured

// NewClientset returns a client of the API server events.LoadConfig finds.
func NewClientset(kubeconfig, userAgent string) (kubernetes.Interface, error) {
	cfg, err := events.LoadConfig(kubeconfig, userAgent)
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}
