package agent

import (
	"context"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/rds-csi/rds-csi/rpc"
)

// GetPluginInfo returns the driver name and version.
func (n *Node) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: n.opts.DriverName, VendorVersion: n.opts.Version}, nil
}

// GetPluginCapabilities reports the plugin's capabilities (rpc.PluginCapabilities).
func (n *Node) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	return rpc.PluginCapabilities(), nil
}

// Probe reports ready: the agent needs nothing remote to serve the node
// service, and a missing kernel module fails the calls that need it, loudly.
func (n *Node) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{Ready: wrapperspb.Bool(true)}, nil
}
