// Command rds-csi-agent serves the CSI Identity and Node services of rds-csi
// on a node: NVMe/TCP attach through /dev/nvme-fabrics, formatting (of blank
// volumes only), mounts and bind mounts.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"

	"github.com/rds-csi/rds-csi/agent"
	"github.com/rds-csi/rds-csi/agent/heal"
	"github.com/rds-csi/rds-csi/kernel/dm"
	"github.com/rds-csi/rds-csi/kernel/fabrics"
	"github.com/rds-csi/rds-csi/kernel/sysfs"
	"github.com/rds-csi/rds-csi/kernel/uevent"
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
	endpoint       string
	metricsAddress string
	devDir         string
	kubeletDir     string
	statusSocket   string
	storageIfaces  string
	scanInterval   time.Duration
	orphanGrace    time.Duration
	shutdownTmo    int
	dmMultipath    bool
	kubeconfig     string
	events         bool
	showVersion    bool
	node           agent.Options
}

func parseFlags(args []string) (*flags, error) {
	f := &flags{}
	fs := flag.NewFlagSet("rds-csi-agent", flag.ContinueOnError)
	klog.InitFlags(fs)
	fs.StringVar(&f.endpoint, "endpoint", "unix:///csi/csi.sock", "CSI endpoint (unix:///path or tcp://host:port)")
	fs.StringVar(&f.metricsAddress, "metrics-address", ":9810", "address of the Prometheus /metrics endpoint; empty disables it")
	fs.BoolVar(&f.showVersion, "version", false, "print the version and exit")
	fs.StringVar(&f.node.DriverName, "driver-name", "rds.csi.dev", "CSI driver name (must match the controller's)")
	fs.StringVar(&f.node.NodeID, "node-id", os.Getenv("NODE_NAME"), "node ID: the Kubernetes node name (default $NODE_NAME); the host NQN is derived from it")
	fs.StringVar(&f.node.ManagedNQNPrefix, "managed-nqn-prefix", volume.DefaultNQNPrefix, "only subsystems under this NQN prefix are staged, and ever disconnected")
	fs.DurationVar(&f.node.AttachTimeout, "attach-timeout", 60*time.Second, "bound on connect-and-wait-for-device in NodeStageVolume")
	fs.DurationVar(&f.node.InUseTimeout, "in-use-timeout", 5*time.Second, "bound on the in-use check of NodeUnstageVolume")
	fs.StringVar(&f.node.SysRoot, "sys-root", "/sys", "where sysfs is mounted")
	fs.StringVar(&f.node.ProcRoot, "proc-root", "/proc", "where procfs is mounted (the host's, with hostPID, to name processes holding a device)")
	fs.StringVar(&f.devDir, "dev-dir", "/dev", "where device nodes are")
	fs.StringVar(&f.statusSocket, "status-socket", "/run/rds-csi/status.sock", "local unix socket serving the read-only status table (rds-csi-agent status)")
	fs.StringVar(&f.storageIfaces, "storage-interfaces", "", "comma-separated NICs carrying NVMe/TCP; a link coming up triggers a rescan (empty: every link)")
	fs.DurationVar(&f.scanInterval, "scan-interval", time.Second, "how often the state of managed controllers is read (state changes send no uevent)")
	fs.DurationVar(&f.orphanGrace, "orphan-grace", 2*time.Minute, "how long a managed controller may belong to no staged volume before it is disconnected")
	fs.IntVar(&f.shutdownTmo, "shutdown-ctrl-loss-tmo", 0, "on SIGTERM, lower ctrl_loss_tmo of managed controllers to this many seconds so a node shutdown does not hang on an unreachable target (0: off; set it where SIGTERM means node shutdown, as in the systemd unit)")
	fs.BoolVar(&f.dmMultipath, "dm-multipath", true, "put a device-mapper multipath front (queue_if_no_path) in front of each volume, so that a mounted filesystem or a process holding a block volume survives a controller loss and a renumbered reconnect; needs dm-mod and dm-multipath on the node (false: consumers of a lost volume need a restart)")
	fs.StringVar(&f.kubeletDir, "kubelet-dir", "/var/lib/kubelet", "the kubelet's directory, where staged volumes keep their records")
	fs.StringVar(&f.node.StateDir, "state-dir", "", "where the agent keeps what outlives a staging (format markers); empty: <kubelet-dir>/plugins/<driver-name>")
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file for the Kubernetes API (Events); empty: the in-cluster service account when KUBERNETES_SERVICE_HOST is set, else no API")
	fs.BoolVar(&f.events, "events", true, "record Kubernetes Events on a volume's PVC when it is lost, healed or cannot be healed; without an API the agent runs on without them")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if f.showVersion {
		return f, nil
	}
	f.node.Version = version
	if err := f.node.Validate(); err != nil {
		return f, err
	}
	if f.node.StateDir == "" {
		f.node.StateDir = filepath.Join(f.kubeletDir, "plugins", f.node.DriverName)
	}
	return f, nil
}

// defaultGCPercent is the agent's GOGC unless the environment sets one.
const defaultGCPercent = 50

func main() {
	if len(os.Args) > 1 && os.Args[1] == "status" {
		os.Exit(statusCommand(os.Args[2:]))
	}
	f, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if f.showVersion {
		fmt.Printf("rds-csi-agent %s (commit %s)\n", version, commit)
		return
	}
	// The agent's live heap is a few MiB, mostly idle; what grows it is
	// the garbage of each scan. Collecting at half the default growth keeps
	// it resident within the 32 MiB target with 100 volumes for a GC cost
	// measured in docs/benchmarks.md. GOGC set by the operator wins.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, f); err != nil {
		klog.ErrorS(err, "Agent stopped")
		klog.FlushAndExit(klog.ExitFlushTimeout, 1)
	}
}

