package controller

import (
	"context"
	"fmt"
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
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/rds-csi/rds-csi/controller/routeros"
	"github.com/rds-csi/rds-csi/kube"
	"github.com/rds-csi/rds-csi/kube/events"
	"github.com/rds-csi/rds-csi/test/harness"
	"github.com/rds-csi/rds-csi/test/rdssim"
	"github.com/rds-csi/rds-csi/volume"
)

// fakeView is a cluster whose VolumeAttachments and Nodes a test sets.
type fakeView struct {
	mu   sync.Mutex
	now  func() time.Time
	seq  int
	vas  map[string]*fakeVA // "volume/node"
	gone map[string]bool    // deleted Nodes
}

type fakeVA struct {
	name     string
	created  time.Time
	deleting time.Time // zero: not being deleted
	attached bool
	multi    bool
}

func newFakeView(now func() time.Time) *fakeView {
	return &fakeView{now: now, vas: map[string]*fakeVA{}, gone: map[string]bool{}}
}

// add creates the VolumeAttachment of id on node (attach under way).
func (v *fakeView) add(id, node string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if va := v.vas[id+"/"+node]; va != nil && va.deleting.IsZero() {
		return
	}
	v.seq++
	v.vas[id+"/"+node] = &fakeVA{name: fmt.Sprintf("va-%04d", v.seq), created: v.now().Truncate(time.Second)}
}

// attach sets the VolumeAttachment's status to attached, as the attacher
// does once ControllerPublish succeeded.
func (v *fakeView) attach(id, node string, multi bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if va := v.vas[id+"/"+node]; va != nil {
		va.attached, va.multi = true, multi
	}
}

func (v *fakeView) remove(id, node string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.vas, id+"/"+node)
}

func (v *fakeView) deleting(id, node string, since time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if va := v.vas[id+"/"+node]; va != nil {
		va.deleting = since
	}
}

func (v *fakeView) deleteNode(node string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.gone[node] = true
}

func (v *fakeView) registerNode(node string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.gone, node)
}

func (v *fakeView) Attachment(id, node string) (bool, time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	va := v.vas[id+"/"+node]
	if va == nil {
		return false, time.Time{}
	}
	return true, va.deleting
}

func (v *fakeView) LiveAttachments(id string) ([]ClusterAttachment, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []ClusterAttachment
	for key, va := range v.vas {
		volID, node, _ := strings.Cut(key, "/")
		if volID == id && va.deleting.IsZero() {
			out = append(out, ClusterAttachment{Node: node, Name: va.name, Created: va.created, Attached: va.attached, MultiWriter: va.multi})
		}
	}
	return out, nil
}

func (v *fakeView) NodeExists(node string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return !v.gone[node]
}

func (v *fakeView) EachAttached(func(string, ClusterAttachment)) {}

// fakeReporter keeps every annotation and event.
type fakeReporter struct {
	mu          sync.Mutex
	annotations map[string][]string
	events      []string // "volume type reason: message"
}

func (r *fakeReporter) Annotate(_ context.Context, id string, nodes []string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.annotations == nil {
		r.annotations = map[string][]string{}
	}
	r.annotations[id] = slices.Clone(nodes)
	return nil
}

func (r *fakeReporter) Event(id, eventType, reason, message string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, fmt.Sprintf("%s %s %s: %s", id, eventType, reason, message))
}

// withReason returns the events of reason.
func (r *fakeReporter) withReason(reason string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.events {
		if strings.Contains(e, " "+reason+": ") {
			out = append(out, e)
		}
	}
	return out
}

func (r *fakeReporter) nodes(id string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.annotations[id]
}

type publishBed struct {
	d        *Driver
	rds      *harness.RDS
	view     *fakeView
	reporter *fakeReporter
	clock    *clocktesting.FakeClock
	reg      *prometheus.Registry
}

func newPublishBed(t *testing.T, fencing bool, wrap func(RDS) RDS) *publishBed {
	t.Helper()
	rds := harness.StartRDS(t, rdssim.Config{}, routeros.ClientConfig{CommandTimeout: 5 * time.Second})
	opts := Options{Version: "test", BasePath: "/storage-pool/csi", NVMeAddress: "10.0.0.5", TargetFencing: fencing, RWOGracePeriod: 10 * time.Second}
	if err := opts.Validate(); err != nil {
		t.Fatal(err)
	}
	b := &publishBed{rds: rds, reporter: &fakeReporter{}, clock: clocktesting.NewFakeClock(time.Date(2026, 11, 26, 1, 0, 0, 0, time.UTC)), reg: prometheus.NewRegistry()}
	b.view = newFakeView(b.clock.Now)
	var r RDS = rds.Disks
	if wrap != nil {
		r = wrap(r)
	}
	b.d = New(opts, r, WithCluster(b.view, b.reporter), WithClock(b.clock), WithMetrics(b.reg))
	return b
}

