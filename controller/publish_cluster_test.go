package controller

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/rds-csi/rds-csi/controller/routeros"
	"github.com/rds-csi/rds-csi/kube"
	"github.com/rds-csi/rds-csi/kube/events"
	"github.com/rds-csi/rds-csi/volume"
)

// The cluster as the real kube.Watcher sees it, through client-go's fake
// API: PVs found by volume handle, their VolumeAttachments by PV name.

func testPV(name, id string, mode corev1.PersistentVolumeAccessMode) *corev1.PersistentVolume {
	return &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{mode},
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver: DefaultDriverName, VolumeHandle: id, VolumeAttributes: map[string]string{volume.KeyMigrationTimeout: "120"},
			}},
		},
	}
}

func testVA(pv, node string, created time.Time, attached bool) *storagev1.VolumeAttachment {
	return &storagev1.VolumeAttachment{
		ObjectMeta: metav1.ObjectMeta{Name: "va-" + pv + "-" + node, CreationTimestamp: metav1.NewTime(created)},
		Spec:       storagev1.VolumeAttachmentSpec{Attacher: DefaultDriverName, NodeName: node, Source: storagev1.VolumeAttachmentSource{PersistentVolumeName: &pv}},
		Status:     storagev1.VolumeAttachmentStatus{Attached: attached},
	}
}

func testNodes(names ...string) []*corev1.Node {
	var out []*corev1.Node
	for _, n := range names {
		out = append(out, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}})
	}
	return out
}

// clusterDriver starts a kube.Watcher on client and a driver on the bed's
// RDS that keeps its state against it, as cmd/rds-csi-controller does.
func clusterDriver(t *testing.T, b *publishBed, client *fake.Clientset) *Driver {
	t.Helper()
	rec := events.NewRecorder(kube.EventsAPI(client), "rds-csi-controller", "test", prometheus.NewRegistry())
	t.Cleanup(rec.Shutdown)
	w, err := kube.NewWatcher(client, DefaultDriverName, rec)
	must(t, err)
	must(t, w.Start(t.Context(), 10*time.Second))
	t.Cleanup(w.Stop)
	return New(b.d.opts, b.rds.Disks, WithCluster(w, w), WithClock(b.clock), WithMetrics(prometheus.NewRegistry()))
}

func createVA(t *testing.T, client *fake.Clientset, va *storagev1.VolumeAttachment) {
	t.Helper()
	_, err := client.StorageV1().VolumeAttachments().Create(context.Background(), va, metav1.CreateOptions{})
	must(t, err)
}

func publishTo(d *Driver, id, node string, vc *csi.VolumeCapability) error {
	_, err := d.ControllerPublishVolume(context.Background(), &csi.ControllerPublishVolumeRequest{
		VolumeId: id, NodeId: node, VolumeCapability: vc, VolumeContext: map[string]string{volume.KeyMigrationTimeout: "120"},
	})
	return err
}

// Two controller processes run side by side during a rolling update: the
// old one attaches the volume to node-1 after the new one rebuilt its
// state. The new one must see node-1's VolumeAttachment before it lets
// node-2 in.
func TestAnAttachmentAnotherControllerMadeBlocksTheNextNode(t *testing.T) {
	b := newPublishBed(t, true, nil)
	id := b.volume(t, "pvc-two-controllers", rwo)
	client := fake.NewClientset(testPV("pv-1", id, corev1.ReadWriteOnce), testNodes("node-1", "node-2")[0], testNodes("node-2")[0])
	d := clusterDriver(t, b, client)

	// The old controller publishes to node-1 (its own process, same RDS).
	old := New(b.d.opts, b.rds.Disks, WithClock(b.clock))
	must(t, publishTo(old, id, "node-1", rwo))
	createVA(t, client, testVA("pv-1", "node-1", b.clock.Now().Add(-time.Second), true))
	b.clock.Step(time.Second)
	createVA(t, client, testVA("pv-1", "node-2", b.clock.Now(), false))
	waitUntil(t, "the informer to see both VolumeAttachments", func() bool {
		ok1, _ := d.view.Attachment(id, "node-1")
		ok2, _ := d.view.Attachment(id, "node-2")
		live, _ := d.view.LiveAttachments(id)
		return ok1 && ok2 && len(live) == 2
	})
	err := publishTo(d, id, "node-2", rwo)
	wantCode(t, err, codes.FailedPrecondition, "attached to node node-1")
	if got, want := b.allowed(t, id), hostNQNs("node-1"); !slices.Equal(got, want) {
		t.Errorf("the RDS admits %q, want node-1 only: %q", got, want)
	}
	if got := d.attached.get(id).names(); !slices.Equal(got, []string{"node-1"}) {
		t.Errorf("record %v, want the cluster's node-1", got)
	}
}

