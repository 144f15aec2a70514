package controller

import (
	"context"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"k8s.io/klog/v2"

	"github.com/rds-csi/rds-csi/rpc"
)

// probeTimeout bounds Probe: the livenessprobe sidecar calls it often, and a
// hung RDS must not hang it.
const probeTimeout = 5 * time.Second

// GetPluginInfo returns the driver name and version.
func (d *Driver) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: d.opts.DriverName, VendorVersion: d.opts.Version}, nil
}

// GetPluginCapabilities reports the plugin's capabilities (rpc.PluginCapabilities).
func (d *Driver) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	return rpc.PluginCapabilities(), nil
}

// Probe reports ready whenever the controller serves: the RDS answering is
// not the controller's health. The livenessprobe sidecar turns not-ready
// into a failed liveness check, and restarting the controller cannot bring
// the RDS back; it would only add kubelet's restart backoff to the outage.
// The RDS is still asked, so that an outage is logged even when no volume
// operation runs (rds_routeros_command_duration_seconds counts the ping
// too).
func (d *Driver) Probe(ctx context.Context, _ *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	if err := d.rds.Ping(ctx); err != nil {
		klog.ErrorS(err, "RDS does not answer; volume operations fail with Unavailable until it does")
	}
	return &csi.ProbeResponse{Ready: wrapperspb.Bool(true)}, nil
}
