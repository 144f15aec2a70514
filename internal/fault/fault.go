// Package fault marks the instants at which the crash-consistency tests kill
// the agent. A build with the faultinject tag kills the process, and every
// child it started, with SIGKILL when the environment variable Env names the
// point reached (as systemd or a container runtime kills a unit's cgroup).
// Every other build compiles Crash to nothing: production binaries carry no
// way to be crashed from their environment.
package fault

// Env names the point at which a faultinject build kills itself.
const Env = "RDS_CSI_FAULT"

// The points, in the order NodeStage and NodeUnstage pass them.
const (
	// StageIntent: the intent record is written; nothing is connected.
	StageIntent = "stage-intent"
	// StageConnected: the namespace is connected; no front exists.
	StageConnected = "stage-connected"
	// DMCreated: the front exists without a table (DM_DEV_CREATE only).
	DMCreated = "dm-created"
	// DMLoaded: the front's table is loaded but inactive (not resumed).
	DMLoaded = "dm-loaded"
	// DMSuspended: a reload of the front has suspended it and not yet
	// resumed it (a repair, or a restage onto a renumbered namespace). Not
	// in Points: no NodeStage of a new volume passes it.
	DMSuspended = "dm-suspended"
	// StageAttached: the front leads to the namespace; the record does not
	// say so yet.
	StageAttached = "stage-attached"
	// StageRecorded: the record is complete; the volume is not formatted.
	StageRecorded = "stage-recorded"
	// FormatMarked: the format marker is written; mkfs has not started.
	FormatMarked = "format-marked"
	// MkfsRunning: mkfs has been started and is killed with the agent.
	MkfsRunning = "mkfs-running"
	// MkfsPartial: what an interrupted mkfs leaves: bytes written into the
	// first MiB, no superblock. The faultinject build writes them itself
	// instead of running mkfs, so that the state is the same on every run.
	MkfsPartial = "mkfs-partial"
	// StageFormatted: mkfs finished; the marker is still there.
	StageFormatted = "stage-formatted"
	// StageMounted: the staging mount is made; NodeStage has not answered.
	StageMounted = "stage-mounted"
	// UnstageUnmounted: the staging mount is gone; the front is not.
	UnstageUnmounted = "unstage-unmounted"
	// UnstageFrontRemoved: the front is gone; the controller is not.
	UnstageFrontRemoved = "unstage-front-removed"
	// UnstageDisconnected: the controller is gone; the record is not.
	UnstageDisconnected = "unstage-disconnected"
)

// Points lists every point, in order.
var Points = []string{
	StageIntent, StageConnected, DMCreated, DMLoaded, StageAttached, StageRecorded,
	FormatMarked, MkfsRunning, MkfsPartial, StageFormatted, StageMounted,
	UnstageUnmounted, UnstageFrontRemoved, UnstageDisconnected,
}
