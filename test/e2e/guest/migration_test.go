//go:build e2eguest

package guest

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	"github.com/rds-csi/rds-csi/agent"
	"github.com/rds-csi/rds-csi/controller"
	"github.com/rds-csi/rds-csi/kernel/uevent"
	"github.com/rds-csi/rds-csi/volume"
)

// TestMigrationHandOffIsFencedByTheKernelTarget: a KubeVirt-style hand-off
// of a ReadWriteMany block volume between two nodes, each an agent with its
// own host NQN, published by the controller with --target-fencing, against
// the simulator exporting through the kernel's nvmet target. A node the
// controller has not published the volume to is refused by the real target;
// data written by the source is read by the destination; and once the
// source is unpublished the target refuses it again while the destination
// keeps working.
//
// Both agents share this guest's one kernel, where a second connect to a
// subsystem would join the first one's namespace, so the nodes take turns
// at being connected: the source unstages before the destination stages,
// which is also the order of the data hand-off in a live migration.
func TestMigrationHandOffIsFencedByTheKernelTarget(t *testing.T) {
	f := newFixture(t)
	copts := controller.Options{Version: "e2e", BasePath: basePath, NVMeAddress: "127.0.0.1", TargetFencing: true}
	if err := copts.Validate(); err != nil {
		t.Fatal(err)
	}
	ctrl := csi.NewControllerClient(serve(t, "controller-fenced", func(srv *grpc.Server) {
		d := controller.New(copts, f.rds.Disks)
		csi.RegisterIdentityServer(srv, d)
		csi.RegisterControllerServer(srv, d)
	}))
	nodeA, nodeB := "node-a", "node-b"
	agents := map[string]csi.NodeClient{nodeA: migrationAgent(t, nodeA), nodeB: migrationAgent(t, nodeB)}

	rwx := &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER},
	}
	params := maps.Clone(storageClass)
	params[volume.KeyMigrationTimeout] = "60"
	resp, err := ctrl.CreateVolume(rpcCtx(t), &csi.CreateVolumeRequest{
		Name: "migrate-vm-disk", CapacityRange: &csi.CapacityRange{RequiredBytes: 64 << 20},
		VolumeCapabilities: []*csi.VolumeCapability{rwx}, Parameters: params,
	})
	must(t, "CreateVolume", err)
	rv := resp.GetVolume()
	v := &vol{id: rv.GetVolumeId(), nqn: rv.GetVolumeContext()[volume.KeyNQN], context: rv.GetVolumeContext(), cap: rwx}
	paths := func(node string) (staging, target string) {
		dir := filepath.Join(f.dir, node)
		return filepath.Join(dir, "staging"), filepath.Join(dir, "publish", v.id)
	}
	stage := func(node string) error {
		staging, target := paths(node)
		must(t, "mkdir", os.MkdirAll(staging, 0o750))
		must(t, "mkdir", os.MkdirAll(filepath.Dir(target), 0o750))
		n := agents[node]
		if _, err := n.NodeStageVolume(rpcCtx(t), &csi.NodeStageVolumeRequest{VolumeId: v.id, StagingTargetPath: staging, VolumeCapability: rwx, VolumeContext: v.context}); err != nil {
			return err
		}
		_, err := n.NodePublishVolume(rpcCtx(t), &csi.NodePublishVolumeRequest{VolumeId: v.id, StagingTargetPath: staging, TargetPath: target, VolumeCapability: rwx, VolumeContext: v.context})
		return err
	}
	unstage := func(node string) {
		staging, target := paths(node)
		n := agents[node]
		_, err := n.NodeUnpublishVolume(rpcCtx(t), &csi.NodeUnpublishVolumeRequest{VolumeId: v.id, TargetPath: target})
		must(t, "NodeUnpublish on "+node, err)
		_, err = n.NodeUnstageVolume(rpcCtx(t), &csi.NodeUnstageVolumeRequest{VolumeId: v.id, StagingTargetPath: staging})
		must(t, "NodeUnstage on "+node, err)
	}
	publish := func(node string) {
		_, err := ctrl.ControllerPublishVolume(rpcCtx(t), &csi.ControllerPublishVolumeRequest{VolumeId: v.id, NodeId: node, VolumeCapability: rwx, VolumeContext: v.context})
		must(t, "ControllerPublish to "+node, err)
	}
	unpublish := func(node string) {
		_, err := ctrl.ControllerUnpublishVolume(rpcCtx(t), &csi.ControllerUnpublishVolumeRequest{VolumeId: v.id, NodeId: node})
		must(t, "ControllerUnpublish from "+node, err)
	}
	refused := func(node, when string) {
		t.Helper()
		start := time.Now()
		err := stage(node)
		if err == nil {
			t.Fatalf("%s staged the volume %s: the target let it connect", node, when)
		}
		t.Logf("%s refused %s after %v: %v", node, when, time.Since(start).Round(time.Millisecond), err)
		// The refusal is the target's: nvmet logs the host it turned away.
		if msg := "connect by host " + volume.HostNQN(node) + " for subsystem " + v.nqn + " not allowed"; !kernelLogHas(t, msg) {
			t.Fatalf("the kernel log does not say %q: the connect failed for another reason", msg)
		}
		for _, c := range controllersOf(t, v.nqn) {
			t.Errorf("a controller of %s exists after %s was refused: %s", v.nqn, node, c)
		}
		// The CO cleans up after a failed stage.
		unstage(node)
	}

	// Published to the source only: the destination cannot even connect.
	publish(nodeA)
	assertAllowedHosts(t, v.nqn, nodeA)
	refused(nodeB, "before it was published")

	// The source runs the VM: its writes reach the disk.
	must(t, "NodeStage on "+nodeA, stage(nodeA))
	_, targetA := paths(nodeA)
	written := newPayload(t, 1<<20)
	written.writeAt(t, targetA, 4<<20)

	// The migration starts: the destination is published too, and the
	// source hands the disk over.
	publish(nodeB)
	assertAllowedHosts(t, v.nqn, nodeA, nodeB)
	unstage(nodeA)
	must(t, "NodeStage on "+nodeB, stage(nodeB))
	_, targetB := paths(nodeB)
	written.checkAt(t, "written by "+nodeA+", read by "+nodeB, targetB, 4<<20)

	// The migration completes: the source is unpublished and fenced out
	// by the kernel target, while the destination keeps its access.
	unpublish(nodeA)
	assertAllowedHosts(t, v.nqn, nodeB)
	later := newPayload(t, 1<<20)
	later.writeAt(t, targetB, 8<<20)
	later.checkAt(t, "written by "+nodeB+" after the hand-off", targetB, 8<<20)
	for _, c := range controllersOf(t, v.nqn) {
		t.Logf("%s still connected after the source was unpublished: %s", nodeB, c)
	}
	unstage(nodeB)
	refused(nodeA, "after it was unpublished")

	unpublish(nodeB)
	_, err = ctrl.DeleteVolume(rpcCtx(t), &csi.DeleteVolumeRequest{VolumeId: v.id})
	must(t, "DeleteVolume", err)
	f.assertGone(t, v)
}