func run(ctx context.Context, f *flags) error {
	klog.InfoS("Starting rds-csi-agent", "version", version, "commit", commit, "driver", f.node.DriverName,
		"nodeID", f.node.NodeID, "hostNQN", volume.HostNQN(f.node.NodeID), "hostID", volume.HostID(f.node.NodeID),
		"managedNQNPrefix", f.node.ManagedNQNPrefix)
	// Subscribe to kernel uevents before anything else looks at sysfs, so
	// that no change between a look and the subscription can be missed.
	events, err := uevent.Start(ctx)
	if err != nil {
		return fmt.Errorf("subscribing to kernel uevents (the agent needs hostNetwork): %w", err)
	}
	tree := sysfs.Tree{Root: f.node.SysRoot}
	nvme := &agent.NVMe{
		Fabrics: &fabrics.Fabrics{Device: fabrics.DefaultDevice, Sysfs: tree},
		Sysfs:   tree,
		Events:  events,
		DevDir:  f.devDir,
	}
	var attacher agent.Attacher = nvme
	if f.dmMultipath {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := dm.Available(dctx)
		cancel()
		if err != nil {
			return fmt.Errorf("--dm-multipath needs the device-mapper (modprobe dm-multipath, and /dev from the host), or run with --dm-multipath=false: %w", err)
		}
		attacher = &agent.Multipath{Paths: nvme, Mapper: agent.KernelMapper{}, SysRoot: f.node.SysRoot, ProcRoot: f.node.ProcRoot, DevDir: f.devDir}
	}
	reg := rpc.NewRegistry()
	node := agent.New(f.node, attacher, agent.HostMounter{}, agent.NewMetrics(reg))
	notifier, stopEvents := startEvents(f, reg)
	defer stopEvents()
	var ifaces []string
	if f.storageIfaces != "" {
		ifaces = strings.Split(f.storageIfaces, ",")
	}
	loop, err := heal.New(heal.Config{
		Sysfs:            tree,
		Events:           events,
		ManagedNQNPrefix: f.node.ManagedNQNPrefix,
		ScanInterval:     f.scanInterval,
		OrphanGrace:      f.orphanGrace,
		Links:            heal.NetlinkLinks{Interfaces: ifaces},
		Disconnect:       node.OrphanDisconnect(tree, nvme.Fabrics.Disconnect),
		Repairer:         node,
		Notifier:         heal.Notifiers{node, notifier},
		Metrics:          heal.NewMetrics(reg),
	})
	if err != nil {
		return err
	}
	node.SetTracker(loop)
	// Records are read after the loop exists but before it runs: the
	// orphan grace starts when it runs, and by then every staged volume is
	// tracked again.
	resumed, err := node.Resume(f.kubeletDir)
	if err != nil {
		return fmt.Errorf("reading volume records: %w", err)
	}
	// The run before may have stopped in shutdown mode for a restart, not
	// a node shutdown: its volumes get their settings back.
	uctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	if err := node.UndoShutdown(uctx, resumed); err != nil {
		klog.ErrorS(err, "Restoring the resumed volumes' ctrl_loss_tmo and queueing failed")
	}
	cancel()
	loopDone := make(chan error, 1)
	go func() { loopDone <- loop.Run(ctx) }()
	if f.statusSocket != "" {
		if err := serveStatus(ctx, f.statusSocket, heal.StatusHandler(loop)); err != nil {
			return err
		}
	}
	defer func() {
		if f.shutdownTmo > 0 {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := loop.Shutdown(sctx, f.shutdownTmo); err != nil {
				klog.ErrorS(err, "Lowering ctrl_loss_tmo for shutdown failed")
			} else {
				klog.InfoS("Lowered ctrl_loss_tmo of managed controllers for shutdown", "seconds", f.shutdownTmo)
			}
			if err := node.StopQueueing(sctx); err != nil {
				klog.ErrorS(err, "Stopping the multipath fronts from queueing for shutdown failed")
			}
		}
	}()

	srv := rpc.NewServer(f.node.DriverName, rpc.NewMetrics(reg))
	csi.RegisterIdentityServer(srv, node)
	csi.RegisterNodeServer(srv, node)
	return rpc.Serve(ctx, srv, f.endpoint, f.metricsAddress, reg)
}

// startEvents connects the healing loop to Kubernetes Events on PVCs, and
// returns what stops them. Without an API (a bare-metal node run by systemd,
// or a client that cannot be built) the agent says so once and runs on
// without Events: they are for people, volumes do not need them.
func startEvents(f *flags, reg prometheus.Registerer) (heal.Notifier, func()) {
	if !f.events {
		klog.InfoS("Kubernetes Events are off (--events=false)")
		return nil, func() {}
	}
	cfg, err := events.LoadConfig(f.kubeconfig, "rds-csi-agent/"+version)
	var api events.API
	if err == nil {
		api, err = events.NewAPI(cfg)
	}
	switch {
	case errors.Is(err, events.ErrNotConfigured):
		klog.InfoS("Running without Kubernetes Events: no --kubeconfig given and not in a cluster")
		return nil, func() {}
	case err != nil:
		klog.ErrorS(err, "Running without Kubernetes Events: no Kubernetes client", "kubeconfig", f.kubeconfig)
		return nil, func() {}
	}
	rec := events.NewRecorder(api, "rds-csi-agent", f.node.NodeID, reg)
	klog.InfoS("Recording Kubernetes Events on PVCs", "kubeconfig", f.kubeconfig)
	return agent.HealthEvents{Events: rec, NodeID: f.node.NodeID}, rec.Shutdown
}
