package rpc

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"k8s.io/klog/v2"
)

// NewRegistry returns a metrics registry holding the Go runtime and process
// collectors, for a binary to add its own metrics to.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Serve serves srv on endpoint, and reg on metricsAddress unless it is
// empty, until ctx ends; then it stops gracefully.
func Serve(ctx context.Context, srv *grpc.Server, endpoint, metricsAddress string, reg *prometheus.Registry) error {
	lis, err := Listen(endpoint)
	if err != nil {
		return err
	}
	if metricsAddress != "" {
		go ServeMetrics(ctx, metricsAddress, reg)
	}
	go func() {
		<-ctx.Done()
		srv.GracefulStop()
	}()
	klog.InfoS("Serving CSI", "endpoint", endpoint, "metrics", metricsAddress)
	return srv.Serve(lis)
}