// volume creates a volume and returns its ID.
func (b *publishBed) volume(t *testing.T, name string, vc *csi.VolumeCapability) string {
	t.Helper()
	req := createReq(name, gib, nil)
	req.VolumeCapabilities = []*csi.VolumeCapability{vc}
	resp, err := b.d.CreateVolume(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetVolume().GetVolumeId()
}

// publish publishes as the csi-attacher does once the VolumeAttachment of
// id on node exists.
func (b *publishBed) publish(id, node string, vc *csi.VolumeCapability) error {
	b.view.add(id, node)
	_, err := b.d.ControllerPublishVolume(context.Background(), &csi.ControllerPublishVolumeRequest{
		VolumeId: id, NodeId: node, VolumeCapability: vc,
		VolumeContext: map[string]string{volume.KeyMigrationTimeout: "120"},
	})
	if err == nil {
		b.view.attach(id, node, vc.GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)
	}
	return err
}

func (b *publishBed) unpublish(id, node string) error {
	_, err := b.d.ControllerUnpublishVolume(context.Background(), &csi.ControllerUnpublishVolumeRequest{VolumeId: id, NodeId: node})
	if err == nil {
		b.view.remove(id, node)
	}
	return err
}

// allowed returns the host list the RDS shows for the disk.
func (b *publishBed) allowed(t *testing.T, id string) []string {
	t.Helper()
	disk, err := b.rds.Disks.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	hosts := routeros.SplitAllowedHosts(disk.AllowHostName)
	slices.Sort(hosts)
	return hosts
}

func hostNQNs(nodes ...string) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = volume.HostNQN(n)
	}
	slices.Sort(out)
	return out
}

var rwxBlock = blockCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestTheControllerOffersPublishAndUnpublish(t *testing.T) {
	b := newPublishBed(t, false, nil)
	resp, err := b.d.ControllerGetCapabilities(context.Background(), &csi.ControllerGetCapabilitiesRequest{})
	must(t, err)
	for _, c := range resp.GetCapabilities() {
		if c.GetRpc().GetType() == csi.ControllerServiceCapability_RPC_PUBLISH_UNPUBLISH_VOLUME {
			return
		}
	}
	t.Fatal("PUBLISH_UNPUBLISH_VOLUME is not offered: Kubernetes would never call ControllerPublish")
}

func TestPublishingAgainToTheSameNodeSucceeds(t *testing.T) {
	b := newPublishBed(t, true, nil)
	id := b.volume(t, "pvc-again", rwo)
	must(t, b.publish(id, "node-1", rwo))
	must(t, b.publish(id, "node-1", rwo))
	if got := b.reporter.withReason(ReasonVolumeAttached); len(got) != 1 {
		t.Errorf("VolumeAttached events %q, want one", got)
	}
	if got, want := b.allowed(t, id), hostNQNs("node-1"); !slices.Equal(got, want) {
		t.Errorf("allowed hosts %q, want %q", got, want)
	}
}

func TestASecondNodeOfAReadWriteOnceVolumeIsRefusedNamingTheHolder(t *testing.T) {
	b := newPublishBed(t, true, nil)
	id := b.volume(t, "pvc-rwo", rwo)
	must(t, b.publish(id, "node-1", rwo))
	err := b.publish(id, "node-2", rwo)
	wantCode(t, err, codes.FailedPrecondition, "attached to node node-1")
	if !strings.Contains(err.Error(), "Stop the Pod") {
		t.Errorf("error %q does not say what to do", err)
	}
	if got := b.reporter.withReason(ReasonAttachmentConflict); len(got) != 1 || !strings.Contains(got[0], "node-1") {
		t.Errorf("AttachmentConflict events %q, want one naming node-1", got)
	}
	if got, want := b.allowed(t, id), hostNQNs("node-1"); !slices.Equal(got, want) {
		t.Errorf("the refused node reached the allowed hosts: %q, want %q", got, want)
	}
	// Sequential hand-off: once node-1 detached, node-2 attaches.
	must(t, b.unpublish(id, "node-1"))
	must(t, b.publish(id, "node-2", rwo))
	if got, want := b.allowed(t, id), hostNQNs("node-2"); !slices.Equal(got, want) {
		t.Errorf("allowed hosts after the hand-off %q, want %q", got, want)
	}
	if got := b.reporter.nodes(id); !slices.Equal(got, []string{"node-2"}) {
		t.Errorf("PV record %q, want node-2", got)
	}
}