// ReadWriteMany: two nodes attached through another controller, a third is
// refused (at most two), not attached as a third.
func TestAThirdNodeIsRefusedWhenAnotherControllerAttachedTwo(t *testing.T) {
	b := newPublishBed(t, true, nil)
	id := b.volume(t, "pvc-rwx-three", rwxBlock)
	client := fake.NewClientset(testPV("pv-1", id, corev1.ReadWriteMany), testNodes("node-a")[0], testNodes("node-b")[0], testNodes("node-c")[0])
	d := clusterDriver(t, b, client)
	t0 := b.clock.Now()
	createVA(t, client, testVA("pv-1", "node-a", t0.Add(-2*time.Second), true))
	createVA(t, client, testVA("pv-1", "node-b", t0.Add(-time.Second), true))
	createVA(t, client, testVA("pv-1", "node-c", t0, false))
	waitUntil(t, "the informer", func() bool { live, _ := d.view.LiveAttachments(id); return len(live) == 3 })
	err := publishTo(d, id, "node-c", rwxBlock)
	wantCode(t, err, codes.FailedPrecondition, "at most 2 nodes")
	if got := d.attached.get(id).names(); !slices.Equal(got, []string{"node-a", "node-b"}) {
		t.Errorf("record %v, want node-a then node-b", got)
	}
}

// Two attaches under way do not block each other: the older
// VolumeAttachment's node attaches, the younger is refused.
func TestOfTwoAttachesUnderWayTheOlderWins(t *testing.T) {
	b := newPublishBed(t, false, nil)
	id := b.volume(t, "pvc-both-attaching", rwo)
	b.view.add(id, "node-1")
	b.clock.Step(time.Second)
	b.view.add(id, "node-2")
	_, err := b.d.ControllerPublishVolume(context.Background(), &csi.ControllerPublishVolumeRequest{VolumeId: id, NodeId: "node-1", VolumeCapability: rwo})
	must(t, err)
	_, err = b.d.ControllerPublishVolume(context.Background(), &csi.ControllerPublishVolumeRequest{VolumeId: id, NodeId: "node-2", VolumeCapability: rwo})
	wantCode(t, err, codes.FailedPrecondition, "node-1")
}

// Two static PVs name one volume: node-1 holds it through pv-a; node-2
// asks through pv-b. node-1's attachment exists, through the other PV, and
// must not be released as stale.
func TestTwoPVsOfOneVolumeDoNotReleaseALiveHolder(t *testing.T) {
	b := newPublishBed(t, true, nil)
	id := b.volume(t, "pvc-twin", rwo)
	client := fake.NewClientset(testPV("pv-a", id, corev1.ReadWriteOnce), testPV("pv-b", id, corev1.ReadWriteOnce), testNodes("node-1")[0], testNodes("node-2")[0])
	d := clusterDriver(t, b, client)
	createVA(t, client, testVA("pv-a", "node-1", b.clock.Now(), false))
	waitUntil(t, "the informer", func() bool { live, _ := d.view.LiveAttachments(id); return len(live) == 1 })
	must(t, publishTo(d, id, "node-1", rwo))
	b.clock.Step(time.Hour) // far past the grace period
	createVA(t, client, testVA("pv-b", "node-2", b.clock.Now(), false))
	waitUntil(t, "the informer", func() bool { live, _ := d.view.LiveAttachments(id); return len(live) == 2 })
	err := publishTo(d, id, "node-2", rwo)
	wantCode(t, err, codes.FailedPrecondition, "attached to node node-1")
	if got, want := b.allowed(t, id), hostNQNs("node-1"); !slices.Equal(got, want) {
		t.Errorf("the RDS admits %q, want node-1 only", got)
	}
}

