// Package rpc serves CSI services over gRPC the same way for the controller
// and the node agent: endpoint parsing, request logging with secrets removed,
// and the csi_plugin_operations_seconds metric.
package rpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/kubernetes-csi/csi-lib-utils/protosanitizer"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"
)

// ParseEndpoint splits a CSI endpoint ("unix:///csi/csi.sock",
// "unix:/csi/csi.sock" or "tcp://127.0.0.1:10000") into a network and address.
func ParseEndpoint(endpoint string) (network, address string, err error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", "", fmt.Errorf("endpoint %q: %w", endpoint, err)
	}
	switch u.Scheme {
	case "unix":
		address = u.Path
		if address == "" {
			address = u.Opaque
		}
		if address == "" {
			return "", "", fmt.Errorf("endpoint %q: no socket path", endpoint)
		}
		return "unix", address, nil
	case "tcp":
		if u.Host == "" {
			return "", "", fmt.Errorf("endpoint %q: no host:port", endpoint)
		}
		return "tcp", u.Host, nil
	default:
		return "", "", fmt.Errorf("endpoint %q: scheme must be unix or tcp", endpoint)
	}
}

// Listen opens the endpoint. A stale unix socket left by an earlier process
// is removed first; anything else at that path is an error.
func Listen(endpoint string) (net.Listener, error) {
	network, address, err := ParseEndpoint(endpoint)
	if err != nil {
		return nil, err
	}
	if network == "unix" {
		if err := os.MkdirAll(filepath.Dir(address), 0o750); err != nil {
			return nil, err
		}
		if fi, err := os.Lstat(address); err == nil {
			if fi.Mode()&os.ModeSocket == 0 {
				return nil, fmt.Errorf("endpoint %s exists and is not a socket", address)
			}
			if err := os.Remove(address); err != nil {
				return nil, err
			}
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	return net.Listen(network, address)
}

// Metrics holds the CSI operation histogram.
type Metrics struct {
	ops *prometheus.HistogramVec
}

// NewMetrics registers csi_plugin_operations_seconds on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{ops: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "csi_plugin_operations_seconds",
		Help:    "Duration of CSI operations served by the plugin.",
		Buckets: []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120},
	}, []string{"driver_name", "method_name", "grpc_status_code"})}
	reg.MustRegister(m.ops)
	return m
}

// NewServer returns a gRPC server whose every call is logged (method at V(3),
// sanitized request and response at V(5)) and timed.
func NewServer(driverName string, m *Metrics) *grpc.Server {
	return grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		klog.V(3).InfoS("CSI call", "method", info.FullMethod)
		klog.V(5).InfoS("CSI request", "method", info.FullMethod, "request", protosanitizer.StripSecrets(req))
		resp, err := handler(ctx, req)
		code := status.Code(err)
		if m != nil {
			m.ops.WithLabelValues(driverName, info.FullMethod, code.String()).Observe(time.Since(start).Seconds())
		}
		if err != nil {
			klog.ErrorS(err, "CSI call failed", "method", info.FullMethod, "code", code.String(), "duration", time.Since(start))
		} else {
			klog.V(5).InfoS("CSI response", "method", info.FullMethod, "response", protosanitizer.StripSecrets(resp), "duration", time.Since(start))
		}
		return resp, err
	}))
}
