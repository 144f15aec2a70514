// Package agent is the rds-csi node agent: the CSI Identity and Node
// services. Every touch of the host goes through kernel/ behind the small
// interfaces below.
package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/rds-csi/rds-csi/agent/heal"
	"github.com/rds-csi/rds-csi/kernel/blockdev"
	"github.com/rds-csi/rds-csi/kernel/sysfs"
	"github.com/rds-csi/rds-csi/volume"
)

// Target is everything needed to reach one volume's namespace.
type Target struct {
	VolumeID string
	volume.Context
	HostNQN, HostID string
	// NSID is the namespace within the subsystem: an RDS exports one disk
	// per subsystem, as namespace 1.
	NSID int
	// Identity is the namespace's identity as staged; zero before the
	// first attach. Attach refuses a namespace that is another disk.
	Identity sysfs.Identity
	// MinSize is the namespace's size as last attached: a namespace
	// smaller than the volume was is not the volume.
	MinSize int64
}

// Device is a volume's block device on this node: the namespace itself, or
// a device-mapper front over it (Multipath).
type Device struct {
	Path string // device node, /dev/<name>
	Dev  sysfs.DevT
	// Mapped tells a front; Backing is then the namespace below it, zero
	// while the namespace is gone (the front queues I/O meanwhile).
	Mapped  bool
	Backing sysfs.DevT
	// Identity and Size are the namespace's (below the front), when the
	// Attacher knows them.
	Identity sysfs.Identity
	Size     int64
}

// ErrIdentityChanged marks a namespace that answers to the volume's NQN and
// namespace ID but is another disk than the one staged (the health model's
// sentinel, so that a repair that meets one keeps the volume failed).
var ErrIdentityChanged = heal.ErrIdentityChanged

// IdentityError says which disk was staged and which one answers now.
type IdentityError struct {
	VolumeID, NQN string
	NSID          int
	Staged, Found sysfs.Identity
	// StagedSize and FoundSize are set when the size tells them apart.
	StagedSize, FoundSize int64
}

func (e *IdentityError) Error() string {
	if e.Staged.Same(e.Found) {
		return fmt.Sprintf("namespace %d of %s (volume %s) is %d bytes, smaller than the %d bytes staged: it is not the volume's disk; the agent will not put the volume on it",
			e.NSID, e.NQN, e.VolumeID, e.FoundSize, e.StagedSize)
	}
	return fmt.Sprintf("namespace %d of %s (volume %s) is another disk: staged as %s, now %s; the agent will not put the volume on it",
		e.NSID, e.NQN, e.VolumeID, e.Staged, e.Found)
}

func (e *IdentityError) Unwrap() error { return ErrIdentityChanged }

// checkIdentity refuses a device that is not the disk t was staged on: its
// identifiers changed, or it shrank. A target without a recorded identity
// (an older record, a test transport) accepts any.
func checkIdentity(t Target, d Device) error {
	if !t.Identity.Same(d.Identity) || (t.MinSize > 0 && d.Size > 0 && d.Size < t.MinSize) {
		return &IdentityError{VolumeID: t.VolumeID, NQN: t.NQN, NSID: t.NSID, Staged: t.Identity, Found: d.Identity, StagedSize: t.MinSize, FoundSize: d.Size}
	}
	return nil
}

// namespace is the device number of the namespace itself, what the health
// model watches; zero when a front has no namespace below it.
func (d Device) namespace() sysfs.DevT {
	if d.Mapped {
		return d.Backing
	}
	return d.Dev
}

// ErrNotAttached is returned by Attacher.Find when the volume's namespace is
// not present on this node.
var ErrNotAttached = errors.New("volume is not attached to this node")

// Attacher makes a volume's namespace appear as a block device. The NVMe/TCP
// fabrics code is the production Attacher; tests on machines without NVMe
// use a loop-device Attacher behind the same interface.
type Attacher interface {
	// Attach connects (if needed) and waits until the device is present.
	Attach(ctx context.Context, t Target) (Device, error)
	// Find returns the device of an attached volume, or ErrNotAttached.
	Find(ctx context.Context, t Target) (Device, error)
	// Detach disconnects the volume. The caller has checked that the NQN
	// is under the managed prefix.
	Detach(ctx context.Context, t Target) error
	// Refresh makes the device show the target's current size and returns
	// once it shows at least size bytes.
	Refresh(ctx context.Context, t Target, size int64) error
}

