// Package kube is the driver's side of the Kubernetes API: a clientset, and
// Events recorded on the objects operators look at (PVCs) from one
// long-lived recorder. Nothing here is needed to serve volumes: callers run
// on without it when no API is configured.
package kube

import (
	"errors"
	"fmt"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// ErrNotConfigured means there is no API to talk to: the process runs
// outside a cluster (KUBERNETES_SERVICE_HOST is unset) and no kubeconfig was
// given, as on a bare-metal node run by systemd.
var ErrNotConfigured = errors.New("no Kubernetes API configured: not running in a cluster and no kubeconfig given")

// NewClientset returns a client of the API server the kubeconfig file names
// or, when kubeconfig is empty, of the cluster the process runs in (through
// its service account). userAgent names the component in the API server's
// logs and audit.
func NewClientset(kubeconfig, userAgent string) (kubernetes.Interface, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
		if errors.Is(err, rest.ErrNotInCluster) {
			return nil, ErrNotConfigured
		}
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client configuration: %w", err)
	}
	cfg.UserAgent = userAgent
	return kubernetes.NewForConfig(cfg)
}
