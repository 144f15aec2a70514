package controller

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"

	"github.com/rds-csi/rds-csi/volume"
)

// ClusterView is the cluster's own record of attachments, read from informer
// caches (kube.Watcher implements it). Kubernetes holds the truth about
// attachments in VolumeAttachments; the controller's state is rebuilt from
// them at start, completed from them before every publish (another
// controller process may have attached the volume meanwhile), and checked
// against them before a holder blocks another node.
type ClusterView interface {
	// Attachment reports whether a VolumeAttachment of this driver attaches
	// volumeID to node and, when it is being deleted, since when. When it
	// cannot tell (no PV of this driver has the volume handle, a cache
	// failed), it reports that one exists: a holder is released only on
	// positive evidence that its attachment is gone.
	Attachment(volumeID, node string) (exists bool, deleting time.Time)
	// NodeExists reports whether node is a Node of the cluster.
	NodeExists(node string) bool
	// EachAttached calls fn for every VolumeAttachment of this driver whose
	// status says attached.
	EachAttached(fn func(volumeID string, a ClusterAttachment))
	// LiveAttachments lists the VolumeAttachments of this driver, attached
	// or being attached and not being deleted, of every PV of this driver
	// whose volume handle is volumeID.
	LiveAttachments(volumeID string) ([]ClusterAttachment, error)
}

// ClusterAttachment is one VolumeAttachment of this driver as the cluster
// shows it (defined in package volume, which kube.Watcher shares).
type ClusterAttachment = volume.Attachment

// Reporter tells people what happened to a volume (kube.Watcher implements
// it). Neither method holds up an attachment: both are records.
type Reporter interface {
	// Annotate records on the volume's PV the nodes it is attached to; no
	// nodes clears the record.
	Annotate(ctx context.Context, volumeID string, nodes []string) error
	// Event records an Event (eventNormal or eventWarning) on the volume's
	// PVC, found through its PV's claimRef. It never blocks.
	Event(volumeID, eventType, reason, message string)
}

// Event types, as Kubernetes spells them.
const (
	eventNormal  = "Normal"
	eventWarning = "Warning"
)

// Event reasons.
const (
	ReasonVolumeAttached      = "VolumeAttached"
	ReasonVolumeDetached      = "VolumeDetached"
	ReasonAttachmentConflict  = "AttachmentConflict"
	ReasonMigrationStarted    = "MigrationStarted"
	ReasonMigrationCompleted  = "MigrationCompleted"
	ReasonMigrationFailed     = "MigrationFailed"
	migrationResultSuccess    = "success"
	migrationResultFailed     = "failed"
	migrationResultTimeout    = "timeout"
	defaultMigrationCheckTick = 5 * time.Second
)

// Option adds a dependency to a Driver.
type Option func(*Driver)

// WithCluster makes the driver keep its attachment state against the
// cluster's VolumeAttachments and Nodes, and report to its PVs and PVCs.
// view's caches must have synced: New rebuilds the state from them.
func WithCluster(view ClusterView, reporter Reporter) Option {
	return func(d *Driver) { d.view, d.reporter = view, reporter }
}

// WithClock replaces the real clock (tests step a fake one).
func WithClock(c clock.WithTicker) Option {
	return func(d *Driver) { d.clock = c }
}

// WithMetrics registers the migration metrics on reg.
func WithMetrics(reg prometheus.Registerer) Option {
	return func(d *Driver) { d.metricsReg = reg }
}

// attachedNode is one node a volume is published to.
type attachedNode struct {
	node  string
	since time.Time
	// multi: published MULTI_NODE_MULTI_WRITER; otherwise single-node.
	multi bool
}

// attachment is what the controller knows of one published volume.
type attachment struct {
	// nodes in the order they attached: in a live migration nodes[0] is the
	// source and nodes[1] the target.
	nodes []attachedNode
	// migrationTimeout bounds a dual attachment.
	migrationTimeout time.Duration
	// timeoutReported: the dual attachment outlived its timeout and was
	// reported; it is reported once, and its result is "timeout".
	timeoutReported bool
}

func (a attachment) index(node string) int {
	return slices.IndexFunc(a.nodes, func(n attachedNode) bool { return n.node == node })
}

func (a attachment) names() []string {
	out := make([]string, len(a.nodes))
	for i, n := range a.nodes {
		out[i] = n.node
	}
	return out
}

// migrating reports whether the volume is attached to two nodes, and since
// when (the target's attachment).
func (a attachment) migrating() (bool, time.Time) {
	if len(a.nodes) != 2 {
		return false, time.Time{}
	}
	return true, a.nodes[1].since
}

// attachments is the controller's attachment state. Changes to one volume
// happen under that volume's in-flight key; mu guards the map for the
// readers that run beside them (the timeout check, the active gauge).
type attachments struct {
	mu   sync.Mutex
	vols map[string]*attachment
}

// get returns a copy of the volume's record (empty if none).
func (s *attachments) get(id string) attachment {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.vols[id]
	if a == nil {
		return attachment{}
	}
	c := *a
	c.nodes = slices.Clone(a.nodes)
	return c
}

