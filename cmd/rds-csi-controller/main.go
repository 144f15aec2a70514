// Command rds-csi-controller serves the CSI Identity and Controller services
// of rds-csi, provisioning volumes on a MikroTik RDS over SSH.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/ssh"
	"k8s.io/klog/v2"

	"github.com/rds-csi/rds-csi/controller"
	"github.com/rds-csi/rds-csi/controller/routeros"
	"github.com/rds-csi/rds-csi/kube"
	"github.com/rds-csi/rds-csi/kube/events"
	"github.com/rds-csi/rds-csi/rpc"
	"github.com/rds-csi/rds-csi/volume"
)

// version and commit are stamped by the build (-ldflags -X).
var (
	version = "dev"
	commit  = "unknown"
)

type flags struct {
	endpoint        string
	metricsAddress  string
	showVersion     bool
	driver          controller.Options
	rdsAddress      string
	rdsUser         string
	rdsKeyFile      string
	knownHosts      string
	fingerprint     string
	insecureHostKey bool
	commandTimeout  time.Duration
	maxSessions     int
	kubeconfig      string
	attachmentState string
}

// Values of --attachment-state.
const (
	stateKubernetes = "kubernetes"
	stateMemory     = "memory"
)

// cacheSyncTimeout bounds the wait for the VolumeAttachment, PV and Node
// caches at start: the attachment state is rebuilt from them before the
// controller serves.
const cacheSyncTimeout = 2 * time.Minute

func parseFlags(args []string) (*flags, error) {
	f := &flags{}
	fs := flag.NewFlagSet("rds-csi-controller", flag.ContinueOnError)
	klog.InitFlags(fs)
	fs.StringVar(&f.endpoint, "endpoint", "unix:///csi/csi.sock", "CSI endpoint (unix:///path or tcp://host:port)")
	fs.StringVar(&f.metricsAddress, "metrics-address", ":9809", "address of the Prometheus /metrics endpoint; empty disables it")
	fs.BoolVar(&f.showVersion, "version", false, "print the version and exit")
	fs.StringVar(&f.driver.DriverName, "driver-name", controller.DefaultDriverName, "CSI driver name (rds.csi.srvlab.io adopts the earlier driver's volumes)")
	fs.StringVar(&f.driver.NQNPrefix, "nqn-prefix", volume.DefaultNQNPrefix, "subsystem NQN prefix; a volume's NQN is the prefix plus its slot")
	fs.StringVar(&f.driver.BasePath, "base-path", "/storage-pool/rds-csi", "default directory of backing files on the RDS (StorageClass basePath overrides); its first part is the pool")
	fs.StringVar(&f.driver.NVMeAddress, "nvme-address", "", "default NVMe/TCP target IP (StorageClass nvmeAddress overrides); defaults to the --rds-address host when it is an IP")
	fs.IntVar(&f.driver.NVMePort, "nvme-port", 4420, "default NVMe/TCP port (StorageClass nvmePort overrides)")
	fs.Int64Var(&f.driver.CapacityReserve, "capacity-reserve-bytes", 0, "bytes of pool space GetCapacity keeps back")
	fs.StringVar(&f.rdsAddress, "rds-address", "", "RDS SSH address, host[:port] (port 22 by default)")
	fs.StringVar(&f.rdsUser, "rds-user", "", "RouterOS user; console options are appended by the driver")
	fs.StringVar(&f.rdsKeyFile, "rds-private-key", "", "file holding the SSH private key")
	fs.StringVar(&f.knownHosts, "rds-known-hosts", "", "known_hosts file pinning the RDS host key")
	fs.StringVar(&f.fingerprint, "rds-host-key-fingerprint", "", "pinned RDS host key fingerprint (SHA256:...)")
	fs.BoolVar(&f.insecureHostKey, "rds-insecure-skip-host-key-check", false, "accept any RDS host key (insecure: for first contact only)")
	fs.DurationVar(&f.commandTimeout, "rds-command-timeout", 30*time.Second, "deadline of every RouterOS command")
	fs.IntVar(&f.maxSessions, "rds-max-sessions", 8, "concurrent RouterOS commands on the one SSH connection")
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig of the cluster; empty uses the in-cluster service account")
	fs.StringVar(&f.attachmentState, "attachment-state", stateKubernetes, "where attachments are kept: kubernetes (rebuilt from VolumeAttachments, the API is required) or memory (no cluster: demos and tests only; lost on restart, no Events, never in a cluster)")
	fs.DurationVar(&f.driver.RWOGracePeriod, "rwo-grace-period", 10*time.Second, "sequential hand-off of a ReadWriteOnce volume: how long a holder whose VolumeAttachment is being deleted is waited for (Aborted, retried) before the next node gets FailedPrecondition, and how long a holder without a VolumeAttachment is trusted before it is released as stale; never allows two nodes at once")
	fs.BoolVar(&f.driver.TargetFencing, "target-fencing", false, "restrict each disk's NVMe/TCP export to the host NQNs of the nodes it is published to (nvme-tcp-server-allow-host-name), verified by read-back; opt-in until its semantics are confirmed on your RDS (docs/fencing.md)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if f.showVersion {
		return f, nil
	}
	var errs []error
	if f.rdsAddress == "" {
		errs = append(errs, errors.New("--rds-address is required"))
	} else if _, _, err := net.SplitHostPort(f.rdsAddress); err != nil {
		f.rdsAddress = net.JoinHostPort(f.rdsAddress, "22")
	}
	if f.rdsUser == "" {
		errs = append(errs, errors.New("--rds-user is required"))
	}
	switch {
	case f.attachmentState != stateKubernetes && f.attachmentState != stateMemory:
		errs = append(errs, fmt.Errorf("--attachment-state=%q: want %s or %s", f.attachmentState, stateKubernetes, stateMemory))
	case f.attachmentState == stateMemory && f.kubeconfig != "":
		errs = append(errs, errors.New("--kubeconfig names a cluster, but --attachment-state=memory would not use it"))
	}
	if f.rdsKeyFile == "" {
		errs = append(errs, errors.New("--rds-private-key is required"))
	}
	if f.driver.NVMeAddress == "" && f.rdsAddress != "" {
		if host, _, err := net.SplitHostPort(f.rdsAddress); err == nil && net.ParseIP(host) != nil {
			f.driver.NVMeAddress = host
		}
	}
	f.driver.Version = version
	if err := f.driver.Validate(); err != nil {
		errs = append(errs, err)
	}
	return f, errors.Join(errs...)
}

