package cluster

import (
	"context"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/crypto/ssh"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/rds-csi/rds-csi/controller"
	"github.com/rds-csi/rds-csi/test/harness"
	"github.com/rds-csi/rds-csi/test/k8s/binaries"
)

const (
	// DriverName is the CSI driver name the controller runs with.
	DriverName = controller.DefaultDriverName
	// BasePath is the controller's --base-path on the simulated RDS.
	BasePath = "/storage-pool/k8s"

	controllerBuildTimeout = 10 * time.Minute
	controllerReadyTimeout = 30 * time.Second
	// sidecarTimeout is each sidecar's --timeout for one CSI call.
	sidecarTimeout = "30s"
	// sidecarRetryMax caps the sidecars' retry back-off (5 min upstream),
	// so that a call failed while the driver was away is retried within a
	// test's deadline.
	sidecarRetryMax = "10s"
)

// BuildController builds cmd/rds-csi-controller of the module at repoRoot
// into dir and returns the binary's path.
func BuildController(ctx context.Context, repoRoot, dir string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, controllerBuildTimeout)
	defer cancel()
	bin := filepath.Join(dir, "rds-csi-controller")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/rds-csi-controller")
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/rds-csi-controller: %w\n%s", err, out)
	}
	return bin, nil
}

// Controller is the rds-csi controller as a process, serving CSI on Socket
// and talking SSH to the simulated RDS.
type Controller struct {
	*Process
	// Socket is the unix socket the controller serves and the sidecars dial.
	Socket string
}

// ControllerConfig configures StartController.
type ControllerConfig struct {
	// Binary is the rds-csi-controller binary (BuildController).
	Binary string
	RDS    *harness.RDS
	LogDir string
	// Args are added to the controller's flags.
	Args []string
}

// StartController starts the controller against cfg.RDS on a new unix
// socket and waits until its Probe reports ready (its gRPC server answers). The
// controller stops when t ends; Stop, Kill and Start restart it mid-test.
func StartController(t testing.TB, cfg ControllerConfig) *Controller {
	t.Helper()
	// Unix socket paths are limited to 107 bytes; test names are long.
	sockDir, err := os.MkdirTemp("", "rds-csi-k8s-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(sockDir) })
	keyFile := filepath.Join(t.TempDir(), "id_ed25519")
	block, err := ssh.MarshalPrivateKey(cfg.RDS.Key, "rds-csi test bed")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &Controller{Socket: filepath.Join(sockDir, "csi.sock")}
	c.Process = NewProcess(ProcessSpec{
		Name: "rds-csi-controller",
		Path: cfg.Binary,
		Args: append([]string{
			"--endpoint=unix://" + c.Socket,
			"--rds-address=" + cfg.RDS.Sim.Addr(),
			"--rds-user=" + harness.User,
			"--rds-private-key=" + keyFile,
			"--rds-host-key-fingerprint=" + ssh.FingerprintSHA256(cfg.RDS.Sim.HostKey()),
			"--nvme-address=127.0.0.1",
			"--base-path=" + BasePath,
			"--metrics-address=",
			"-v=5",
		}, cfg.Args...),
		LogDir: cfg.LogDir,
	})
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
	})
	if err := c.WaitReady(t.Context()); err != nil {
		t.Fatalf("%v\n--- last lines of %s ---\n%s", err, c.LogPath(), tail(c.LogPath(), 40))
	}
	return c
}

// WaitReady waits until the controller answers Probe with ready=true on its
// socket, or fails after a deadline or when the process exits.
func (c *Controller) WaitReady(ctx context.Context) error {
	conn, err := grpc.NewClient("unix://"+c.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	identity := csi.NewIdentityClient(conn)
	return waitReady(ctx, c.Process, controllerReadyTimeout, func(ctx context.Context) error {
		if _, err := os.Stat(c.Socket); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		resp, err := identity.Probe(ctx, &csi.ProbeRequest{})
		if err != nil {
			return err
		}
		if !resp.GetReady().GetValue() {
			return fmt.Errorf("%s: Probe says not ready", c.Name())
		}
		return nil
	})
}

// SidecarConfig configures a CSI sidecar.
type SidecarConfig struct {
	// Binaries holds the sidecars' binaries.
	Binaries binaries.Set
	// Socket is the driver's unix socket.
	Socket string
	// User is the identity the sidecar acts as; it must be one of the
	// cluster's users.
	User string
	// Args are added to the sidecar's flags.
	Args []string
}

// StartProvisioner starts csi-provisioner against cfg.Socket. It passes
// --extra-create-metadata, so CreateVolume carries the PVC's and PV's
// names. Like the kubelet, the test bed starts it again whenever it exits:
// it exits on purpose when it loses the driver's socket.
func StartProvisioner(t testing.TB, c *Cluster, cfg SidecarConfig) *Process {
	t.Helper()
	return startSidecar(t, c, cfg, binaries.CSIProvisioner, "--extra-create-metadata")
}

// StartAttacher starts csi-attacher against cfg.Socket, restarted like
// StartProvisioner's.
func StartAttacher(t testing.TB, c *Cluster, cfg SidecarConfig) *Process {
	t.Helper()
	return startSidecar(t, c, cfg, binaries.CSIAttacher)
}

// StartSnapshotter starts csi-snapshotter against cfg.Socket, restarted
// like StartProvisioner's. It needs the snapshot CRDs.
func StartSnapshotter(t testing.TB, c *Cluster, cfg SidecarConfig) *Process {
	t.Helper()
	return startSidecar(t, c, cfg, binaries.CSISnapshotter)
}

// StartSnapshotController starts the cluster's snapshot-controller (which
// turns VolumeSnapshots into VolumeSnapshotContents for the snapshotter) as
// the admin: its RBAC is the cluster's, not the driver's.
func StartSnapshotController(t testing.TB, c *Cluster, bins binaries.Set) *Process {
	t.Helper()
	return startTool(t, c, bins, binaries.SnapshotController,
		"--kubeconfig="+c.Kubeconfig(AdminUser), "--leader-election=false", "--retry-interval-max="+sidecarRetryMax, "--v=5")
}

func startSidecar(t testing.TB, c *Cluster, cfg SidecarConfig, name string, args ...string) *Process {
	t.Helper()
	return startTool(t, c, cfg.Binaries, name, append(append([]string{
		"--csi-address=" + cfg.Socket,
		"--kubeconfig=" + c.Kubeconfig(cfg.User),
		"--leader-election=false",
		"--timeout=" + sidecarTimeout,
		"--retry-interval-max=" + sidecarRetryMax,
		"--v=5",
	}, args...), cfg.Args...)...)
}

// startTool starts the built tool name with args, restarted whenever it
// exits, and stops it when the test ends.
func startTool(t testing.TB, c *Cluster, bins binaries.Set, name string, args ...string) *Process {
	t.Helper()
	bin := bins[name]
	if bin == "" {
		t.Fatalf("no %s binary", name)
	}
	p := NewProcess(ProcessSpec{Name: name, Path: bin, Args: args, LogDir: c.LogDir, Restart: true})
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Error(err)
		}
	})
	return p
}