// put stores the volume's record; one without nodes is forgotten.
func (s *attachments) put(id string, a attachment) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(a.nodes) == 0 {
		delete(s.vols, id)
		return
	}
	if s.vols == nil {
		s.vols = map[string]*attachment{}
	}
	a.nodes = slices.Clone(a.nodes)
	s.vols[id] = &a
}

// swap stores the volume's record and returns the one it replaces, in one
// step: what the timeout check marked on the stored record meanwhile is in
// the record returned, and is kept when a is the same dual attachment.
func (s *attachments) swap(id string, a attachment) (before attachment) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.vols[id]; p != nil {
		before = *p
		before.nodes = slices.Clone(p.nodes)
		if sameMigration(before, a) {
			a.timeoutReported = a.timeoutReported || before.timeoutReported
		}
	}
	if len(a.nodes) == 0 {
		delete(s.vols, id)
		return before
	}
	if s.vols == nil {
		s.vols = map[string]*attachment{}
	}
	a.nodes = slices.Clone(a.nodes)
	s.vols[id] = &a
	return before
}

// sameMigration reports whether a and b are the same dual attachment.
func sameMigration(a, b attachment) bool {
	am, _ := a.migrating()
	bm, _ := b.migrating()
	return am && bm && a.nodes[0] == b.nodes[0] && a.nodes[1] == b.nodes[1]
}

// remove drops nodes from the volume's record and returns the record as it
// was and the nodes it held, in one step: the timeout check cannot slip in
// between.
func (s *attachments) remove(id string, nodes []string) (before attachment, removed []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.vols[id]
	if a == nil {
		return attachment{}, nil
	}
	before = *a
	before.nodes = slices.Clone(a.nodes)
	a.nodes = slices.DeleteFunc(a.nodes, func(n attachedNode) bool {
		if slices.Contains(nodes, n.node) {
			removed = append(removed, n.node)
			return true
		}
		return false
	})
	if len(a.nodes) == 0 {
		delete(s.vols, id)
	} else if len(removed) > 0 && len(a.nodes) < 2 {
		a.timeoutReported = false
	}
	return before, removed
}

// nodes lists every node some volume is attached to.
func (s *attachments) nodes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, a := range s.vols {
		for _, n := range a.nodes {
			if !slices.Contains(out, n.node) {
				out = append(out, n.node)
			}
		}
	}
	slices.Sort(out)
	return out
}

// volumesOf lists the volumes attached to node.
func (s *attachments) volumesOf(node string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for id, a := range s.vols {
		if a.index(node) >= 0 {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// dualCount counts volumes attached to two nodes: the active migrations.
func (s *attachments) dualCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, a := range s.vols {
		if ok, _ := a.migrating(); ok {
			n++
		}
	}
	return n
}

// overdue marks and returns the dual attachments that reached their
// timeout and were not reported yet.
func (s *attachments) overdue(now time.Time) map[string]attachment {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]attachment{}
	for id, a := range s.vols {
		if ok, since := a.migrating(); ok && !a.timeoutReported && now.Sub(since) >= a.migrationTimeout {
			a.timeoutReported = true
			c := *a
			c.nodes = slices.Clone(a.nodes)
			out[id] = c
		}
	}
	return out
}

// migrationMetrics are the migration metrics. The active gauge is computed from
// the attachment state on every scrape, so it cannot drift from it.
type migrationMetrics struct {
	duration prometheus.Histogram
	results  *prometheus.CounterVec
	active   prometheus.GaugeFunc
	// abandoned counts releases of a deleted node's attachment given up
	// on an error that retrying cannot fix.
	abandoned prometheus.Counter
}

func newMigrationMetrics(state *attachments) *migrationMetrics {
	m := &migrationMetrics{
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "rds", Subsystem: "migration", Name: "duration_seconds",
			Help:    "Time a volume spent attached to two nodes for a KubeVirt live migration, observed when one node detaches.",
			Buckets: []float64{15, 30, 60, 90, 120, 180, 300, 600},
		}),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "rds", Subsystem: "migration", Name: "results_total",
			Help: "Live migrations by result: success (the source detached), failed (the target detached: rolled back), timeout (both stayed attached past migrationTimeoutSeconds). Each migration counts once.",
		}, []string{"result"}),
		active: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "rds", Subsystem: "migration", Name: "active",
			Help: "Volumes attached to two nodes right now (live migrations in progress).",
		}, func() float64 { return float64(state.dualCount()) }),
		abandoned: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "rds", Subsystem: "attachment", Name: "releases_abandoned_total",
			Help: "Attachments of deleted Nodes the controller gave up releasing on an error that retrying cannot fix (logged with the volume); release them by hand.",
		}),
	}
	for _, r := range []string{migrationResultSuccess, migrationResultFailed, migrationResultTimeout} {
		m.results.WithLabelValues(r)
	}
	return m
}

func (m *migrationMetrics) register(reg prometheus.Registerer) {
	reg.MustRegister(m.duration, m.results, m.active, m.abandoned)
}