func TestAReadWriteManyFilesystemIsRefusedOnPublish(t *testing.T) {
	b := newPublishBed(t, false, nil)
	id := b.volume(t, "pvc-fs", rwo)
	err := b.publish(id, "node-1", mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER))
	wantCode(t, err, codes.InvalidArgument, "raw block volumes only")
}

func TestPublishValidatesItsRequest(t *testing.T) {
	b := newPublishBed(t, false, nil)
	id := b.volume(t, "pvc-valid", rwo)
	ctx := context.Background()
	for _, tt := range []struct {
		req  *csi.ControllerPublishVolumeRequest
		code codes.Code
	}{
		{&csi.ControllerPublishVolumeRequest{NodeId: "node-1", VolumeCapability: rwo}, codes.InvalidArgument},
		{&csi.ControllerPublishVolumeRequest{VolumeId: id, VolumeCapability: rwo}, codes.InvalidArgument},
		{&csi.ControllerPublishVolumeRequest{VolumeId: id, NodeId: "node-1"}, codes.InvalidArgument},
		{&csi.ControllerPublishVolumeRequest{VolumeId: "pvc-missing", NodeId: "node-1", VolumeCapability: rwo}, codes.NotFound},
	} {
		_, err := b.d.ControllerPublishVolume(ctx, tt.req)
		wantCode(t, err, tt.code, "")
	}
	b.view.deleteNode("node-x")
	_, err := b.d.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: id, NodeId: "node-x", VolumeCapability: rwo})
	wantCode(t, err, codes.NotFound, "node-x")
}

// The migration timeout is read before a secondary attachment, and one that
// cannot be read refuses it, changing nothing; a single attachment does not
// need it.
func TestAnUnreadableMigrationTimeoutRefusesTheSecondaryAttachment(t *testing.T) {
	b := newPublishBed(t, true, nil)
	id := b.volume(t, "pvc-badctx", rwxBlock)
	req := func(node string) *csi.ControllerPublishVolumeRequest {
		b.view.add(id, node)
		return &csi.ControllerPublishVolumeRequest{VolumeId: id, NodeId: node, VolumeCapability: rwxBlock, VolumeContext: map[string]string{volume.KeyMigrationTimeout: "soon"}}
	}
	if _, err := b.d.ControllerPublishVolume(context.Background(), req("node-a")); err != nil {
		t.Fatal(err)
	}
	_, err := b.d.ControllerPublishVolume(context.Background(), req("node-b"))
	wantCode(t, err, codes.InvalidArgument, volume.KeyMigrationTimeout)
	if got, want := b.allowed(t, id), hostNQNs("node-a"); !slices.Equal(got, want) {
		t.Errorf("the RDS admits %q, want %q", got, want)
	}
}

func TestUnpublishIsIdempotent(t *testing.T) {
	b := newPublishBed(t, true, nil)
	id := b.volume(t, "pvc-idem", rwo)
	// A node it was never attached to, then a volume that does not exist.
	must(t, b.unpublish(id, "node-9"))
	must(t, b.unpublish("pvc-never-created", "node-1"))
	must(t, b.publish(id, "node-1", rwo))
	must(t, b.unpublish(id, "node-1"))
	must(t, b.unpublish(id, "node-1"))
	// A deleted volume: DeleteVolume after a lost unpublish.
	must(t, b.publish(id, "node-1", rwo))
	if _, err := b.d.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
		t.Fatal(err)
	}
	must(t, b.unpublish(id, "node-1"))
	if got := b.d.attached.get(id); len(got.nodes) != 0 {
		t.Errorf("a deleted volume is still recorded as attached to %v", got.names())
	}
}

