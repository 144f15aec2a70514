package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/rds-csi/rds-csi/controller/routeros"
	"github.com/rds-csi/rds-csi/volume"
)

// maxAttachedNodes: a KubeVirt live migration needs the source and the
// target, and nothing ever needs more.
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
	// errIncompatible: the volume is published to the node already, with
	// another access mode.
	errIncompatible = errors.New("volume is published to the node with an incompatible capability")
	// errClusterUnknown: the cluster's attachments cannot be read.
	errClusterUnknown = errors.New("cannot read the cluster's attachments")
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
	merged, err := d.mergeLive(id, node, &rec)
	if err != nil {
		return err
	}
	if merged {
		// The cluster's attachments are the truth: recorded even when
		// this publish is refused, so that unpublish keeps their access.
		d.attached.swap(id, rec)
	}
	if i := rec.index(node); i >= 0 {
		// Published already: the attacher retries and resyncs. The target
		// must still admit the node, with the same access mode.
		if rec.nodes[i].multi != multi {
			return fmt.Errorf("%w: volume %s is published to node %s %s; it cannot be published there again %s",
				errIncompatible, id, node, modeName(rec.nodes[i].multi), modeName(multi))
		}
		return d.fence(ctx, disk, rec.names())
	}
	now := d.clock.Now()
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
	case !rec.nodes[0].multi:
		return d.conflict(id, node, fmt.Errorf("%w: volume %s is attached to node %s %s: no second node may attach it, whatever mode it asks for. "+
			"Stop the Pod using it on %s so that it detaches there; %s attaches it next",
			errConflict, id, rec.nodes[0].node, modeName(false), rec.nodes[0].node, node))
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
	rec.nodes = append(rec.nodes, attachedNode{node: node, since: now, multi: multi})
	if secondary {
		rec.migrationTimeout, rec.timeoutReported = timeout, false
	}
	// The stored record, not the copy read above: the timeout check may
	// have reported its dual attachment meanwhile.
	before := d.attached.swap(id, rec)
	klog.InfoS("Volume published", "volumeID", id, "node", node, "nodes", rec.names(), "multiWriter", multi, "fenced", d.opts.TargetFencing)

	for _, r := range released {
		d.event(id, eventNormal, ReasonVolumeDetached, fmt.Sprintf("Released the stale attachment of node %s (%s) so that %s can attach", r.node, r.why, node))
	}
	if migrating, since := before.migrating(); migrating {
		// A migration whose node was released ended then, like a detach.
		left := func(n string) bool {
			return slices.ContainsFunc(released, func(r releasedNode) bool { return r.node == n })
		}
		if left(before.nodes[0].node) || left(before.nodes[1].node) {
			d.endMigration(id, before, left(before.nodes[0].node), now.Sub(since))
		}
	}
	d.annotate(ctx, id, rec.names())
	d.event(id, eventNormal, ReasonVolumeAttached, fmt.Sprintf("Attached to node %s", node))
	if secondary {
		klog.InfoS("Live migration started", "volumeID", id, "source", rec.nodes[0].node, "target", node, "timeout", timeout)
		d.event(id, eventNormal, ReasonMigrationStarted, fmt.Sprintf("Live migration from node %s to node %s started: both nodes are attached; it must end within %s (migrationTimeoutSeconds)", rec.nodes[0].node, node, timeout))
	}
	return nil
}

// modeName says how a node was (or asks to be) published.
func modeName(multi bool) string {
	if multi {
		return "as ReadWriteMany (MULTI_NODE_MULTI_WRITER)"
	}
	return "as ReadWriteOnce (single node)"
}

// mergeLive adds to rec every node that has a live VolumeAttachment of the
// volume in the cluster but is missing from rec: an attachment made by
// another controller process (two run side by side during a rolling
// update) or one this process has not recorded. A holder the controller
// does not know of must block like one it knows. An attach that is still
// under way counts when its VolumeAttachment is older than node's own, so
// that two attaches under way do not block each other. It reports whether
// it added a node.
func (d *Driver) mergeLive(id, node string, rec *attachment) (bool, error) {
	if d.view == nil {
		return false, nil
	}
	live, err := d.view.LiveAttachments(id)
	if err != nil {
		return false, fmt.Errorf("%w: the VolumeAttachments of volume %s cannot be read: %w", errClusterUnknown, id, err)
	}
	slices.SortStableFunc(live, compareAttachments(nil))
	own := slices.IndexFunc(live, func(a ClusterAttachment) bool { return a.Node == node })
	added := false
	for _, a := range live {
		if a.Node == node || rec.index(a.Node) >= 0 || !d.view.NodeExists(a.Node) {
			continue
		}
		if !a.Attached && own >= 0 && !olderAttachment(a, live[own]) {
			continue
		}
		klog.InfoS("Attachment found in the cluster that this controller did not record", "volumeID", id, "node", a.Node, "volumeAttachment", a.Name, "attached", a.Attached)
		rec.nodes = append(rec.nodes, attachedNode{node: a.Node, since: a.Created, multi: a.MultiWriter})
		if v, ok := a.VolumeContext[volume.KeyMigrationTimeout]; ok && len(rec.nodes) == 2 {
			if t, err := volume.ParseMigrationTimeout(v); err == nil {
				rec.migrationTimeout = t
			}
		}
		added = true
	}
	if added && rec.migrationTimeout == 0 {
		rec.migrationTimeout = volume.DefaultMigrationTimeout
	}
	return added, nil
}

