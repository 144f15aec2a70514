package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/rds-csi/rds-csi/controller/routeros"
	"github.com/rds-csi/rds-csi/volume"
)

// maxAttachedNodes: a KubeVirt live migration needs the source and the
// target, and nothing ever needs more (MIG-2).
const maxAttachedNodes = 2

// FencedHostNQN is the allowed host list of a fenced disk published to no
// node. It is no node's host NQN (those are volume.HostNQN's ":node:"
// names), and an empty list is reported to admit every host.
const FencedHostNQN = "nqn.2026-11.dev.csi.rds:nobody"

// reportTimeout bounds the PV annotation written after an attachment
// changed: the attachment is done by then, and the record must not hold the
// RPC up for long.
const reportTimeout = 10 * time.Second

var (
	// errConflict: the volume is attached elsewhere and may not be here too.
	errConflict = errors.New("volume is attached to another node")
	// errHandOff: the holder's detach is under way; retry soon.
	errHandOff = errors.New("volume is being handed off")
	// errBadContext: the volume context holds a value that cannot be read.
	errBadContext = errors.New("invalid volume context")
	// errFenceMismatch: the RDS did not take the allowed host list.
	errFenceMismatch = errors.New("the RDS shows another allowed host list than was set")
)

// ControllerPublishVolume attaches a volume to a node: it checks that the
// volume may be attached there (one node for ReadWriteOnce, two for a
// ReadWriteMany block volume during a live migration), restricts the disk's
// export to the published nodes when target fencing is on, and records the
// attachment.
func (d *Driver) ControllerPublishVolume(ctx context.Context, req *csi.ControllerPublishVolumeRequest) (*csi.ControllerPublishVolumeResponse, error) {
	id, node := req.GetVolumeId(), req.GetNodeId()
	switch {
	case id == "":
		return nil, status.Error(codes.InvalidArgument, "volume ID is required")
	case node == "":
		return nil, status.Error(codes.InvalidArgument, "node ID is required")
	case req.GetVolumeCapability() == nil:
		return nil, status.Error(codes.InvalidArgument, "volume capability is required")
	}
	vc := req.GetVolumeCapability()
	if err := checkCapabilities([]*csi.VolumeCapability{vc}); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if !volume.ValidID(id) {
		return nil, status.Errorf(codes.NotFound, "volume %q does not exist", id)
	}
	if d.view != nil && !d.view.NodeExists(node) {
		return nil, status.Errorf(codes.NotFound, "node %q is not a node of the cluster", node)
	}
	release, err := d.acquire(id)
	if err != nil {
		return nil, err
	}
	defer release()

	disk, err := d.rds.Get(ctx, id)
	if err != nil {
		return nil, toStatus(err)
	}
	if !d.ours(disk) {
		return nil, toStatus(fmt.Errorf("%w: disk %s is exported as %q: not a volume of this driver", errRefused, id, disk.NQN))
	}
	multi := vc.GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER
	if err := d.publish(ctx, disk, node, multi, req.GetVolumeContext()); err != nil {
		return nil, toStatus(err)
	}
	return &csi.ControllerPublishVolumeResponse{}, nil
}