func TestTargetFencingAdmitsExactlyThePublishedNodes(t *testing.T) {
	b := newPublishBed(t, true, nil)
	id := b.volume(t, "pvc-fence", rwxBlock)
	must(t, b.publish(id, "node-a", rwxBlock))
	if got, want := b.allowed(t, id), hostNQNs("node-a"); !slices.Equal(got, want) {
		t.Fatalf("after publishing to node-a the RDS admits %q, want %q", got, want)
	}
	must(t, b.publish(id, "node-b", rwxBlock))
	if got, want := b.allowed(t, id), hostNQNs("node-a", "node-b"); !slices.Equal(got, want) {
		t.Fatalf("after publishing to node-b the RDS admits %q, want %q", got, want)
	}
	must(t, b.unpublish(id, "node-a"))
	if got, want := b.allowed(t, id), hostNQNs("node-b"); !slices.Equal(got, want) {
		t.Fatalf("after unpublishing node-a the RDS admits %q, want only node-b: %q", got, want)
	}
	must(t, b.unpublish(id, "node-b"))
	if got := b.allowed(t, id); !slices.Equal(got, []string{FencedHostNQN}) {
		t.Fatalf("published to no node, the RDS admits %q, want nobody (%s)", got, FencedHostNQN)
	}
}

func TestUnpublishRemovesOnlyThatNodeFromTheAllowedHosts(t *testing.T) {
	b := newPublishBed(t, true, nil)
	id := b.volume(t, "pvc-only", rwxBlock)
	must(t, b.publish(id, "node-a", rwxBlock))
	must(t, b.publish(id, "node-b", rwxBlock))
	// An entry the controller did not write (an operator's, or one of a
	// record lost meanwhile) admits a host no record names: the list is
	// derived from the record, so it goes; the surviving node's stays.
	foreign := "nqn.2014-08.org.example:host-kept"
	must(t, b.rds.Disks.SetAllowedHosts(context.Background(), id, []string{volume.HostNQN("node-a"), volume.HostNQN("node-b"), foreign}))
	must(t, b.unpublish(id, "node-a"))
	if got, want := b.allowed(t, id), hostNQNs("node-b"); !slices.Equal(got, want) {
		t.Fatalf("the RDS admits %q, want only the surviving node-b: %q", got, want)
	}
	must(t, b.unpublish(id, "node-b"))
	if got := b.allowed(t, id); !slices.Equal(got, []string{FencedHostNQN}) {
		t.Fatalf("published to no node, the RDS admits %q, want nobody", got)
	}
}

// ignoringRDS takes every allowed host list without applying it, as a
// RouterOS that ignored or renamed the property would.
type ignoringRDS struct{ RDS }

func (ignoringRDS) SetAllowedHosts(context.Context, string, []string) error { return nil }

func TestAFenceTheRDSDoesNotShowFailsThePublish(t *testing.T) {
	b := newPublishBed(t, true, func(r RDS) RDS { return ignoringRDS{r} })
	id := b.volume(t, "pvc-ignored", rwo)
	err := b.publish(id, "node-1", rwo)
	wantCode(t, err, codes.Internal, "the RDS shows \"\"")
	if !strings.Contains(err.Error(), volume.HostNQN("node-1")) {
		t.Errorf("error %q does not say what was set", err)
	}
	if got := b.d.attached.get(id); len(got.nodes) != 0 {
		t.Fatalf("an unfenced publish was recorded: %v", got.names())
	}
	if got := b.reporter.withReason(ReasonVolumeAttached); len(got) != 0 {
		t.Errorf("VolumeAttached after a failed publish: %q", got)
	}
}

func TestWithoutTargetFencingTheAllowedHostsAreLeftAlone(t *testing.T) {
	b := newPublishBed(t, false, nil)
	id := b.volume(t, "pvc-open", rwo)
	must(t, b.publish(id, "node-1", rwo))
	must(t, b.unpublish(id, "node-1"))
	for _, c := range b.rds.Sim.Commands() {
		if strings.Contains(c, "allow-host-name") {
			t.Fatalf("fencing is off, yet the controller sent %q", c)
		}
	}
}