func main() {
	f, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if f.showVersion {
		fmt.Printf("rds-csi-controller %s (commit %s)\n", version, commit)
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, f); err != nil {
		klog.ErrorS(err, "Controller stopped")
		klog.FlushAndExit(klog.ExitFlushTimeout, 1)
	}
}

func run(ctx context.Context, f *flags) error {
	klog.InfoS("Starting rds-csi-controller", "version", version, "commit", commit, "driver", f.driver.DriverName, "rds", f.rdsAddress, "targetFencing", f.driver.TargetFencing, "rwoGracePeriod", f.driver.RWOGracePeriod)
	keyPEM, err := os.ReadFile(f.rdsKeyFile)
	if err != nil {
		return fmt.Errorf("reading the SSH private key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(keyPEM)
	if err != nil {
		// The parser's error never quotes the key material.
		return fmt.Errorf("parsing the SSH private key %s: %w", f.rdsKeyFile, err)
	}
	if f.insecureHostKey {
		klog.Warning("RDS host key checking is DISABLED (--rds-insecure-skip-host-key-check): anyone on the path can impersonate the RDS and read every command. Pin the key with --rds-known-hosts or --rds-host-key-fingerprint.")
	}
	hostKey, err := routeros.HostKeyCallback(f.knownHosts, f.fingerprint, f.insecureHostKey)
	if err != nil {
		return err
	}
	reg := rpc.NewRegistry()
	client, err := routeros.NewClient(routeros.ClientConfig{
		Address:         f.rdsAddress,
		User:            f.rdsUser,
		Signer:          signer,
		HostKeyCallback: hostKey,
		CommandTimeout:  f.commandTimeout,
		MaxSessions:     f.maxSessions,
		Metrics:         routeros.NewMetrics(reg),
	})
	if err != nil {
		return err
	}
	defer func() { _ = client.Close() }()

	var driver *controller.Driver
	if f.attachmentState == stateMemory {
		klog.Warning("Attachments are kept in memory only (--attachment-state=memory): a restart forgets them, so a ReadWriteOnce volume can then attach to a second node. For demos and tests without a cluster; never run a cluster's controller like this.")
		driver = controller.New(f.driver, routeros.NewDisks(client), controller.WithMetrics(reg))
	} else {
		stopWatch, d, err := withCluster(ctx, f, client, reg)
		if err != nil {
			return err
		}
		defer stopWatch()
		driver = d
	}
	go driver.WatchMigrations(ctx, 0)
	srv := rpc.NewServer(f.driver.DriverName, rpc.NewMetrics(reg))
	csi.RegisterIdentityServer(srv, driver)
	csi.RegisterControllerServer(srv, driver)
	return rpc.Serve(ctx, srv, f.endpoint, f.metricsAddress, reg)
}

// withCluster returns a driver that keeps its attachments against the
// cluster's VolumeAttachments, and the function that stops watching them.
func withCluster(ctx context.Context, f *flags, client *routeros.Client, reg prometheus.Registerer) (stop func(), d *controller.Driver, err error) {
	kc, err := kube.NewClientset(f.kubeconfig, "rds-csi-controller/"+version)
	if err != nil {
		return nil, nil, fmt.Errorf("the controller keeps attachments against the cluster's VolumeAttachments and needs its API (run in the cluster or pass --kubeconfig): %w", err)
	}
	host, _ := os.Hostname()
	recorder := events.NewRecorder(kube.EventsAPI(kc), "rds-csi-controller", host, reg)
	watcher, err := kube.NewWatcher(kc, f.driver.DriverName, recorder)
	if err != nil {
		recorder.Shutdown()
		return nil, nil, err
	}
	stop = func() {
		watcher.Stop()
		recorder.Shutdown()
	}
	if err := watcher.Start(ctx, cacheSyncTimeout); err != nil {
		stop()
		return nil, nil, err
	}
	d = controller.New(f.driver, routeros.NewDisks(client), controller.WithCluster(watcher, watcher), controller.WithMetrics(reg))
	if err := watcher.OnNodeDeleted(func(node string) { go d.ReleaseNode(ctx, node) }); err != nil {
		stop()
		return nil, nil, err
	}
	go d.ReleaseDeletedNodes(ctx)
	return stop, d, nil
}