func (d *Driver) publish(ctx context.Context, disk routeros.Disk, node string, multi bool, vctx map[string]string) error {
	id := disk.Slot
	rec := d.attached.get(id)
	if rec.index(node) >= 0 {
		// Published already: the attacher retries and resyncs. The target
		// must still admit the node.
		return d.fence(ctx, disk, rec.names())
	}
	now := d.clock.Now()
	before := rec
	before.nodes = slices.Clone(rec.nodes)
	released, err := d.pruneStale(id, &rec, now)
	if err != nil {
		return err
	}
	secondary := len(rec.nodes) == 1
	switch {
	case len(rec.nodes) == 0:
	case !multi:
		return d.conflict(id, node, fmt.Errorf("%w: volume %s is attached to node %s and is ReadWriteOnce: it can be attached to one node at a time. "+
			"Stop the Pod using it on %s so that it detaches there (or, if that node is gone for good, delete its Node object to release the volume); %s attaches it next",
			errConflict, id, rec.nodes[0].node, rec.nodes[0].node, node))
	case len(rec.nodes) >= maxAttachedNodes:
		_, since := rec.migrating()
		elapsed := now.Sub(since).Round(time.Second)
		state := fmt.Sprintf("a live migration that started %s ago (timeout %s)", elapsed, rec.migrationTimeout)
		if elapsed >= rec.migrationTimeout {
			state = fmt.Sprintf("a live migration that started %s ago and is past its timeout of %s: it is stuck. Finish or cancel it (kubectl get vmim; virtctl migrate-cancel), so that one node detaches", elapsed, rec.migrationTimeout)
		}
		return d.conflict(id, node, fmt.Errorf("%w: volume %s is attached to nodes %s and %s for %s; at most %d nodes may attach a ReadWriteMany block volume, so %s cannot",
			errConflict, id, rec.nodes[0].node, rec.nodes[1].node, state, maxAttachedNodes, node))
	}
	timeout := volume.DefaultMigrationTimeout
	if v, ok := vctx[volume.KeyMigrationTimeout]; ok && secondary {
		// Checked before the secondary attachment: its bound must be known.
		if timeout, err = volume.ParseMigrationTimeout(v); err != nil {
			return fmt.Errorf("%w: volume context %s: %w", errBadContext, volume.KeyMigrationTimeout, err)
		}
	}
	if err := d.fence(ctx, disk, append(rec.names(), node)); err != nil {
		return err
	}
	rec.nodes = append(rec.nodes, attachedNode{node: node, since: now})
	if secondary {
		rec.migrationTimeout, rec.timeoutReported = timeout, false
	}
	d.attached.put(id, rec)
	klog.InfoS("Volume published", "volumeID", id, "node", node, "nodes", rec.names(), "fenced", d.opts.TargetFencing)

	for _, r := range released {
		d.event(id, eventNormal, ReasonVolumeDetached, fmt.Sprintf("Released the stale attachment of node %s (%s) so that %s can attach", r.node, r.why, node))
	}
	if migrating, since := before.migrating(); migrating && len(released) > 0 {
		// A migration whose node was released ended then, like a detach.
		sourceLeft := slices.ContainsFunc(released, func(r releasedNode) bool { return r.node == before.nodes[0].node })
		d.endMigration(id, before, sourceLeft, now.Sub(since))
	}
	d.annotate(ctx, id, rec.names())
	d.event(id, eventNormal, ReasonVolumeAttached, fmt.Sprintf("Attached to node %s", node))
	if secondary {
		klog.InfoS("Live migration started", "volumeID", id, "source", rec.nodes[0].node, "target", node, "timeout", timeout)
		d.event(id, eventNormal, ReasonMigrationStarted, fmt.Sprintf("Live migration from node %s to node %s started: both nodes are attached; it must end within %s (migrationTimeoutSeconds)", rec.nodes[0].node, node, timeout))
	}
	return nil
}

// conflict records a refused attachment and returns err.
func (d *Driver) conflict(id, node string, err error) error {
	klog.InfoS("Volume publish refused", "volumeID", id, "node", node, "reason", err.Error())
	d.event(id, eventWarning, ReasonAttachmentConflict, err.Error())
	return err
}

type releasedNode struct{ node, why string }

// pruneStale drops from rec the nodes whose attachment the cluster no longer
// has: a deleted Node, or a VolumeAttachment gone for longer than the grace
// period (an informer may not have seen a new one yet). A holder whose
// VolumeAttachment is being deleted is waited for: errHandOff within the
// grace period, after which it blocks like any holder. Without a cluster
// view nothing is stale.
func (d *Driver) pruneStale(id string, rec *attachment, now time.Time) ([]releasedNode, error) {
	if d.view == nil {
		return nil, nil
	}
	var released []releasedNode
	kept := rec.nodes[:0:0]
	for _, n := range rec.nodes {
		exists, deleting := d.view.Attachment(id, n.node)
		switch {
		case !d.view.NodeExists(n.node):
			released = append(released, releasedNode{n.node, "the Node was deleted"})
			continue
		case !exists && now.Sub(n.since) >= d.opts.RWOGracePeriod:
			released = append(released, releasedNode{n.node, "no VolumeAttachment attaches it there any more"})
			continue
		case !exists:
			return nil, fmt.Errorf("%w: volume %s was attached to node %s %s ago and no VolumeAttachment shows it yet; retrying",
				errHandOff, id, n.node, now.Sub(n.since).Round(time.Second))
		case !deleting.IsZero() && now.Sub(deleting) < d.opts.RWOGracePeriod:
			return nil, fmt.Errorf("%w: volume %s is being detached from node %s; it can attach elsewhere once that detach finished",
				errHandOff, id, n.node)
		}
		kept = append(kept, n)
	}
	for _, r := range released {
		klog.InfoS("Releasing a stale attachment", "volumeID", id, "node", r.node, "why", r.why)
	}
	if len(released) > 0 && len(kept) < 2 {
		rec.timeoutReported = false
	}
	rec.nodes = kept
	return released, nil
}