func TestReadWriteManyBlockAttachesTwoNodesAndRefusesAThird(t *testing.T) {
	b := newPublishBed(t, true, nil)
	id := b.volume(t, "pvc-rwx", rwxBlock)
	must(t, b.publish(id, "node-a", rwxBlock))
	must(t, b.publish(id, "node-b", rwxBlock))
	b.clock.Step(42 * time.Second)
	err := b.publish(id, "node-c", rwxBlock)
	wantCode(t, err, codes.FailedPrecondition, "at most 2 nodes")
	for _, want := range []string{"node-a", "node-b", "42s ago", "timeout 2m0s"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if got, want := b.allowed(t, id), hostNQNs("node-a", "node-b"); !slices.Equal(got, want) {
		t.Errorf("the third node reached the allowed hosts: %q", got)
	}
	// Past the timeout the refusal says the migration is stuck and what to do.
	b.clock.Step(2 * time.Minute)
	err = b.publish(id, "node-c", rwxBlock)
	wantCode(t, err, codes.FailedPrecondition, "past its timeout")
	if !strings.Contains(err.Error(), "migrate-cancel") {
		t.Errorf("error %q names no remediation", err)
	}
}

func TestAMigrationIsCompletedWhenTheSourceDetaches(t *testing.T) {
	b := newPublishBed(t, true, nil)
	id := b.volume(t, "pvc-mig", rwxBlock)
	must(t, b.publish(id, "node-a", rwxBlock))
	must(t, b.publish(id, "node-b", rwxBlock))
	if got := testutil.ToFloat64(b.d.migration.active); got != 1 {
		t.Errorf("active migrations %v, want 1", got)
	}
	if got := b.reporter.withReason(ReasonMigrationStarted); len(got) != 1 || !strings.Contains(got[0], "from node node-a to node node-b") {
		t.Errorf("MigrationStarted events %q", got)
	}
	b.clock.Step(61*time.Second + 400*time.Millisecond)
	must(t, b.unpublish(id, "node-a"))
	if got := b.reporter.withReason(ReasonMigrationCompleted); len(got) != 1 || !strings.Contains(got[0], "completed in 1m1s:") {
		t.Errorf("MigrationCompleted events %q, want one with the rounded duration", got)
	}
	if got := testutil.ToFloat64(b.d.migration.results.WithLabelValues(migrationResultSuccess)); got != 1 {
		t.Errorf("successful migrations %v, want 1", got)
	}
	if got := testutil.ToFloat64(b.d.migration.active); got != 0 {
		t.Errorf("active migrations %v after it ended, want 0", got)
	}
	if got, want := b.allowed(t, id), hostNQNs("node-b"); !slices.Equal(got, want) {
		t.Errorf("the target's access changed: the RDS admits %q, want %q", got, want)
	}
	wantHistogramCount(t, b.reg, 1)
}

func TestAMigrationIsRolledBackWhenTheTargetDetaches(t *testing.T) {
	b := newPublishBed(t, true, nil)
	id := b.volume(t, "pvc-back", rwxBlock)
	must(t, b.publish(id, "node-a", rwxBlock))
	must(t, b.publish(id, "node-b", rwxBlock))
	must(t, b.unpublish(id, "node-b"))
	if got := b.reporter.withReason(ReasonMigrationFailed); len(got) != 1 || !strings.Contains(got[0], "Warning") || !strings.Contains(got[0], "node node-a keeps the volume") {
		t.Errorf("MigrationFailed events %q", got)
	}
	if got := testutil.ToFloat64(b.d.migration.results.WithLabelValues(migrationResultFailed)); got != 1 {
		t.Errorf("failed migrations %v, want 1", got)
	}
	if got := testutil.ToFloat64(b.d.migration.results.WithLabelValues(migrationResultSuccess)); got != 0 {
		t.Errorf("successful migrations %v, want 0", got)
	}
	if got, want := b.allowed(t, id), hostNQNs("node-a"); !slices.Equal(got, want) {
		t.Errorf("the source's access changed: the RDS admits %q, want %q", got, want)
	}
	// A new migration after the rollback starts afresh.
	must(t, b.publish(id, "node-c", rwxBlock))
	if got := b.reporter.withReason(ReasonMigrationStarted); len(got) != 2 {
		t.Errorf("MigrationStarted events %q, want two", got)
	}
}

func TestADualAttachmentPastItsTimeoutIsReportedOnce(t *testing.T) {
	b := newPublishBed(t, false, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); b.d.WatchMigrations(ctx, 5*time.Second) }()
	t.Cleanup(func() { cancel(); <-done })
	waitUntil(t, "the watcher's ticker", b.clock.HasWaiters)

	id := b.volume(t, "pvc-stuck", rwxBlock)
	must(t, b.publish(id, "node-a", rwxBlock)) // volume context: 120 s
	must(t, b.publish(id, "node-b", rwxBlock))
	timeouts := func() float64 {
		return testutil.ToFloat64(b.d.migration.results.WithLabelValues(migrationResultTimeout))
	}
	for range 23 { // 115 s: not yet
		b.clock.Step(5 * time.Second)
	}
	b.d.reportOverdue() // the same check the ticker runs, run here to be sure it ran
	if got := b.reporter.withReason(ReasonMigrationFailed); len(got) != 0 {
		t.Fatalf("reported before the timeout: %q", got)
	}
	for range 2 { // 125 s
		b.clock.Step(5 * time.Second)
	}
	waitUntil(t, "the timeout to be reported", func() bool {
		return timeouts() == 1 && len(b.reporter.withReason(ReasonMigrationFailed)) == 1
	})
	got := b.reporter.withReason(ReasonMigrationFailed)
	if len(got) != 1 || !strings.Contains(got[0], "Warning") || !strings.Contains(got[0], "past its timeout of 2m0s") || !strings.Contains(got[0], "migrate-cancel") {
		t.Fatalf("MigrationFailed events %q, want one Warning with the elapsed time and remediation", got)
	}
	for range 100 {
		b.clock.Step(5 * time.Second)
	}
	b.d.reportOverdue()
	if got := b.reporter.withReason(ReasonMigrationFailed); len(got) != 1 || timeouts() != 1 {
		t.Fatalf("reported again: %q, timeouts %v", got, timeouts())
	}
	// The late end still says how it ended, without a second result.
	must(t, b.unpublish(id, "node-a"))
	if s := testutil.ToFloat64(b.d.migration.results.WithLabelValues(migrationResultSuccess)); s != 0 {
		t.Errorf("a timed-out migration was also counted a success")
	}
	if got := b.reporter.withReason(ReasonMigrationCompleted); len(got) != 1 || !strings.Contains(got[0], "past its timeout") {
		t.Errorf("MigrationCompleted events %q", got)
	}
}

