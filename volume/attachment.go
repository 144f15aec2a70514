package volume

import "time"

// Attachment is one VolumeAttachment of a CSI driver as the cluster shows
// it: what the controller needs to know of an attachment it may not have
// made itself.
type Attachment struct {
	Node string
	// Name and Created are the VolumeAttachment's.
	Name    string
	Created time.Time
	// Attached: its status says attached; otherwise the attach is under way.
	Attached bool
	// MultiWriter: its PV's access modes include ReadWriteMany, so the
	// csi-attacher publishes it MULTI_NODE_MULTI_WRITER.
	MultiWriter bool
	// VolumeContext is its PV's volume attributes.
	VolumeContext map[string]string
	// Recorded is its PV's attached-nodes annotation, in attach order.
	Recorded []string
}