// A holder whose volume has no PV at all cannot be told stale: it blocks.
func TestAHolderIsReleasedOnlyOnEvidence(t *testing.T) {
	b := newPublishBed(t, false, nil)
	id := b.volume(t, "pvc-no-pv", rwo)
	client := fake.NewClientset(testNodes("node-1")[0], testNodes("node-2")[0])
	d := clusterDriver(t, b, client)
	d.attached.put(id, attachment{nodes: []attachedNode{{node: "node-1", since: b.clock.Now().Add(-time.Hour)}}})
	err := publishTo(d, id, "node-2", rwo)
	wantCode(t, err, codes.FailedPrecondition, "node-1")
}

// A static PV that names a disk of another exporter: unpublishing it drops
// the record and never writes to that disk.
func TestUnpublishingADiskThatIsNotOursLeavesTheRDSAlone(t *testing.T) {
	b := newPublishBed(t, true, nil)
	ctx := context.Background()
	const slot = "foreign-disk"
	must(t, b.rds.Disks.Create(ctx, routeros.DiskSpec{Slot: slot, FilePath: "/storage-pool/other/foreign-disk.img", Size: gib, NQN: "nqn.2000-02.com.mikrotik:someone-else", Port: 4420}))
	must(t, b.rds.Disks.SetAllowedHosts(ctx, slot, []string{"nqn.2014-08.org.example:their-host"}))
	// Rebuilt from a VolumeAttachment of the static PV.
	b.d.attached.put(slot, attachment{nodes: []attachedNode{{node: "node-1", since: b.clock.Now()}}})
	before := len(b.rds.Sim.Commands())
	must(t, b.unpublish(slot, "node-1"))
	for _, c := range b.rds.Sim.Commands()[before:] {
		if strings.Contains(c, "allow-host-name") {
			t.Fatalf("the controller changed a disk that is not its own: %q", c)
		}
	}
	if got := b.allowed(t, slot); !slices.Equal(got, []string{"nqn.2014-08.org.example:their-host"}) {
		t.Errorf("the foreign disk admits %q", got)
	}
	if got := b.d.attached.get(slot); len(got.nodes) != 0 {
		t.Errorf("record %v left", got.names())
	}
}

// Unpublish without a node detaches every node, and the RDS ends with the
// list of the record: nobody.
func TestUnpublishFromEveryNodeLeavesNobodyAdmitted(t *testing.T) {
	b := newPublishBed(t, true, nil)
	id := b.volume(t, "pvc-all", rwxBlock)
	must(t, b.publish(id, "node-a", rwxBlock))
	must(t, b.publish(id, "node-b", rwxBlock))
	must(t, b.unpublish(id, ""))
	if got := b.allowed(t, id); !slices.Equal(got, []string{FencedHostNQN}) {
		t.Errorf("detached from every node, the RDS admits %q", got)
	}
	if got := b.d.attached.get(id); len(got.nodes) != 0 {
		t.Errorf("record %v", got.names())
	}
	if got := b.reporter.withReason(ReasonVolumeDetached); len(got) != 2 {
		t.Errorf("VolumeDetached events %q, want two", got)
	}
}

// trigger makes a test double misbehave once, when the test says so.
type trigger struct {
	mu sync.Mutex
	on bool
}

func (t *trigger) arm() { t.mu.Lock(); t.on = true; t.mu.Unlock() }

// fire reports whether the trigger was armed, and disarms it.
func (t *trigger) fire() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	on := t.on
	t.on = false
	return on
}

// invalidEntryRDS shows, once armed, an allowed host list with an entry
// that is no valid NQN (written by hand): the controller never copies it.
type invalidEntryRDS struct {
	RDS
	trigger
}