// olderAttachment reports whether VolumeAttachment a was created before b:
// by creation time, then by name (the times have a resolution of seconds).
func olderAttachment(a, b ClusterAttachment) bool {
	return compareAttachments(nil)(a, b) < 0
}

// compareAttachments orders VolumeAttachments by creation time (whole
// seconds), then by their node's place in recorded (the PV's annotation,
// in attach order), then by name.
func compareAttachments(recorded []string) func(a, b ClusterAttachment) int {
	place := func(n string) int {
		if i := slices.Index(recorded, n); i >= 0 {
			return i
		}
		return len(recorded)
	}
	return func(a, b ClusterAttachment) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		if c := place(a.Node) - place(b.Node); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	}
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
// the disk's allowed host list becomes that of the nodes that stay
// attached, so the other nodes' access is never disturbed.
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
// caller holds the volume's in-flight key. The allowed host list is written
// once, from the record: the nodes that stay.
func (d *Driver) unpublish(ctx context.Context, id, node, why string) error {
	disk, err := d.rds.Get(ctx, id)
	switch {
	case routeros.IsKind(err, routeros.KindNotFound):
		// The volume is gone: so is every attachment of it.
		d.detachNodes(ctx, id, d.attached.get(id).names(), node, why+"; the volume no longer exists")
		return nil
	case err != nil:
		return err
	}
	rec := d.attached.get(id)
	leaving := []string{node}
	if node == "" {
		leaving = rec.names()
	}
	if !d.ours(disk) {
		// Not this driver's disk (a static PV naming a foreign slot): its
		// export is not the controller's to change.
		klog.InfoS("Unpublishing a disk that is not a volume of this driver: the RDS is left alone", "volumeID", id, "node", node, "nqn", disk.NQN)
		d.detachNodes(ctx, id, leaving, node, why)
		return nil
	}
	var stay []string
	for _, n := range rec.names() {
		if !slices.Contains(leaving, n) {
			stay = append(stay, n)
		}
	}
	if err := d.fence(ctx, disk, stay); err != nil {
		return err
	}
	d.detachNodes(ctx, id, leaving, node, why)
	return nil
}

// detachNodes removes nodes from the volume's record and reports it. The
// first detach of a dual attachment ends the migration: source gone =
// completed, target gone = rolled back. asked is the node the request
// named (empty: every node).
func (d *Driver) detachNodes(ctx context.Context, id string, nodes []string, asked, why string) {
	before, removed := d.attached.remove(id, nodes)
	if len(removed) == 0 {
		return
	}
	rest := d.attached.get(id).names()
	for _, n := range removed {
		klog.InfoS("Volume unpublished", "volumeID", id, "node", n, "why", why, "nodes", rest)
	}
	d.annotate(ctx, id, rest)
	for _, n := range removed {
		d.event(id, eventNormal, ReasonVolumeDetached, fmt.Sprintf("Detached from node %s (%s)", n, why))
	}
	if migrating, since := before.migrating(); migrating {
		source := before.nodes[0].node
		sourceLeft := slices.Contains(removed, source) && (asked == "" || asked == source)
		d.endMigration(id, before, sourceLeft, d.clock.Now().Sub(since))
	}
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

// fence sets the disk's allowed hosts to the host NQNs of nodes
// (FencedHostNQN when none) and reads them back. The list is always derived
// from the attachment record, never from what the disk showed: an entry the
// controller did not write is not kept. Without target fencing it does
// nothing.
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

// setAllowedHosts writes hosts (FencedHostNQN when none) unless the disk
// shows them already, then reads them back: what the RDS shows afterwards
// decides, not the lack of an error. A mismatch fails, naming what was seen,
// and the list the disk showed before is restored (best effort, logged).
func (d *Driver) setAllowedHosts(ctx context.Context, disk routeros.Disk, hosts []string) error {
	if len(hosts) == 0 {
		hosts = []string{FencedHostNQN}
	}
	previous := routeros.SplitAllowedHosts(disk.AllowHostName)
	if sameHosts(previous, hosts) {
		return nil
	}
	err := d.rds.SetAllowedHosts(ctx, disk.Slot, hosts)
	if err != nil {
		err = fmt.Errorf("restricting disk %s to hosts %s: %w", disk.Slot, strings.Join(hosts, ","), err)
	} else if got, gerr := d.rds.Get(ctx, disk.Slot); gerr != nil {
		err = fmt.Errorf("reading back the allowed hosts of disk %s: %w", disk.Slot, gerr)
	} else if !sameHosts(routeros.SplitAllowedHosts(got.AllowHostName), hosts) {
		err = fmt.Errorf("%w: disk %s: set nvme-tcp-server-allow-host-name=%q, the RDS shows %q", errFenceMismatch, disk.Slot, strings.Join(hosts, ","), got.AllowHostName)
	}
	if err != nil {
		d.restoreAllowedHosts(ctx, disk.Slot, previous)
		return err
	}
	klog.V(2).InfoS("Allowed hosts set", "volumeID", disk.Slot, "hosts", hosts)
	return nil
}

// restoreTimeout bounds the restore of an allowed host list after a failed
// fence: the request's own deadline may be what failed it.
const restoreTimeout = 15 * time.Second

// restoreAllowedHosts puts back the list a disk showed before a fence that
// failed, so that a failure leaves the export as the record has it. An empty
// list cannot be written (it would be refused, and admits every host).
func (d *Driver) restoreAllowedHosts(ctx context.Context, slot string, previous []string) {
	if len(previous) == 0 {
		klog.InfoS("A fence failed on a disk that was never fenced; nothing to restore", "volumeID", slot)
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), restoreTimeout)
	defer cancel()
	if err := d.rds.SetAllowedHosts(ctx, slot, previous); err != nil {
		klog.ErrorS(err, "A fence failed and the previous allowed host list could not be restored", "volumeID", slot, "previous", previous)
		return
	}
	klog.InfoS("A fence failed; the previous allowed host list was restored", "volumeID", slot, "hosts", previous)
}