func TestAHolderWithoutVolumeAttachmentIsReleasedOnlyAfterTheGracePeriod(t *testing.T) {
	b := newPublishBed(t, true, nil)
	id := b.volume(t, "pvc-stale", rwo)
	must(t, b.publish(id, "node-1", rwo))
	// Its VolumeAttachment vanished without an unpublish (a finalizer
	// removed by hand): the record is stale, but an informer that lags
	// looks the same at first.
	b.view.remove(id, "node-1")
	err := b.publish(id, "node-2", rwo)
	wantCode(t, err, codes.Aborted, "node-1")
	b.clock.Step(10 * time.Second)
	must(t, b.publish(id, "node-2", rwo))
	if got, want := b.allowed(t, id), hostNQNs("node-2"); !slices.Equal(got, want) {
		t.Fatalf("after releasing the stale node-1 the RDS admits %q, want %q", got, want)
	}
	if got := b.reporter.withReason(ReasonVolumeDetached); len(got) != 1 || !strings.Contains(got[0], "stale attachment of node node-1") {
		t.Errorf("VolumeDetached events %q", got)
	}
}

func TestAHolderBeingDetachedMakesTheNextNodeRetryThenConflict(t *testing.T) {
	b := newPublishBed(t, false, nil)
	id := b.volume(t, "pvc-handoff", rwo)
	must(t, b.publish(id, "node-1", rwo))
	b.view.deleting(id, "node-1", b.clock.Now())
	wantCode(t, b.publish(id, "node-2", rwo), codes.Aborted, "being detached from node node-1")
	b.clock.Step(11 * time.Second)
	wantCode(t, b.publish(id, "node-2", rwo), codes.FailedPrecondition, "node-1")
	must(t, b.unpublish(id, "node-1"))
	must(t, b.publish(id, "node-2", rwo))
}

func TestTheAttachmentsOfADeletedNodeAreReleased(t *testing.T) {
	b := newPublishBed(t, true, nil)
	one := b.volume(t, "pvc-one", rwo)
	two := b.volume(t, "pvc-two", rwxBlock)
	must(t, b.publish(one, "node-1", rwo))
	must(t, b.publish(two, "node-1", rwxBlock))
	must(t, b.publish(two, "node-2", rwxBlock))
	b.view.deleteNode("node-1")
	b.d.ReleaseNode(context.Background(), "node-1")
	if got := b.allowed(t, one); !slices.Equal(got, []string{FencedHostNQN}) {
		t.Errorf("volume one still admits %q", got)
	}
	if got, want := b.allowed(t, two), hostNQNs("node-2"); !slices.Equal(got, want) {
		t.Errorf("volume two admits %q, want the surviving node only: %q", got, want)
	}
	if got := b.reporter.nodes(one); len(got) != 0 {
		t.Errorf("PV record of volume one %q, want none", got)
	}
	must(t, b.publish(one, "node-3", rwo))
}