// ControllerUnpublishVolume detaches a volume from a node (from every node
// when the request names none). It succeeds for a node the volume is not
// attached to and for a volume that no longer exists. With target fencing
// the node's host NQN leaves the disk's allowed host list; the other nodes'
// entries stay as they are.
func (d *Driver) ControllerUnpublishVolume(ctx context.Context, req *csi.ControllerUnpublishVolumeRequest) (*csi.ControllerUnpublishVolumeResponse, error) {
	id, node := req.GetVolumeId(), req.GetNodeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID is required")
	}
	if !volume.ValidID(id) {
		return &csi.ControllerUnpublishVolumeResponse{}, nil
	}
	release, err := d.acquire(id)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := d.unpublish(ctx, id, node, "unpublished"); err != nil {
		return nil, toStatus(err)
	}
	return &csi.ControllerUnpublishVolumeResponse{}, nil
}

// unpublish detaches node (every node when empty) from volume id; the
// caller holds the volume's in-flight key.
func (d *Driver) unpublish(ctx context.Context, id, node, why string) error {
	disk, err := d.rds.Get(ctx, id)
	switch {
	case routeros.IsKind(err, routeros.KindNotFound):
		// The volume is gone: so is every attachment of it.
		if rec := d.attached.get(id); len(rec.nodes) > 0 {
			d.attached.put(id, attachment{})
			d.annotate(ctx, id, nil)
		}
		return nil
	case err != nil:
		return err
	}
	nodes := []string{node}
	if node == "" {
		nodes = d.attached.get(id).names()
	}
	for _, n := range nodes {
		if err := d.detach(ctx, disk, n, why); err != nil {
			return err
		}
	}
	return nil
}

// detach removes node from the disk's allowed hosts (with fencing) and from
// the state. The first detach of a dual attachment ends the migration:
// source gone = completed, target gone = rolled back.
func (d *Driver) detach(ctx context.Context, disk routeros.Disk, node, why string) error {
	id := disk.Slot
	if err := d.unfence(ctx, disk, node); err != nil {
		return err
	}
	rec, removed := d.attached.remove(id, node)
	if !removed {
		return nil
	}
	i := rec.index(node)
	migrating, since := rec.migrating()
	rest := d.attached.get(id).names()
	klog.InfoS("Volume unpublished", "volumeID", id, "node", node, "why", why, "nodes", rest)
	d.annotate(ctx, id, rest)
	d.event(id, eventNormal, ReasonVolumeDetached, fmt.Sprintf("Detached from node %s (%s)", node, why))
	if migrating {
		d.endMigration(id, rec, i == 0, d.clock.Now().Sub(since))
	}
	return nil
}

// endMigration reports how a dual attachment ended. Each migration has one
// result: one already reported as timed out is not counted again.
func (d *Driver) endMigration(id string, rec attachment, sourceLeft bool, elapsed time.Duration) {
	source, target := rec.nodes[0].node, rec.nodes[1].node
	d.migration.duration.Observe(elapsed.Seconds())
	secs := elapsed.Round(time.Second)
	late := ""
	if rec.timeoutReported {
		late = fmt.Sprintf(", past its timeout of %s", rec.migrationTimeout)
	}
	if sourceLeft {
		if !rec.timeoutReported {
			d.migration.results.WithLabelValues(migrationResultSuccess).Inc()
		}
		klog.InfoS("Live migration completed", "volumeID", id, "source", source, "target", target, "duration", secs)
		d.event(id, eventNormal, ReasonMigrationCompleted, fmt.Sprintf("Live migration from node %s to node %s completed in %s%s: the source detached", source, target, secs, late))
		return
	}
	if !rec.timeoutReported {
		d.migration.results.WithLabelValues(migrationResultFailed).Inc()
	}
	klog.InfoS("Live migration rolled back", "volumeID", id, "source", source, "target", target, "duration", secs)
	d.event(id, eventWarning, ReasonMigrationFailed, fmt.Sprintf("Live migration from node %s to node %s failed after %s%s: the target detached and node %s keeps the volume. Check the VirtualMachineInstanceMigration for why", source, target, secs, late, source))
}

