package events

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// API is what the recorder needs of the API server.
type API interface {
	// GetPVC reads a claim for its UID.
	GetPVC(ctx context.Context, namespace, name string) (*corev1.PersistentVolumeClaim, error)
	// CreateEvent, UpdateEvent and PatchEvent write an event in its own
	// namespace, as client-go's event sink needs.
	CreateEvent(ctx context.Context, e *corev1.Event) (*corev1.Event, error)
	UpdateEvent(ctx context.Context, e *corev1.Event) (*corev1.Event, error)
	PatchEvent(ctx context.Context, e *corev1.Event, patch []byte) (*corev1.Event, error)
}

// ErrNotConfigured means there is no API to talk to: the process runs
// outside a cluster (KUBERNETES_SERVICE_HOST is unset) and no kubeconfig was
// given, as on a bare-metal node run by systemd.
var ErrNotConfigured = errors.New("no Kubernetes API configured: not running in a cluster and no kubeconfig given")

// LoadConfig returns the configuration of the API server the kubeconfig file
// names or, when kubeconfig is empty, of the cluster the process runs in
// (through its service account). userAgent names the component in the API
// server's logs and audit.
func LoadConfig(kubeconfig, userAgent string) (*rest.Config, error) {
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
	return cfg, nil
}

// NewAPI returns an API over a REST client of the core/v1 group.
func NewAPI(cfg *rest.Config) (API, error) {
	s := runtime.NewScheme()
	if err := corev1.AddToScheme(s); err != nil {
		return nil, err
	}
	c := rest.CopyConfig(cfg)
	c.APIPath = "/api"
	c.GroupVersion = &corev1.SchemeGroupVersion
	c.NegotiatedSerializer = serializer.NewCodecFactory(s).WithoutConversion()
	if c.UserAgent == "" {
		c.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("kubernetes REST client: %w", err)
	}
	return restAPI{rc}, nil
}

type restAPI struct{ c rest.Interface }

func (a restAPI) GetPVC(ctx context.Context, namespace, name string) (*corev1.PersistentVolumeClaim, error) {
	out := &corev1.PersistentVolumeClaim{}
	// resourceVersion=0 lets the API server answer from its cache: only the
	// UID is needed, and it never changes.
	err := a.c.Get().Namespace(namespace).Resource("persistentvolumeclaims").Name(name).Param("resourceVersion", "0").Do(ctx).Into(out)
	return out, err
}

func (a restAPI) CreateEvent(ctx context.Context, e *corev1.Event) (*corev1.Event, error) {
	out := &corev1.Event{}
	err := a.c.Post().Namespace(e.Namespace).Resource("events").Body(e).Do(ctx).Into(out)
	return out, err
}

func (a restAPI) UpdateEvent(ctx context.Context, e *corev1.Event) (*corev1.Event, error) {
	out := &corev1.Event{}
	err := a.c.Put().Namespace(e.Namespace).Resource("events").Name(e.Name).Body(e).Do(ctx).Into(out)
	return out, err
}

func (a restAPI) PatchEvent(ctx context.Context, e *corev1.Event, patch []byte) (*corev1.Event, error) {
	out := &corev1.Event{}
	err := a.c.Patch(types.StrategicMergePatchType).Namespace(e.Namespace).Resource("events").Name(e.Name).Body(patch).Do(ctx).Into(out)
	return out, err
}