func TestAStaleHolderOfADeletedNodeDoesNotBlockTheNextNode(t *testing.T) {
	b := newPublishBed(t, false, nil)
	id := b.volume(t, "pvc-gone", rwo)
	must(t, b.publish(id, "node-1", rwo))
	b.view.deleteNode("node-1") // a deletion the controller did not see
	must(t, b.publish(id, "node-2", rwo))
}

func TestConcurrentPublishesOfOneVolumeAreAborted(t *testing.T) {
	b := newPublishBed(t, false, nil)
	id := b.volume(t, "pvc-race", rwo)
	release, ok := b.d.inFlight.TryAcquire(id)
	if !ok {
		t.Fatal("volume busy")
	}
	wantCode(t, b.publish(id, "node-1", rwo), codes.Aborted, "in progress")
	wantCode(t, b.unpublish(id, "node-1"), codes.Aborted, "in progress")
	release()
	must(t, b.publish(id, "node-1", rwo))
}

func TestTheGracePeriodIsValidated(t *testing.T) {
	for _, g := range []time.Duration{-time.Second, maxRWOGracePeriod + time.Second} {
		o := Options{BasePath: "/storage-pool/csi", RWOGracePeriod: g}
		if err := o.Validate(); err == nil {
			t.Errorf("grace period %s accepted", g)
		}
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func wantHistogramCount(t *testing.T, reg *prometheus.Registry, n uint64) {
	t.Helper()
	mfs, err := reg.Gather()
	must(t, err)
	for _, mf := range mfs {
		if mf.GetName() == "rds_migration_duration_seconds" {
			h := mf.GetMetric()[0].GetHistogram()
			if h.GetSampleCount() != n {
				t.Errorf("migration durations observed %d, want %d", h.GetSampleCount(), n)
			}
			var bounds []float64
			for _, bk := range h.GetBucket() {
				bounds = append(bounds, bk.GetUpperBound())
			}
			if want := []float64{15, 30, 60, 90, 120, 180, 300, 600}; !slices.Equal(bounds, want) {
				t.Errorf("buckets %v, want %v", bounds, want)
			}
			return
		}
	}
	t.Error("rds_migration_duration_seconds is not registered")
}

// After a restart the state comes back from the cluster's VolumeAttachments
// (client-go's fake API behind the real kube.Watcher): the holder of a
// ReadWriteOnce volume still blocks, and a migration's source is the older
// attachment.
func TestTheStateIsRebuiltFromVolumeAttachments(t *testing.T) {
	b := newPublishBed(t, true, nil)
	rwoID := b.volume(t, "pvc-kept", rwo)
	rwxID := b.volume(t, "pvc-moving", rwxBlock)
	orphanID := b.volume(t, "pvc-orphan", rwo)
	must(t, b.rds.Disks.SetAllowedHosts(context.Background(), orphanID, hostNQNs("node-deleted-meanwhile")))
	t0 := b.clock.Now().Add(-time.Minute)
	pv := func(name, id string) *corev1.PersistentVolume {
		return &corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.PersistentVolumeSpec{PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver: DefaultDriverName, VolumeHandle: id, VolumeAttributes: map[string]string{volume.KeyMigrationTimeout: "60"},
			}}},
		}
	}
	va := func(pv, node string, created time.Time) *storagev1.VolumeAttachment {
		return &storagev1.VolumeAttachment{
			ObjectMeta: metav1.ObjectMeta{Name: pv + "-" + node, CreationTimestamp: metav1.NewTime(created)},
			Spec:       storagev1.VolumeAttachmentSpec{Attacher: DefaultDriverName, NodeName: node, Source: storagev1.VolumeAttachmentSource{PersistentVolumeName: &pv}},
			Status:     storagev1.VolumeAttachmentStatus{Attached: true},
		}
	}
	client := fake.NewClientset(
		pv("pv-kept", rwoID), pv("pv-moving", rwxID),
		va("pv-kept", "node-1", t0),
		va("pv-moving", "node-b", t0.Add(20*time.Second)), va("pv-moving", "node-a", t0),
		pv("pv-orphan", orphanID), va("pv-orphan", "node-deleted-meanwhile", t0),
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-2"}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-b"}},
	)
	rec := events.NewRecorder(kube.EventsAPI(client), "rds-csi-controller", "test", prometheus.NewRegistry())
	t.Cleanup(rec.Shutdown)
	w, err := kube.NewWatcher(client, DefaultDriverName, rec)
	must(t, err)
	must(t, w.Start(t.Context(), 10*time.Second))
	t.Cleanup(w.Stop)

	opts := b.d.opts
	d := New(opts, b.rds.Disks, WithCluster(w, w), WithClock(b.clock))
	_, err = d.ControllerPublishVolume(context.Background(), &csi.ControllerPublishVolumeRequest{VolumeId: rwoID, NodeId: "node-2", VolumeCapability: rwo})
	wantCode(t, err, codes.FailedPrecondition, "attached to node node-1")
	if got := d.attached.get(rwxID).names(); !slices.Equal(got, []string{"node-a", "node-b"}) {
		t.Fatalf("migration nodes %v, want source node-a first", got)
	}
	if got := d.attached.get(rwxID).migrationTimeout; got != time.Minute {
		t.Errorf("migration timeout %s, want the PV's 60 s", got)
	}
	if got := testutil.ToFloat64(d.migration.active); got != 1 {
		t.Errorf("active migrations %v after the restart, want 1", got)
	}
	// A Node deleted while the controller was away: its attachment came
	// back from its VolumeAttachment, and is released at start.
	if got := d.attached.get(orphanID).names(); !slices.Equal(got, []string{"node-deleted-meanwhile"}) {
		t.Fatalf("orphan attachment %v", got)
	}
	d.ReleaseDeletedNodes(context.Background())
	if got := d.attached.get(orphanID).names(); len(got) != 0 {
		t.Errorf("the deleted node still holds the volume: %v", got)
	}
	if got := b.allowed(t, orphanID); !slices.Equal(got, []string{FencedHostNQN}) {
		t.Errorf("the RDS still admits %q", got)
	}
	if got := d.attached.get(rwoID).names(); !slices.Equal(got, []string{"node-1"}) {
		t.Errorf("a live node's attachment was released: %v", got)
	}
}