// fence sets the disk's allowed hosts to the host NQNs of nodes and reads
// them back. Without target fencing it does nothing.
func (d *Driver) fence(ctx context.Context, disk routeros.Disk, nodes []string) error {
	if !d.opts.TargetFencing {
		return nil
	}
	want := make([]string, len(nodes))
	for i, n := range nodes {
		want[i] = volume.HostNQN(n)
	}
	return d.setAllowedHosts(ctx, disk, want)
}

// unfence removes node's host NQN from the disk's allowed hosts, leaving the
// other entries alone; a list left empty admits nobody (FencedHostNQN).
func (d *Driver) unfence(ctx context.Context, disk routeros.Disk, node string) error {
	if !d.opts.TargetFencing {
		return nil
	}
	nqn := volume.HostNQN(node)
	have := routeros.SplitAllowedHosts(disk.AllowHostName)
	if len(have) == 0 {
		// Never fenced (fencing was switched on later): admit the nodes
		// that stay attached, not nobody.
		for _, n := range d.attached.get(disk.Slot).names() {
			have = append(have, volume.HostNQN(n))
		}
	} else if !slices.Contains(have, nqn) {
		return nil
	}
	want := slices.DeleteFunc(have, func(h string) bool { return h == nqn })
	return d.setAllowedHosts(ctx, disk, want)
}

// setAllowedHosts writes hosts (FencedHostNQN when none) unless the disk
// shows them already, then reads them back: what the RDS shows afterwards
// decides, not the lack of an error. A mismatch fails, naming what was seen.
func (d *Driver) setAllowedHosts(ctx context.Context, disk routeros.Disk, hosts []string) error {
	if len(hosts) == 0 {
		hosts = []string{FencedHostNQN}
	}
	if sameHosts(routeros.SplitAllowedHosts(disk.AllowHostName), hosts) {
		return nil
	}
	if err := d.rds.SetAllowedHosts(ctx, disk.Slot, hosts); err != nil {
		return fmt.Errorf("restricting disk %s to hosts %s: %w", disk.Slot, strings.Join(hosts, ","), err)
	}
	got, err := d.rds.Get(ctx, disk.Slot)
	if err != nil {
		return fmt.Errorf("reading back the allowed hosts of disk %s: %w", disk.Slot, err)
	}
	if !sameHosts(routeros.SplitAllowedHosts(got.AllowHostName), hosts) {
		return fmt.Errorf("%w: disk %s: set nvme-tcp-server-allow-host-name=%q, the RDS shows %q", errFenceMismatch, disk.Slot, strings.Join(hosts, ","), got.AllowHostName)
	}
	klog.V(2).InfoS("Allowed hosts set", "volumeID", disk.Slot, "hosts", hosts)
	return nil
}

