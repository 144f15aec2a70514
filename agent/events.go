package agent

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/rds-csi/rds-csi/agent/heal"
)

// Reasons of the Events the agent records on a volume's PVC.
// Operators filter and alert on them: never rename one.
const (
	// ReasonVolumeLost (Warning): the volume's NVMe/TCP controller is gone;
	// I/O fails or waits until the agent reconnects it.
	ReasonVolumeLost = "VolumeLost"
	// ReasonVolumeHealed (Normal): a lost volume is live again.
	ReasonVolumeHealed = "VolumeHealed"
	// ReasonVolumeHealFailed (Warning): a repair failed; the volume stays
	// unusable until the target answers again.
	ReasonVolumeHealFailed = "VolumeHealFailed"
	// ReasonVolumeConsumersStuck (Warning): the volume was reconnected, but
	// what uses it (a mounted filesystem) still holds the old device: only
	// staging it again (restarting its pods) helps.
	ReasonVolumeConsumersStuck = "VolumeConsumersStuck"
	// ReasonVolumeIdentityChanged (Warning): the namespace that answers to
	// the volume's NQN is another disk than the one staged (re-created or
	// replaced on the RDS). The agent refuses it and fails the volume's I/O.
	ReasonVolumeIdentityChanged = "VolumeIdentityChanged"
)

// PVCEvents records an Event on a PVC without blocking; events.Recorder
// (kube/events) is the production one.
type PVCEvents interface {
	PVC(namespace, name, eventType, reason, message string)
}

// HealthEvents is the healing loop's heal.Notifier: it turns a volume
// becoming lost, healed, or impossible to heal into an Event on its PVC.
// Other transitions (a reconnect the kernel manages alone) make none.
type HealthEvents struct {
	Events PVCEvents
	NodeID string
}

// Notify records the Event of t, if it has one. It runs on the loop's
// goroutine and returns at once: PVCEvents queues.
func (e HealthEvents) Notify(t heal.Transition) {
	if eventType, reason, message, ok := healthEvent(t, e.NodeID); ok {
		e.Events.PVC(t.Volume.PVCNamespace, t.Volume.PVCName, eventType, reason, message)
	}
}

// healthEvent says which Event a transition makes, if any.
func healthEvent(t heal.Transition, node string) (eventType, reason, message string, ok bool) {
	h := t.Health
	switch {
	case h.State == heal.StateLost:
		return corev1.EventTypeWarning, ReasonVolumeLost, fmt.Sprintf(
			"Volume %s lost its NVMe/TCP controller on node %s (%s). I/O to it fails or waits; the node agent reconnects it as soon as the target answers.",
			h.VolumeID, node, h.LastCause), true
	case h.State == heal.StateLive && !t.LostAt.IsZero():
		return corev1.EventTypeNormal, ReasonVolumeHealed, fmt.Sprintf(
			"Volume %s is live again on node %s after %s (controller %s, device %s).",
			h.VolumeID, node, h.Since.Sub(t.LostAt).Round(100*time.Millisecond), h.Controller, h.Device), true
	case h.State == heal.StateFailed && t.OtherDisk:
		return corev1.EventTypeWarning, ReasonVolumeIdentityChanged, fmt.Sprintf(
			"Volume %s on node %s is answered by another disk than the one staged (%s). The agent will not use it: the volume's I/O on this node fails from now on. Find out on the RDS why the disk behind the volume was re-created or replaced; then restart the pods that use it (the volume is staged again only onto the disk the RDS exports then).",
			h.VolumeID, node, h.LastCause), true
	case h.State == heal.StateFailed && t.Stuck:
		return corev1.EventTypeWarning, ReasonVolumeConsumersStuck, fmt.Sprintf(
			"Volume %s was reconnected on node %s, but what uses it still holds its old device (%s). It sees I/O errors until the volume is staged again: restart the pods that use it on this node.",
			h.VolumeID, node, h.LastCause), true
	case h.State == heal.StateFailed:
		return corev1.EventTypeWarning, ReasonVolumeHealFailed, fmt.Sprintf(
			"Volume %s could not be healed on node %s (%s). The agent tries again when a storage link comes up; check that the node reaches the RDS and that the RDS still exports the volume. If it stays failed, restart the pods that use it.",
			h.VolumeID, node, h.LastCause), true
	}
	return "", "", "", false
}
