//go:build e2eguest

package guest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/rds-csi/rds-csi/agent"
	"github.com/rds-csi/rds-csi/controller"
	"github.com/rds-csi/rds-csi/controller/routeros"
	"github.com/rds-csi/rds-csi/kernel/dm"
	"github.com/rds-csi/rds-csi/kernel/fabrics"
	"github.com/rds-csi/rds-csi/kernel/sysfs"
	"github.com/rds-csi/rds-csi/kernel/uevent"
	"github.com/rds-csi/rds-csi/rpc"
	"github.com/rds-csi/rds-csi/test/harness"
	"github.com/rds-csi/rds-csi/test/rdssim"
	"github.com/rds-csi/rds-csi/test/rdssim/nvmet"
	"github.com/rds-csi/rds-csi/volume"
)

const (
	nodeID   = "e2e-node"
	basePath = "/storage-pool/e2e"
	// rpcTimeout bounds one CSI call. The kernel's NVMe state machine runs
	// in real time while everything else crawls under TCG, so it is
	// generous.
	rpcTimeout = 90 * time.Second
)

var sysTree = sysfs.Tree{Root: "/sys"}

// fixture is one test's RDS: the simulator serving its disks through the
// kernel's nvmet target, the real controller talking SSH to it and the real
// node agent with the production NVMe/TCP attacher, both behind gRPC on
// unix sockets and driven through CSI clients as a CO would.
type fixture struct {
	t    *testing.T
	rds  *harness.RDS
	exp  *nvmet.Exporter
	ctrl csi.ControllerClient
	node csi.NodeClient
	// dir holds staging and target paths.
	dir string
	// simState is the simulator's state directory; backing files live
	// under its files/.
	simState string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	exp, err := nvmet.New(nvmet.Config{Root: nvmet.DefaultRoot, Addr: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	// Registered first so that it runs last: the simulator stops before
	// its exports are torn down.
	t.Cleanup(func() {
		if err := exp.Close(); err != nil {
			t.Errorf("closing the nvmet exporter: %v", err)
		}
	})
	simState := t.TempDir()
	rds := harness.StartRDS(t, rdssim.Config{StateDir: simState, Exporter: exp}, routeros.ClientConfig{})
	f := &fixture{t: t, rds: rds, exp: exp, dir: t.TempDir(), simState: simState}

	copts := controller.Options{Version: "e2e", BasePath: basePath, NVMeAddress: "127.0.0.1"}
	if err := copts.Validate(); err != nil {
		t.Fatal(err)
	}
	ctrlConn := serve(t, "controller", func(srv *grpc.Server) {
		d := controller.New(copts, rds.Disks)
		csi.RegisterIdentityServer(srv, d)
		csi.RegisterControllerServer(srv, d)
	})
	f.ctrl = csi.NewControllerClient(ctrlConn)

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	events, err := uevent.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	nopts := agent.Options{Version: "e2e", NodeID: nodeID}
	if err := nopts.Validate(); err != nil {
		t.Fatal(err)
	}
	attacher, _ := nodeAttacher(events, true)
	nodeConn := serve(t, "agent", func(srv *grpc.Server) {
		n := agent.New(nopts, attacher, agent.HostMounter{}, nil)
		csi.RegisterIdentityServer(srv, n)
		csi.RegisterNodeServer(srv, n)
	})
	f.node = csi.NewNodeClient(nodeConn)
	// Registered last, so it runs first: a failed test leaves mounts and
	// connections behind, which would change what the next test sees
	// (device numbers, a controller retrying a vanished target forever).
	t.Cleanup(f.sweep)
	return f
}

// sweep unmounts what is left under the fixture's directory and deletes
// every controller of a managed subsystem.
func (f *fixture) sweep() {
	// A front without a path queues what an unmount flushes: it must fail
	// instead, or the sweep would wait for a target that is gone.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fronts := leftoverFronts(f.t)
	for _, name := range fronts {
		if err := dm.Message(ctx, name, "fail_if_no_path"); err != nil {
			f.t.Logf("sweep: %v", err)
		}
	}
	ms := mountsUnder(f.t, f.dir)
	for i := len(ms) - 1; i >= 0; i-- {
		if err := unix.Unmount(ms[i], unix.MNT_DETACH); err != nil {
			f.t.Logf("sweep: unmounting %s: %v", ms[i], err)
		}
	}
	for _, name := range fronts {
		f.t.Logf("sweep: removing leftover multipath front %s", name)
		// A workload whose I/O just failed may still hold it for a moment,
		// as may a lazily unmounted filesystem.
		for try := 0; ; try++ {
			err := dm.Remove(ctx, name)
			if err == nil {
				break
			}
			if try == 30 {
				f.t.Logf("sweep: %v", err)
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	cs, err := sysTree.Controllers()
	if err != nil {
		f.t.Logf("sweep: listing controllers: %v", err)
		return
	}
	for _, c := range cs {
		if strings.HasPrefix(c.SubsysNQN, volume.DefaultNQNPrefix) {
			f.t.Logf("sweep: deleting leftover controller %s (%s, %s)", c.Name, c.SubsysNQN, c.State)
			_ = sysTree.DeleteController(c.Name)
		}
	}
}

// nodeAttacher wires the attacher as cmd/rds-csi-agent does: NVMe/TCP,
// behind a multipath front unless front is false (--dm-multipath=false).
// The NVMe attacher is returned too, for its disconnect.
func nodeAttacher(events *uevent.Monitor, front bool) (agent.Attacher, *agent.NVMe) {
	nvme := &agent.NVMe{
		Fabrics: &fabrics.Fabrics{Device: fabrics.DefaultDevice, Sysfs: sysTree},
		Sysfs:   sysTree,
		Events:  events,
		DevDir:  "/dev",
	}
	if !front {
		return nvme, nvme
	}
	return &agent.Multipath{Paths: nvme, Mapper: agent.KernelMapper{}, SysRoot: "/sys", ProcRoot: "/proc", DevDir: "/dev"}, nvme
}

// leftoverFronts lists the multipath fronts of volumes that exist now, by
// the names sysfs gives dm devices.
func leftoverFronts(t *testing.T) []string {
	dirs, err := filepath.Glob("/sys/block/dm-*/dm/name")
	if err != nil {
		t.Logf("listing dm devices: %v", err)
		return nil
	}
	var names []string
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if name := strings.TrimSpace(string(b)); err == nil && strings.HasPrefix(name, "rds-csi-") {
			names = append(names, name)
		}
	}
	return names
}

func serve(t *testing.T, name string, register func(*grpc.Server)) *grpc.ClientConn {
	t.Helper()
	sock := filepath.Join(t.TempDir(), name+".sock")
	srv := rpc.NewServer("e2e", nil)
	register(srv)
	lis, err := rpc.Listen("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func rpcCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), rpcTimeout)
	t.Cleanup(cancel)
	return ctx
}

// vol is a volume as the CO knows it.
type vol struct {
	id      string
	nqn     string
	context map[string]string
	cap     *csi.VolumeCapability
	staging string
	target  string
}

func mountCap(fsType string) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: fsType}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
}

func blockCap() *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
}

// storageClass makes the kernel retry a lost connection every second, so
// the scenarios do not wait out the default 5 s.
var storageClass = map[string]string{volume.KeyReconnectDelay: "1"}

// create provisions a volume; fsType "block" asks for a raw block volume.
func (f *fixture) create(name, fsType string, size int64) *vol {
	f.t.Helper()
	c := blockCap()
	if fsType != "block" {
		c = mountCap(fsType)
	}
	resp, err := f.ctrl.CreateVolume(rpcCtx(f.t), &csi.CreateVolumeRequest{
		Name:               name,
		CapacityRange:      &csi.CapacityRange{RequiredBytes: size},
		VolumeCapabilities: []*csi.VolumeCapability{c},
		Parameters:         storageClass,
	})
	if err != nil {
		f.t.Fatalf("CreateVolume %s: %v", name, err)
	}
	v := resp.GetVolume()
	dir := filepath.Join(f.dir, v.GetVolumeId())
	return &vol{
		id:      v.GetVolumeId(),
		nqn:     v.GetVolumeContext()[volume.KeyNQN],
		context: v.GetVolumeContext(),
		cap:     c,
		staging: filepath.Join(dir, "staging"),
		target:  filepath.Join(dir, "target"),
	}
}

func (f *fixture) stage(v *vol) error {
	// The kubelet makes the staging directory, for block volumes too.
	if err := os.MkdirAll(v.staging, 0o750); err != nil {
		return err
	}
	_, err := f.node.NodeStageVolume(rpcCtx(f.t), &csi.NodeStageVolumeRequest{
		VolumeId: v.id, StagingTargetPath: v.staging, VolumeCapability: v.cap, VolumeContext: v.context,
	})
	return err
}

func (f *fixture) publish(v *vol) error {
	// The CO creates the target's parent; the target itself is the
	// driver's to make.
	if err := os.MkdirAll(filepath.Dir(v.target), 0o750); err != nil {
		return err
	}
	_, err := f.node.NodePublishVolume(rpcCtx(f.t), &csi.NodePublishVolumeRequest{
		VolumeId: v.id, StagingTargetPath: v.staging, TargetPath: v.target, VolumeCapability: v.cap, VolumeContext: v.context,
	})
	return err
}

func (f *fixture) unpublish(v *vol) error {
	_, err := f.node.NodeUnpublishVolume(rpcCtx(f.t), &csi.NodeUnpublishVolumeRequest{VolumeId: v.id, TargetPath: v.target})
	return err
}

func (f *fixture) unstage(v *vol) error {
	_, err := f.node.NodeUnstageVolume(rpcCtx(f.t), &csi.NodeUnstageVolumeRequest{VolumeId: v.id, StagingTargetPath: v.staging})
	return err
}

func (f *fixture) delete(v *vol) error {
	_, err := f.ctrl.DeleteVolume(rpcCtx(f.t), &csi.DeleteVolumeRequest{VolumeId: v.id})
	return err
}

// must fails the test when a step that has to work does not.
func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}