// sameHosts compares two host lists as sets.
func sameHosts(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

// ReleaseNode detaches every volume from node, a Node deleted from the
// cluster (FEN-2): its attachments must not block the volumes' next nodes.
// A volume busy with another operation is retried until ctx ends.
func (d *Driver) ReleaseNode(ctx context.Context, node string) {
	for _, id := range d.attached.volumesOf(node) {
		d.releaseFrom(ctx, id, node)
	}
}

// ReleaseDeletedNodes releases the attachments of every node that is no
// longer in the cluster: Nodes deleted while the controller was away. Call
// it once the handler of Node deletions is in place, so that none is
// missed between the two.
func (d *Driver) ReleaseDeletedNodes(ctx context.Context) {
	if d.view == nil {
		return
	}
	for _, node := range d.attached.nodes() {
		if !d.view.NodeExists(node) {
			klog.InfoS("Releasing the attachments of a Node deleted while the controller was away", "node", node)
			d.ReleaseNode(ctx, node)
		}
	}
}

// releaseRetry paces ReleaseNode's retries of a busy volume, and
// releaseTimeout bounds each attempt (a few RouterOS commands).
const (
	releaseRetry   = time.Second
	releaseTimeout = time.Minute
)

func (d *Driver) releaseFrom(ctx context.Context, id, node string) {
	for {
		release, ok := d.inFlight.TryAcquire(id)
		if ok {
			opCtx, cancel := context.WithTimeout(ctx, releaseTimeout)
			err := d.unpublish(opCtx, id, node, "the Node was deleted")
			cancel()
			release()
			if err == nil {
				return
			}
			klog.ErrorS(err, "Cannot release the attachment of a deleted node; retrying", "volumeID", id, "node", node)
		}
		select {
		case <-ctx.Done():
			return
		case <-d.clock.After(releaseRetry):
		}
	}
}

// WatchMigrations reports, once each, dual attachments that outlive their
// migration timeout (MIG-3): a Warning MigrationFailed event, the timeout
// result and a log line. It checks every interval until ctx ends.
func (d *Driver) WatchMigrations(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = defaultMigrationCheckTick
	}
	t := d.clock.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
			d.reportOverdue()
		}
	}
}

func (d *Driver) reportOverdue() {
	now := d.clock.Now()
	for id, rec := range d.attached.overdue(now) {
		source, target := rec.nodes[0].node, rec.nodes[1].node
		_, since := rec.migrating()
		elapsed := now.Sub(since).Round(time.Second)
		d.migration.results.WithLabelValues(migrationResultTimeout).Inc()
		klog.ErrorS(nil, "Live migration outlived its timeout: the volume is still attached to two nodes", "volumeID", id, "source", source, "target", target, "elapsed", elapsed, "timeout", rec.migrationTimeout)
		d.event(id, eventWarning, ReasonMigrationFailed, fmt.Sprintf(
			"Live migration from node %s to node %s has kept the volume attached to both nodes for %s, past its timeout of %s. "+
				"Find the migration (kubectl get vmim) and finish or cancel it (virtctl migrate-cancel) so that one node detaches; no third node can attach meanwhile",
			source, target, elapsed, rec.migrationTimeout))
	}
}

// rebuild loads the attachment state from the cluster's VolumeAttachments,
// ordered by creation so that a migration's source comes first.
func (d *Driver) rebuild() {
	type seen struct {
		node  string
		since time.Time
		ctx   map[string]string
	}
	byVolume := map[string][]seen{}
	d.view.EachAttached(func(id, node string, since time.Time, vctx map[string]string) {
		byVolume[id] = append(byVolume[id], seen{node, since, vctx})
	})
	for id, list := range byVolume {
		slices.SortFunc(list, func(a, b seen) int { return a.since.Compare(b.since) })
		rec := attachment{migrationTimeout: volume.DefaultMigrationTimeout}
		for _, s := range list {
			rec.nodes = append(rec.nodes, attachedNode{node: s.node, since: s.since})
			if v, ok := s.ctx[volume.KeyMigrationTimeout]; ok {
				if t, err := volume.ParseMigrationTimeout(v); err == nil {
					rec.migrationTimeout = t
				}
			}
		}
		d.attached.put(id, rec)
		klog.InfoS("Attachment restored from VolumeAttachments", "volumeID", id, "nodes", rec.names())
	}
}

// annotate records the attached nodes on the volume's PV; a failure is
// logged, as the record is for people and the cluster's VolumeAttachments
// are the truth.
func (d *Driver) annotate(ctx context.Context, id string, nodes []string) {
	if d.reporter == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reportTimeout)
	defer cancel()
	if err := d.reporter.Annotate(ctx, id, nodes); err != nil {
		klog.ErrorS(err, "Cannot record the attached nodes on the PV", "volumeID", id, "nodes", nodes)
	}
}

func (d *Driver) event(id, eventType, reason, message string) {
	if d.reporter != nil {
		d.reporter.Event(id, eventType, reason, message)
	}
}
