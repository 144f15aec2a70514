package rpc

import "github.com/container-storage-interface/spec/lib/go/csi"

// PluginCapabilities are the capabilities of the rds-csi plugin as a whole.
// The controller and the node agent are two processes of one plugin, so both
// report the same set: a CO (or csi-sanity) that asks the node socket learns
// that the plugin has a controller service too.
func PluginCapabilities() *csi.GetPluginCapabilitiesResponse {
	return &csi.GetPluginCapabilitiesResponse{Capabilities: []*csi.PluginCapability{
		{Type: &csi.PluginCapability_Service_{Service: &csi.PluginCapability_Service{Type: csi.PluginCapability_Service_CONTROLLER_SERVICE}}},
		{Type: &csi.PluginCapability_VolumeExpansion_{VolumeExpansion: &csi.PluginCapability_VolumeExpansion{Type: csi.PluginCapability_VolumeExpansion_ONLINE}}},
	}}
}
