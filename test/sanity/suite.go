// Package sanity runs csi-sanity (csi-test v5) against the real controller,
// talking SSH to the RouterOS simulator, and the real node agent.
package sanity

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"

	"google.golang.org/grpc"

	"github.com/rds-csi/rds-csi/agent"
	"github.com/rds-csi/rds-csi/controller"
	"github.com/rds-csi/rds-csi/controller/routeros"
	"github.com/rds-csi/rds-csi/rpc"
	"github.com/rds-csi/rds-csi/test/harness"
	"github.com/rds-csi/rds-csi/test/looptransport"
	"github.com/rds-csi/rds-csi/test/rdssim"
)

// Run runs every csi-sanity spec for volumes of accessType ("mount" or
// "block"): Identity and Controller against the controller talking SSH to
// the simulator, Node against the real agent with the loop-device transport
// (real mkfs, mounts and bind mounts; root required). Ginkgo runs one suite
// per process, so each access type has its own test package.
func Run(t *testing.T, accessType string) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPING csi-sanity: the node specs mount and attach loop devices, which needs root")
	}
	const nodeID = "sanity-node"
	rds := harness.StartRDS(t, rdssim.Config{}, routeros.ClientConfig{})
	opts := controller.Options{Version: "sanity", BasePath: "/storage-pool/sanity", NVMeAddress: "127.0.0.1"}
	if err := opts.Validate(); err != nil {
		t.Fatal(err)
	}
	ctrl := serve(t, func(srv *grpc.Server) {
		driver := controller.New(opts, rds.Disks, controller.WithCluster(oneNodeCluster{node: nodeID}, nil))
		csi.RegisterIdentityServer(srv, driver)
		csi.RegisterControllerServer(srv, driver)
	})
	nodeOpts := agent.Options{Version: "sanity", NodeID: nodeID}
	if err := nodeOpts.Validate(); err != nil {
		t.Fatal(err)
	}
	node := serve(t, func(srv *grpc.Server) {
		n := agent.New(nodeOpts, &looptransport.Attacher{Sim: rds.Sim}, agent.HostMounter{}, nil)
		csi.RegisterIdentityServer(srv, n)
		csi.RegisterNodeServer(srv, n)
	})

	cfg := sanity.NewTestConfig()
	cfg.Address = node
	cfg.ControllerAddress = ctrl
	cfg.TargetPath = filepath.Join(t.TempDir(), "target")
	cfg.StagingPath = filepath.Join(t.TempDir(), "staging")
	cfg.TestVolumeSize = 1 << 30
	cfg.TestVolumeExpandSize = 2 << 30
	cfg.TestVolumeAccessType = accessType
	sanity.Test(t, cfg)

	// The snapshot, restore and clone specs run only while the controller
	// advertises them: they must have reached the RDS.
	copied := false
	for _, c := range rds.Sim.Commands() {
		copied = copied || strings.Contains(c, " copy-from=")
	}
	if !copied {
		t.Error("csi-sanity made no copy on the RDS: its snapshot and clone specs did not run")
	}

	// Every volume the suite created must be gone from the RDS, disk and file.
	disks, err := rds.Disks.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(disks) != 0 {
		t.Errorf("csi-sanity left %d disks on the RDS: %+v", len(disks), disks)
	}
	// Every sanity volume is named sanity-*, so its file matches "sanity".
	out, err := rds.Client.Run(context.Background(), mustCommand(routeros.FileList("sanity")))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, ".img") {
		t.Errorf("csi-sanity left backing files on the RDS:\n%s", out)
	}
}

func serve(t *testing.T, register func(*grpc.Server)) string {
	t.Helper()
	endpoint := "unix://" + filepath.Join(t.TempDir(), "csi.sock")
	srv := rpc.NewServer("sanity", nil)
	register(srv)
	lis, err := rpc.Listen(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return endpoint
}

func mustCommand(c routeros.Command, err error) routeros.Command {
	if err != nil {
		panic(err)
	}
	return c
}

// oneNodeCluster is a cluster of the one node the suite's agent serves, so
// that ControllerPublish can tell a node that does not exist (a spec of the
// suite). Every attachment the controller made is one the cluster has.
type oneNodeCluster struct{ node string }

func (c oneNodeCluster) Attachment(string, string) (bool, time.Time)             { return true, time.Time{} }
func (c oneNodeCluster) NodeExists(node string) bool                             { return node == c.node }
func (c oneNodeCluster) EachAttached(func(string, controller.ClusterAttachment)) {}

// LiveAttachments: the controller's own record is the whole truth here.
func (c oneNodeCluster) LiveAttachments(string) ([]controller.ClusterAttachment, error) {
	return nil, nil
}