func (r *invalidEntryRDS) Get(ctx context.Context, slot string) (routeros.Disk, error) {
	disk, err := r.RDS.Get(ctx, slot)
	if err == nil && r.fire() {
		disk.AllowHostName += ",not an nqn"
	}
	return disk, err
}

func TestAnInvalidEntryOnTheDiskDoesNotBlockUnpublish(t *testing.T) {
	var inv *invalidEntryRDS
	b := newPublishBed(t, true, func(r RDS) RDS { inv = &invalidEntryRDS{RDS: r}; return inv })
	id := b.volume(t, "pvc-invalid-entry", rwo)
	must(t, b.publish(id, "node-1", rwo))
	inv.arm()
	must(t, b.unpublish(id, "node-1"))
	if got := b.allowed(t, id); !slices.Equal(got, []string{FencedHostNQN}) {
		t.Errorf("the RDS admits %q, want nobody", got)
	}
}

// refusingRDS refuses every allowed host list of the disk *slot names, as
// RouterOS does a value it cannot take.
type refusingRDS struct {
	RDS
	slot *string
}

func (r *refusingRDS) SetAllowedHosts(ctx context.Context, slot string, hosts []string) error {
	if slot == *r.slot {
		return &routeros.Error{Kind: routeros.KindInvalid, Command: "disk-set-allowed-hosts", Err: errors.New("invalid value for argument nvme-tcp-server-allow-host-name")}
	}
	return r.RDS.SetAllowedHosts(ctx, slot, hosts)
}

// A volume whose release fails for good is given up (logged, counted);
// the node's other volumes are released all the same, and the release ends.
func TestAVolumeThatCannotBeReleasedHoldsUpNoOther(t *testing.T) {
	var slot string
	b := newPublishBed(t, true, func(r RDS) RDS { return &refusingRDS{RDS: r, slot: &slot} })
	stuck := b.volume(t, "pvc-a-stuck", rwo)
	fine := b.volume(t, "pvc-b-fine", rwo)
	must(t, b.publish(stuck, "node-1", rwo))
	must(t, b.publish(fine, "node-1", rwo))
	slot = stuck
	b.view.deleteNode("node-1")
	done := make(chan struct{})
	go func() { defer close(done); b.d.ReleaseNode(context.Background(), "node-1") }()
	waitUntil(t, "the other volume to be released", func() bool {
		disk, err := b.rds.Disks.Get(context.Background(), fine)
		return err == nil && disk.AllowHostName == FencedHostNQN
	})
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the release retries an error that retrying cannot fix")
	}
	if got := b.allowed(t, fine); !slices.Equal(got, []string{FencedHostNQN}) {
		t.Errorf("the other volume still admits %q", got)
	}
	if got := testutil.ToFloat64(b.d.migration.abandoned); got != 1 {
		t.Errorf("abandoned releases %v, want 1", got)
	}
}

// The access mode is recorded with each attachment: a single-writer holder
// is not joined by a multi-writer node as if for a migration, and the same
// node cannot publish again with another mode.
func TestTheAccessModeOfTheHolderDecides(t *testing.T) {
	b := newPublishBed(t, true, nil)
	rwoBlock := blockCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)
	id := b.volume(t, "pvc-modes", rwxBlock)
	must(t, b.publish(id, "node-a", rwoBlock))
	err := b.publish(id, "node-b", rwxBlock)
	wantCode(t, err, codes.FailedPrecondition, "node-a as ReadWriteOnce")
	if got, want := b.allowed(t, id), hostNQNs("node-a"); !slices.Equal(got, want) {
		t.Errorf("the RDS admits %q, want node-a only", got)
	}
	wantCode(t, b.publish(id, "node-a", rwxBlock), codes.AlreadyExists, "node-a")
	must(t, b.publish(id, "node-a", rwoBlock))
}