// migrationAgent serves a node agent of its own node ID, hence its own host
// NQN, with an attach bound short enough for a refused connect.
func migrationAgent(t *testing.T, nodeID string) csi.NodeClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	events, err := uevent.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	opts := agent.Options{Version: "e2e", NodeID: nodeID, AttachTimeout: 20 * time.Second}
	if err := opts.Validate(); err != nil {
		t.Fatal(err)
	}
	attacher, _ := nodeAttacher(events, true)
	return csi.NewNodeClient(serve(t, "agent-"+nodeID, func(srv *grpc.Server) {
		n := agent.New(opts, attacher, agent.HostMounter{}, nil)
		csi.RegisterIdentityServer(srv, n)
		csi.RegisterNodeServer(srv, n)
	}))
}

// assertAllowedHosts checks the kernel target's own list of hosts allowed
// on the subsystem: the host NQNs of nodes, derived as each agent derives
// its own.
func assertAllowedHosts(t *testing.T, nqn string, nodes ...string) {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(cfgRoot, "subsystems", nqn, "allowed_hosts"))
	if err != nil {
		t.Fatal(err)
	}
	var got, want []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	for _, n := range nodes {
		want = append(want, volume.HostNQN(n))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("nvmet allows %v on %s, want %v (nodes %v)", got, nqn, want, nodes)
	}
	anyHost, err := os.ReadFile(filepath.Join(cfgRoot, "subsystems", nqn, "attr_allow_any_host"))
	if err != nil || string(anyHost) != "0\n" {
		t.Fatalf("attr_allow_any_host of %s is %q (%v), want 0", nqn, anyHost, err)
	}
	t.Logf("nvmet allows exactly %v", nodes)
}

// kernelLogHas reports whether the kernel's log buffer holds s.
func kernelLogHas(t *testing.T, s string) bool {
	t.Helper()
	n, err := unix.Klogctl(unix.SYSLOG_ACTION_SIZE_BUFFER, nil)
	if err != nil {
		t.Fatalf("kernel log size: %v", err)
	}
	buf := make([]byte, n)
	n, err = unix.Klogctl(unix.SYSLOG_ACTION_READ_ALL, buf)
	if err != nil {
		t.Fatalf("reading the kernel log: %v", err)
	}
	return strings.Contains(string(buf[:n]), s)
}