// Tracker is the agent's health model (agent/heal's Loop): the node service
// registers what it stages and reads health back without blocking.
type Tracker interface {
	// Hold protects an NQN from orphan removal while it is being staged.
	Hold(nqn string) (release func())
	Track(v heal.Volume) error
	Untrack(volumeID string)
	Health(volumeID string) (heal.Health, bool)
}

// Options configure the agent; every field has a flag in cmd/rds-csi-agent.
type Options struct {
	DriverName string
	Version    string
	NodeID     string
	// ManagedNQNPrefix: only subsystems whose NQN starts with it are
	// staged and ever disconnected by this agent.
	ManagedNQNPrefix string
	// AttachTimeout bounds connect-and-wait-for-device in NodeStage.
	AttachTimeout time.Duration
	// InUseTimeout bounds the in-use check of NodeUnstage.
	InUseTimeout time.Duration
	// SysRoot and ProcRoot are /sys and /proc (tests may point elsewhere).
	SysRoot, ProcRoot string
	// StateDir holds what the agent keeps of a volume beyond its staging
	// (format markers); empty keeps nothing, and an interrupted format is
	// then refused like any other data.
	StateDir string
}

// Validate checks the options and fills defaults.
func (o *Options) Validate() error {
	if o.DriverName == "" {
		o.DriverName = "rds.csi.dev"
	}
	if o.ManagedNQNPrefix == "" {
		o.ManagedNQNPrefix = volume.DefaultNQNPrefix
	}
	if o.AttachTimeout == 0 {
		o.AttachTimeout = 60 * time.Second
	}
	if o.InUseTimeout == 0 {
		o.InUseTimeout = 5 * time.Second
	}
	if o.SysRoot == "" {
		o.SysRoot = "/sys"
	}
	if o.ProcRoot == "" {
		o.ProcRoot = "/proc"
	}
	var errs []error
	if o.NodeID == "" {
		errs = append(errs, errors.New("node ID is required (the Kubernetes node name)"))
	}
	if !strings.HasPrefix(o.ManagedNQNPrefix, "nqn.") || !strings.ContainsRune(o.ManagedNQNPrefix, ':') {
		errs = append(errs, fmt.Errorf("managed NQN prefix %q must look like nqn.yyyy-mm.domain:…", o.ManagedNQNPrefix))
	}
	return errors.Join(errs...)
}

// Node serves the CSI Identity and Node services.
type Node struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedNodeServer

	opts     Options
	attacher Attacher
	mounter  Mounter
	tracker  Tracker
	metrics  *Metrics
	inFlight volume.InFlight

	// probe decides whether a device may hold data (the format gate);
	// blockdev.HasSignature, replaceable in tests to make it fail.
	probe func(ctx context.Context, path string) (found bool, what string, err error)
	// filesystemType names the whole filesystem blkid finds on a device,
	// "" if none; blockdev.FilesystemType.
	filesystemType func(ctx context.Context, path string) (string, error)

	mu      sync.Mutex
	staging map[string]string // volume ID -> staging path, for NodeUnpublish's record update
}

// New returns an agent; opts must have passed Validate. metrics may be nil.
func New(opts Options, attacher Attacher, mounter Mounter, metrics *Metrics) *Node {
	return &Node{opts: opts, attacher: attacher, mounter: mounter, tracker: noTracker{}, metrics: metrics, probe: blockdev.HasSignature, filesystemType: blockdev.FilesystemType, staging: map[string]string{}}
}

// SetTracker connects the health model. Without one, health comes from a
// bounded probe of the device alone.
func (n *Node) SetTracker(t Tracker) { n.tracker = t }

// noTracker is the absent health model.
type noTracker struct{}

func (noTracker) Hold(string) func()                { return func() {} }
func (noTracker) Track(heal.Volume) error           { return nil }
func (noTracker) Untrack(string)                    {}
func (noTracker) Health(string) (heal.Health, bool) { return heal.Health{}, false }

func (n *Node) managed(nqn string) bool {
	return strings.HasPrefix(nqn, n.opts.ManagedNQNPrefix)
}