// A Node deleted and registered again before its release ran keeps its
// attachment; so does an attachment made after the deletion.
func TestALateReleaseChecksTheNodeAgain(t *testing.T) {
	b := newPublishBed(t, true, nil)
	id := b.volume(t, "pvc-back", rwo)
	must(t, b.publish(id, "node-1", rwo))
	b.view.deleteNode("node-1")
	release, done := busyRelease(t, b, id, "node-1")
	waitUntil(t, "the release to wait", b.clock.HasWaiters)
	b.view.registerNode("node-1") // the kubelet registered it again
	release()
	b.clock.Step(releaseRetry)
	<-done
	if got, want := b.allowed(t, id), hostNQNs("node-1"); !slices.Equal(got, want) {
		t.Fatalf("a late release detached a live attachment: the RDS admits %q", got)
	}
	if got := b.d.attached.get(id).names(); !slices.Equal(got, []string{"node-1"}) {
		t.Fatalf("record %v", got)
	}

	// Deleted again; the attachment is then re-made (newer than the
	// deletion) before the release gets the volume.
	b.view.deleteNode("node-1")
	release, done = busyRelease(t, b, id, "node-1")
	waitUntil(t, "the release to wait", b.clock.HasWaiters)
	b.clock.Step(time.Millisecond)
	rec := b.d.attached.get(id)
	rec.nodes[0].since = b.clock.Now()
	b.d.attached.put(id, rec)
	release()
	b.clock.Step(releaseRetry)
	<-done
	if got := b.d.attached.get(id).names(); !slices.Equal(got, []string{"node-1"}) {
		t.Fatalf("an attachment newer than the deletion was released: record %v", got)
	}
}

// reportDuringFenceRDS runs the timeout check while a publish fences: the
// check marks the stored record between the publish's read and write.
type reportDuringFenceRDS struct {
	RDS
	during func()
}

func (r *reportDuringFenceRDS) SetAllowedHosts(ctx context.Context, slot string, hosts []string) error {
	if f := r.during; f != nil {
		r.during = nil
		f()
	}
	return r.RDS.SetAllowedHosts(ctx, slot, hosts)
}

func TestAMigrationHasOneResultWhenItsTimeoutIsReportedDuringAPublish(t *testing.T) {
	var hook *reportDuringFenceRDS
	b := newPublishBed(t, true, func(r RDS) RDS { hook = &reportDuringFenceRDS{RDS: r}; return hook })
	id := b.volume(t, "pvc-one-result", rwxBlock)
	must(t, b.publish(id, "node-a", rwxBlock))
	must(t, b.publish(id, "node-b", rwxBlock))
	b.clock.Step(3 * time.Minute) // past the 120 s timeout, not reported yet
	b.view.deleteNode("node-b")   // the target is gone; node-c asks
	hook.during = b.d.reportOverdue
	must(t, b.publish(id, "node-c", rwxBlock))
	results := func(r string) float64 { return testutil.ToFloat64(b.d.migration.results.WithLabelValues(r)) }
	if results(migrationResultTimeout) != 1 || results(migrationResultFailed) != 0 {
		t.Errorf("results timeout=%v failed=%v, want the one result timeout", results(migrationResultTimeout), results(migrationResultFailed))
	}
}

// A dual attachment of a volume deleted meanwhile still ends its migration
// when it is unpublished.
func TestUnpublishingAGoneVolumeEndsItsMigration(t *testing.T) {
	b := newPublishBed(t, false, nil)
	id := b.volume(t, "pvc-gone-dual", rwxBlock)
	must(t, b.publish(id, "node-a", rwxBlock))
	must(t, b.publish(id, "node-b", rwxBlock))
	must(t, b.rds.Disks.Remove(context.Background(), id))
	b.clock.Step(20 * time.Second)
	must(t, b.unpublish(id, "node-b"))
	if got := testutil.ToFloat64(b.d.migration.results.WithLabelValues(migrationResultFailed)); got != 1 {
		t.Errorf("failed migrations %v, want 1", got)
	}
	if got := b.reporter.withReason(ReasonMigrationFailed); len(got) != 1 {
		t.Errorf("MigrationFailed events %q, want one", got)
	}
	wantHistogramCount(t, b.reg, 1)
	if got := testutil.ToFloat64(b.d.migration.active); got != 0 {
		t.Errorf("active migrations %v", got)
	}
}