// sameHosts compares two host lists as sets.
func sameHosts(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

// ReleaseNode detaches every volume from node, a Node deleted from the
// cluster: its attachments must not block the volumes' next nodes.
// Each volume is released on its own, so one that cannot be released holds
// up none of the others. A volume busy with another operation is retried
// until ctx ends; an error retrying cannot fix is logged and counted, and
// that volume given up.
func (d *Driver) ReleaseNode(ctx context.Context, node string) {
	deleted := d.clock.Now()
	var wg sync.WaitGroup
	for _, id := range d.attached.volumesOf(node) {
		wg.Go(func() { d.releaseFrom(ctx, id, node, deleted) })
	}
	wg.Wait()
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

// releaseFrom releases volume id's attachment to node, whose Node was seen
// deleted at deleted.
func (d *Driver) releaseFrom(ctx context.Context, id, node string, deleted time.Time) {
	for {
		release, ok := d.inFlight.TryAcquire(id)
		if ok {
			err := d.releaseOnce(ctx, id, node, deleted)
			release()
			switch {
			case err == nil:
				return
			case permanent(err):
				d.migration.abandoned.Inc()
				klog.ErrorS(err, "Cannot release the attachment of a deleted node, and retrying cannot help: giving up on this volume. Check the disk on the RDS and release it by hand", "volumeID", id, "node", node)
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

// releaseOnce releases the attachment under the volume's in-flight key,
// once more sure that it is stale: the Node may have registered again, and
// its attachment may be newer than the deletion (both then stay).
func (d *Driver) releaseOnce(ctx context.Context, id, node string, deleted time.Time) error {
	if d.view != nil && d.view.NodeExists(node) {
		klog.InfoS("The deleted Node is back: its attachment stays", "volumeID", id, "node", node)
		return nil
	}
	rec := d.attached.get(id)
	i := rec.index(node)
	if i < 0 {
		return nil
	}
	if rec.nodes[i].since.After(deleted) {
		klog.InfoS("The attachment is newer than the Node's deletion: it stays", "volumeID", id, "node", node, "attached", rec.nodes[i].since, "deleted", deleted)
		return nil
	}
	opCtx, cancel := context.WithTimeout(ctx, releaseTimeout)
	defer cancel()
	return d.unpublish(opCtx, id, node, "the Node was deleted")
}

// permanent reports whether retrying err cannot help: the RDS refused a
// value, the controller refused a step, or the RDS does not take the list.
func permanent(err error) bool {
	return routeros.IsKind(err, routeros.KindInvalid) || errors.Is(err, errRefused) || errors.Is(err, errFenceMismatch)
}

// WatchMigrations reports, once each, dual attachments that outlive their
// migration timeout: a Warning MigrationFailed event, the timeout
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
// ordered by creation so that a migration's source comes first. Creation
// times have a resolution of seconds: ties are broken by the PV's
// annotation (attach order), then by the VolumeAttachment's name.
func (d *Driver) rebuild() {
	byVolume := map[string][]ClusterAttachment{}
	d.view.EachAttached(func(id string, a ClusterAttachment) {
		byVolume[id] = append(byVolume[id], a)
	})
	for id, list := range byVolume {
		var recorded []string
		for _, a := range list {
			if len(a.Recorded) > 0 {
				recorded = a.Recorded
				break
			}
		}
		slices.SortStableFunc(list, compareAttachments(recorded))
		rec := attachment{migrationTimeout: volume.DefaultMigrationTimeout}
		for _, a := range list {
			if rec.index(a.Node) >= 0 {
				continue // two PVs of one volume handle
			}
			rec.nodes = append(rec.nodes, attachedNode{node: a.Node, since: a.Created, multi: a.MultiWriter})
			if v, ok := a.VolumeContext[volume.KeyMigrationTimeout]; ok {
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