func TestReleasingADeletedNodeWaitsForABusyVolume(t *testing.T) {
	b := newPublishBed(t, true, nil)
	id := b.volume(t, "pvc-busy", rwo)
	must(t, b.publish(id, "node-1", rwo))
	release, ok := b.d.inFlight.TryAcquire(id)
	if !ok {
		t.Fatal("volume busy")
	}
	b.view.deleteNode("node-1")
	done := make(chan struct{})
	go func() { defer close(done); b.d.ReleaseNode(context.Background(), "node-1") }()
	waitUntil(t, "the release to wait for its retry", b.clock.HasWaiters)
	if got, want := b.allowed(t, id), hostNQNs("node-1"); !slices.Equal(got, want) {
		t.Fatalf("released while another operation held the volume: the RDS admits %q", got)
	}
	release()
	b.clock.Step(releaseRetry)
	<-done
	if got := b.allowed(t, id); !slices.Equal(got, []string{FencedHostNQN}) {
		t.Fatalf("after the retry the RDS admits %q, want nobody", got)
	}
}

// A migration whose target's Node is deleted, found when a third node asks,
// ends as a rollback (counted once), and the third node becomes the new
// target beside the source.
func TestAMigrationWhoseTargetNodeIsGoneEndsWhenItIsReleased(t *testing.T) {
	b := newPublishBed(t, true, nil)
	id := b.volume(t, "pvc-lost-target", rwxBlock)
	must(t, b.publish(id, "node-a", rwxBlock))
	must(t, b.publish(id, "node-b", rwxBlock))
	b.view.deleteNode("node-b")
	must(t, b.publish(id, "node-c", rwxBlock))
	if got := testutil.ToFloat64(b.d.migration.results.WithLabelValues(migrationResultFailed)); got != 1 {
		t.Errorf("failed migrations %v, want 1", got)
	}
	if got, want := b.allowed(t, id), hostNQNs("node-a", "node-c"); !slices.Equal(got, want) {
		t.Errorf("the RDS admits %q, want %q", got, want)
	}
	if got := b.reporter.withReason(ReasonMigrationStarted); len(got) != 2 {
		t.Errorf("MigrationStarted events %q, want two", got)
	}
	if got := testutil.ToFloat64(b.d.migration.active); got != 1 {
		t.Errorf("active migrations %v, want 1", got)
	}
}