// manglingRDS applies, once armed, another list than it was given (it
// drops the first host), as an RDS that read the property differently
// would.
type manglingRDS struct {
	RDS
	trigger
}

func (r *manglingRDS) SetAllowedHosts(ctx context.Context, slot string, hosts []string) error {
	if len(hosts) > 1 && r.fire() {
		hosts = hosts[1:]
	}
	return r.RDS.SetAllowedHosts(ctx, slot, hosts)
}

// A fence the RDS did not take is rolled back: the node already attached
// keeps its access.
func TestAFailedFenceRestoresThePreviousList(t *testing.T) {
	var m *manglingRDS
	b := newPublishBed(t, true, func(r RDS) RDS { m = &manglingRDS{RDS: r}; return m })
	id := b.volume(t, "pvc-rollback", rwxBlock)
	must(t, b.publish(id, "node-a", rwxBlock))
	m.arm()
	wantCode(t, b.publish(id, "node-b", rwxBlock), codes.Internal, "the RDS shows")
	if got, want := b.allowed(t, id), hostNQNs("node-a"); !slices.Equal(got, want) {
		t.Errorf("after the failed fence the RDS admits %q, want node-a's list restored: %q", got, want)
	}
}

// After a restart, two VolumeAttachments created in the same second are
// ordered by the PV's annotation (attach order), not by chance.
func TestRebuildOrdersSameSecondAttachmentsByThePVRecord(t *testing.T) {
	b := newPublishBed(t, false, nil)
	id := b.volume(t, "pvc-same-second", rwxBlock)
	pv := testPV("pv-1", id, corev1.ReadWriteMany)
	pv.Annotations = map[string]string{kube.AttachedNodesAnnotation: "node-z,node-a"}
	t0 := b.clock.Now().Truncate(time.Second)
	client := fake.NewClientset(pv, testVA("pv-1", "node-a", t0, true), testVA("pv-1", "node-z", t0, true), testNodes("node-a")[0], testNodes("node-z")[0])
	d := clusterDriver(t, b, client)
	if got := d.attached.get(id).names(); !slices.Equal(got, []string{"node-z", "node-a"}) {
		t.Errorf("rebuilt %v, want the PV's order node-z (source), node-a", got)
	}
}

// A volume busy with another operation holds up none of the node's other
// volumes: each is released on its own.
func TestABusyVolumeDoesNotHoldUpTheNodesOtherVolumes(t *testing.T) {
	b := newPublishBed(t, true, nil)
	busy := b.volume(t, "pvc-a-busy", rwo)
	fine := b.volume(t, "pvc-b-fine", rwo)
	must(t, b.publish(busy, "node-1", rwo))
	must(t, b.publish(fine, "node-1", rwo))
	b.view.deleteNode("node-1")
	release, done := busyRelease(t, b, busy, "node-1")
	waitUntil(t, "the other volume to be released", func() bool {
		disk, err := b.rds.Disks.Get(context.Background(), fine)
		return err == nil && disk.AllowHostName == FencedHostNQN
	})
	release()
	waitUntil(t, "the release to wait for its retry", b.clock.HasWaiters)
	b.clock.Step(releaseRetry)
	<-done
	if got := b.allowed(t, busy); !slices.Equal(got, []string{FencedHostNQN}) {
		t.Errorf("the busy volume, once free, admits %q", got)
	}
}

// busyRelease holds volume id's in-flight key, as another operation would,
// and releases node's attachments meanwhile: done closes when ReleaseNode
// returns.
func busyRelease(t *testing.T, b *publishBed, id, node string) (release func(), done chan struct{}) {
	t.Helper()
	release, ok := b.d.inFlight.TryAcquire(id)
	if !ok {
		t.Fatal("volume busy")
	}
	done = make(chan struct{})
	go func() { defer close(done); b.d.ReleaseNode(context.Background(), node) }()
	return release, done
}
