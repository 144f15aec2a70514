// Command vmguest is the guest half of `make demo`. Inside the VM test bed
// (docs/testing.md) it runs the whole driver as a node would see it: the
// RDS simulator exporting through the kernel's nvmet target, the real
// controller, the real agent with its NVMe/TCP attacher and its health
// model and repairs, and the multipath front. It takes one volume through
// its life, cuts the target under it twice (an outage the kernel rides out,
// then one long enough for the kernel to delete the controller, which the
// agent heals under a running writer) and narrates, with timestamps, what
// the kernel and the agent see.
// test/demo/vm boots it and streams the narration to the user.
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/klog/v2"

	"github.com/rds-csi/rds-csi/agent"
	"github.com/rds-csi/rds-csi/agent/heal"
	"github.com/rds-csi/rds-csi/controller"
	"github.com/rds-csi/rds-csi/controller/routeros"
	"github.com/rds-csi/rds-csi/kernel/fabrics"
	"github.com/rds-csi/rds-csi/kernel/mount"
	"github.com/rds-csi/rds-csi/kernel/sysfs"
	"github.com/rds-csi/rds-csi/kernel/uevent"
	"github.com/rds-csi/rds-csi/rpc"
	"github.com/rds-csi/rds-csi/test/rdssim"
	"github.com/rds-csi/rds-csi/test/rdssim/nvmet"
	"github.com/rds-csi/rds-csi/test/workload"
	"github.com/rds-csi/rds-csi/volume"
)

const (
	nodeID   = "demo-node"
	basePath = "/storage-pool/demo"
	port     = rdssim.DefaultPort
	// rpcTimeout bounds one CSI call; the guest CPU is emulated, so mkfs
	// of a 1 GiB volume alone takes seconds.
	rpcTimeout = 2 * time.Minute
	// outage is how long the target stays cut in the first act: a few of
	// the kernel's reconnect attempts (reconnectDelay=2) fail, and
	// ctrl_loss_tmo (8 s) is not reached.
	outage = 4 * time.Second
	// lossHold is how long the target stays away after the kernel deleted
	// the controller in the second act.
	lossHold = 4 * time.Second
	// klogFile keeps the agent's and controller's logs out of the
	// narration; its tail is printed when something fails.
	klogFile = "/tmp/rds-csi-demo.log"
)

var sysTree = sysfs.Tree{Root: "/sys"}

func main() {
	// The demo creates nvmet subsystems, connects NVMe controllers and
	// mounts filesystems: only the test bed's /init may start it.
	if os.Getenv("RDS_CSI_E2E_GUEST") != "1" {
		fmt.Fprintln(os.Stderr, "refusing to run: this is the guest half of `make demo` and runs only inside its VM (go run ./test/demo/vm)")
		os.Exit(2)
	}
	d := &demo{start: time.Now(), dir: "/tmp/demo"}
	err := d.run()
	if err != nil {
		d.say("DEMO FAILED: %v", err)
		klog.Flush()
		if b, rerr := os.ReadFile(klogFile); rerr == nil {
			lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
			fmt.Println("last lines of the agent's and controller's log:")
			for _, l := range lines[max(0, len(lines)-40):] {
				fmt.Println("  " + l)
			}
		}
		os.Exit(1)
	}
}

type demo struct {
	start time.Time
	dir   string
	mu    sync.Mutex // one narration line at a time: kernel messages arrive on their own goroutine

	exp  *nvmet.Exporter
	sim  *rdssim.Sim
	loop *heal.Loop
	ctrl csi.ControllerClient
	node csi.NodeClient
}

// say prints one timeline line, stamped with the time since the demo began.
func (d *demo) say(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Printf("%6.1fs  %s\n", time.Since(d.start).Seconds(), fmt.Sprintf(format, args...))
}

func (d *demo) step(title string) {
	d.mu.Lock()
	fmt.Println()
	d.mu.Unlock()
	d.say("==> %s", title)
}

func (d *demo) at(t time.Time) string { return fmt.Sprintf("%.1fs", t.Sub(d.start).Seconds()) }

func (d *demo) run() error {
	if err := quietConsole(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := os.MkdirAll(d.dir, 0o755); err != nil {
		return err
	}
	d.watchKernel()

	d.step("Starting the driver inside the VM")
	if err := d.startStack(ctx); err != nil {
		return err
	}

	const name = "pvc-demo"
	params := map[string]string{volume.KeyCtrlLossTmo: "8", volume.KeyReconnectDelay: "2"}
	d.step(fmt.Sprintf("CreateVolume %s: 1 GiB, ext4, %s=%s %s=%s", name,
		volume.KeyCtrlLossTmo, params[volume.KeyCtrlLossTmo], volume.KeyReconnectDelay, params[volume.KeyReconnectDelay]))
	capability := &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: "ext4"}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
	var created *csi.CreateVolumeResponse
	if err := bounded(ctx, func(ctx context.Context) (err error) {
		created, err = d.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{
			Name: name, CapacityRange: &csi.CapacityRange{RequiredBytes: 1 << 30},
			VolumeCapabilities: []*csi.VolumeCapability{capability}, Parameters: params,
		})
		return err
	}); err != nil {
		return fmt.Errorf("CreateVolume: %w", err)
	}
	v := created.GetVolume()
	id, nqn := v.GetVolumeId(), v.GetVolumeContext()[volume.KeyNQN]
	d.say("volume %s, %d bytes", id, v.GetCapacityBytes())
	d.say("exported as %s on 127.0.0.1:%d", nqn, port)

	staging, target := filepath.Join(d.dir, id, "staging"), filepath.Join(d.dir, id, "target")
	d.step("NodeStageVolume: connect over NVMe/TCP, put a multipath front over the namespace, format it, mount it")
	if err := os.MkdirAll(staging, 0o750); err != nil {
		return err
	}
	if err := bounded(ctx, func(ctx context.Context) error {
		_, err := d.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{
			VolumeId: id, StagingTargetPath: staging, VolumeCapability: capability, VolumeContext: v.GetVolumeContext(),
		})
		return err
	}); err != nil {
		return fmt.Errorf("NodeStageVolume: %w", err)
	}
	ns, err := sysTree.ResolveNamespace(nqn, 1)
	if err != nil {
		return err
	}
	cs, err := sysTree.ControllersOf(nqn)
	if err != nil {
		return fmt.Errorf("controllers of %s after NodeStage: %w", nqn, err)
	}
	if len(cs) == 0 {
		return fmt.Errorf("no controller of %s after NodeStage", nqn)
	}
	ctrlName := cs[0].Name
	d.say("sysfs:  controller %s %s, namespace /dev/%s (%s), ctrl_loss_tmo=%s reconnect_delay=%s",
		ctrlName, cs[0].State, ns.Name, ns.Dev, ctrlAttr(ctrlName, "ctrl_loss_tmo"), ctrlAttr(ctrlName, "reconnect_delay"))
	frontDev, err := mountedFrom(staging)
	if err != nil {
		return err
	}
	d.say("front:  %s (%s), a dm-multipath table with queue_if_no_path over %s", agent.MapperName(id), frontDev, ns.Dev)
	d.say("ext4 on the front mounted at %s", staging)

	d.step("NodePublishVolume: bind-mount it where the pod would see it")
	if err := os.MkdirAll(filepath.Dir(target), 0o750); err != nil {
		return err
	}
	if err := bounded(ctx, func(ctx context.Context) error {
		_, err := d.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{
			VolumeId: id, StagingTargetPath: staging, TargetPath: target, VolumeCapability: capability, VolumeContext: v.GetVolumeContext(),
		})
		return err
	}); err != nil {
		return fmt.Errorf("NodePublishVolume: %w", err)
	}
	d.say("published at %s", target)

	d.step("Writing 4 MiB of random data and fsync")
	file := filepath.Join(target, "data.bin")
	sum, err := writeRandom(file, 4<<20)
	if err != nil {
		return err
	}
	d.say("%s written, sha256 %x…", file, sum[:8])
	if err := d.waitAgent(id, heal.StateLive, 30*time.Second); err != nil {
		return err
	}

	d.step(fmt.Sprintf("Act 1: a short outage. The RDS stops serving port %d (PortDown) for %v", port, outage))
	// Starting from what was already narrated, so only changes print.
	w := &watcher{d: d, id: id, nqn: nqn, kernel: kernelState(nqn)}
	w.agent, _ = d.loop.Health(id)
	if err := d.exp.PortDown(port); err != nil {
		return err
	}
	d.say("nvmet closed the listener; the initiator's connection is gone and reconnects are refused")
	w.watch(outage, func() bool { return false })

	d.step(fmt.Sprintf("Restoring the target (PortUp); the kernel's next reconnect attempt (every %ss) gets through", params[volume.KeyReconnectDelay]))
	restored := time.Now()
	if err := d.exp.PortUp(port); err != nil {
		return err
	}
	if !w.watch(90*time.Second, func() bool { return w.agent.State == heal.StateLive && strings.HasSuffix(w.kernel, " live") }) {
		return errors.New("the agent did not report the volume live within 90 s of the target's return")
	}
	d.say("live again %.1fs after the target returned: the kernel reconnected on its own, same controller, same namespace", time.Since(restored).Seconds())

	d.step("Act 2: a controller loss under a running workload")
	wr := startWriter(target)
	if err := wr.waitWrites(10, 30*time.Second); err != nil {
		return err
	}
	d.say("a writer creates a file and fsyncs it every 50 ms in %s; %d so far", target, wr.count())
	cutAt := time.Now()
	if err := d.exp.PortDown(port); err != nil {
		return err
	}
	d.say("PortDown: this time the target stays away past ctrl_loss_tmo (%ss)", params[volume.KeyCtrlLossTmo])
	if !w.watch(60*time.Second, func() bool { return w.kernel == "no controller of the subsystem" }) {
		return errors.New("the kernel did not delete the controller within 60 s")
	}
	d.say("the kernel deleted the controller and its namespace %.1fs after the cut; the writer is blocked, not failed: the front queues its I/O (%d writes, %d errors)",
		time.Since(cutAt).Seconds(), wr.count(), len(wr.errors()))
	w.watch(lossHold, func() bool { return false })

	d.step("Restoring the target: the agent reconnects and reloads the front onto the new namespace")
	restored = time.Now()
	if err := d.exp.PortUp(port); err != nil {
		return err
	}
	if !w.watch(90*time.Second, func() bool { return w.agent.State == heal.StateLive && strings.HasSuffix(w.kernel, " live") }) {
		return errors.New("the agent did not heal the volume within 90 s of the target's return")
	}
	d.say("healed %.1fs after the target returned", time.Since(restored).Seconds())
	newNS, err := sysTree.ResolveNamespace(nqn, 1)
	if err != nil {
		return err
	}
	stillFront, err := mountedFrom(staging)
	if err != nil {
		return err
	}
	d.say("namespace: was /dev/%s (%s), now /dev/%s (%s); the filesystem is still mounted from the front %s", ns.Name, ns.Dev, newNS.Name, newNS.Dev, stillFront)
	before := wr.count()
	if err := wr.waitWrites(before+10, 60*time.Second); err != nil {
		return err
	}
	wr.stop()
	if errs := wr.errors(); len(errs) > 0 {
		return fmt.Errorf("the writer saw %d I/O errors across the loss, first: %s", len(errs), errs[0])
	}
	d.say("the writer went on: %d files, 0 errors, longest write %.1fs (the outage); it never restarted", wr.count(), wr.longestWrite().Seconds())

	d.step("Reading everything back from the device (page cache dropped)")
	got, err := readBack(file)
	if err != nil {
		return err
	}
	if got != sum {
		return fmt.Errorf("%s has sha256 %x, wrote %x", file, got, sum)
	}
	d.say("%s: sha256 %x… matches", filepath.Base(file), got[:8])
	if err := wr.verify(); err != nil {
		return err
	}
	d.say("all %d files of the writer read back intact, those written during the loss included", wr.count())

	d.step("The agent's status table (what `rds-csi-agent status` prints)")
	rec := httptest.NewRecorder()
	heal.StatusHandler(d.loop).ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	d.mu.Lock()
	for l := range strings.Lines(rec.Body.String()) {
		fmt.Print("          " + l)
	}
	d.mu.Unlock()

	d.step("NodeUnpublishVolume, NodeUnstageVolume, DeleteVolume")
	if err := bounded(ctx, func(ctx context.Context) error {
		_, err := d.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target})
		return err
	}); err != nil {
		return fmt.Errorf("NodeUnpublishVolume: %w", err)
	}
	d.say("unpublished")
	if err := bounded(ctx, func(ctx context.Context) error {
		_, err := d.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging})
		return err
	}); err != nil {
		return fmt.Errorf("NodeUnstageVolume: %w", err)
	}
	d.say("unstaged: unmounted, front removed, disconnected")
	if err := bounded(ctx, func(ctx context.Context) error {
		_, err := d.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id})
		return err
	}); err != nil {
		return fmt.Errorf("DeleteVolume: %w", err)
	}
	d.say("deleted on the RDS")
	if err := d.checkGone(id, nqn); err != nil {
		return err
	}
	d.say("nothing left: no NVMe controller, no mount, no disk or backing file on the RDS, nothing tracked by the agent")
	d.step("Done")
	return nil
}

// startStack wires the pieces as the guest tests do, plus the health loop
// that cmd/rds-csi-agent runs: the outage is narrated from its view.
func (d *demo) startStack(ctx context.Context) error {
	exp, err := nvmet.New(nvmet.Config{Root: nvmet.DefaultRoot, Addr: "127.0.0.1"})
	if err != nil {
		return err
	}
	d.exp = exp
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return err
	}
	d.sim, err = rdssim.Start(ctx, rdssim.Config{
		StateDir: filepath.Join(d.dir, "rds"), User: "csi",
		AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}, Exporter: exp,
	})
	if err != nil {
		return err
	}
	fingerprint := ssh.FingerprintSHA256(d.sim.HostKey())
	d.say("simulated RDS: RouterOS CLI over SSH on %s (host key %s), disks served by the kernel's nvmet target", d.sim.Addr(), fingerprint)

	hostKey, err := routeros.HostKeyCallback("", fingerprint, false)
	if err != nil {
		return err
	}
	client, err := routeros.NewClient(routeros.ClientConfig{Address: d.sim.Addr(), User: "csi", Signer: signer, HostKeyCallback: hostKey})
	if err != nil {
		return err
	}
	copts := controller.Options{Version: "demo", BasePath: basePath, NVMeAddress: "127.0.0.1"}
	if err := copts.Validate(); err != nil {
		return err
	}
	ctrlConn, err := d.serve("controller", func(srv *grpc.Server) {
		c := controller.New(copts, routeros.NewDisks(client))
		csi.RegisterIdentityServer(srv, c)
		csi.RegisterControllerServer(srv, c)
	})
	if err != nil {
		return err
	}
	d.ctrl = csi.NewControllerClient(ctrlConn)

	events, err := uevent.Start(ctx)
	if err != nil {
		return err
	}
	nopts := agent.Options{Version: "demo", NodeID: nodeID}
	if err := nopts.Validate(); err != nil {
		return err
	}
	nvme := &agent.NVMe{
		Fabrics: &fabrics.Fabrics{Device: fabrics.DefaultDevice, Sysfs: sysTree},
		Sysfs:   sysTree,
		Events:  events,
		DevDir:  "/dev",
	}
	attacher := &agent.Multipath{Paths: nvme, Mapper: agent.KernelMapper{}, SysRoot: "/sys", ProcRoot: "/proc", DevDir: "/dev"}
	node := agent.New(nopts, attacher, agent.HostMounter{}, nil)
	// No Links: the target is on loopback, which never goes down.
	d.loop, err = heal.New(heal.Config{
		Sysfs:            sysTree,
		Events:           events,
		ManagedNQNPrefix: nopts.ManagedNQNPrefix,
		Disconnect:       node.OrphanDisconnect(sysTree, nvme.Fabrics.Disconnect),
		Repairer:         node,
		Notifier:         node,
	})
	if err != nil {
		return err
	}
	node.SetTracker(d.loop)
	go func() {
		if err := d.loop.Run(ctx); err != nil {
			d.say("the agent's health loop stopped: %v", err)
		}
	}()
	nodeConn, err := d.serve("agent", func(srv *grpc.Server) {
		csi.RegisterIdentityServer(srv, node)
		csi.RegisterNodeServer(srv, node)
	})
	if err != nil {
		return err
	}
	d.node = csi.NewNodeClient(nodeConn)
	d.say("agent: host NQN %s, health model scanning managed controllers every second", volume.HostNQN(nodeID))
	return nil
}

func (d *demo) serve(name string, register func(*grpc.Server)) (*grpc.ClientConn, error) {
	sock := filepath.Join(d.dir, name+".sock")
	srv := rpc.NewServer("demo", nil)
	register(srv)
	lis, err := rpc.Listen("unix://" + sock)
	if err != nil {
		return nil, err
	}
	go func() { _ = srv.Serve(lis) }()
	d.say("%s: CSI over gRPC on unix://%s", name, sock)
	return grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// bounded runs one CSI call with its own deadline.
func bounded(ctx context.Context, call func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	return call(ctx)
}

// watcher prints what the kernel and the agent say about one volume, each
// only when it changes.
type watcher struct {
	d       *demo
	id, nqn string
	kernel  string
	agent   heal.Health
}

// watch polls every half second for d or until done holds, and reports
// whether done held.
func (w *watcher) watch(d time.Duration, done func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if k := kernelState(w.nqn); k != w.kernel {
			w.kernel = k
			w.d.say("sysfs:  %s", k)
		}
		if h, _ := w.d.loop.Health(w.id); h.State != w.agent.State || h.LastCause != w.agent.LastCause {
			w.agent = h
			note := ""
			if h.State != heal.StateLive && h.LastCause != "" {
				note = fmt.Sprintf(", cause %q", h.LastCause)
			}
			w.d.say("agent:  %s since %s%s", h.State, w.d.at(h.Since), note)
		}
		if done() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// waitAgent waits until the health model reports the volume in state s,
// narrating the states it passes through.
func (d *demo) waitAgent(id string, s heal.State, timeout time.Duration) error {
	var last heal.State
	deadline := time.Now().Add(timeout)
	for {
		h, ok := d.loop.Health(id)
		if ok && h.State != last {
			last = h.State
			d.say("agent:  %s since %s (controller %s, device %s)", h.State, d.at(h.Since), h.Controller, h.Device)
		}
		if last == s {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the agent did not report volume %s %s within %v (last: %q)", id, s, timeout, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// kernelState is what sysfs says about the subsystem's controllers.
func kernelState(nqn string) string {
	cs, err := sysTree.ControllersOf(nqn)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "reading sysfs: " + err.Error()
	}
	if len(cs) == 0 {
		return "no controller of the subsystem"
	}
	parts := make([]string, 0, len(cs))
	for _, c := range cs {
		parts = append(parts, "controller "+c.Name+" "+c.State)
	}
	return strings.Join(parts, ", ")
}

func ctrlAttr(ctrl, attr string) string {
	b, err := os.ReadFile(filepath.Join("/sys/class/nvme", ctrl, attr))
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// checkGone waits for the kernel to drop the controller, then looks for
// anything else the volume could have left behind.
func (d *demo) checkGone(id, nqn string) error {
	deadline := time.Now().Add(30 * time.Second)
	for kernelState(nqn) != "no controller of the subsystem" {
		if time.Now().After(deadline) {
			return fmt.Errorf("still connected after NodeUnstage: %s", kernelState(nqn))
		}
		time.Sleep(100 * time.Millisecond)
	}
	ms, err := mount.List()
	if err != nil {
		return err
	}
	for _, m := range ms {
		if strings.HasPrefix(m.MountPoint, d.dir+"/") {
			return fmt.Errorf("mount left behind: %s", m.MountPoint)
		}
	}
	for _, disk := range d.sim.Disks() {
		if disk.NQN == nqn {
			return fmt.Errorf("disk left on the RDS: %+v", disk)
		}
	}
	files, _ := filepath.Glob(filepath.Join(d.dir, "rds", "files", "storage-pool", "demo", id+"*"))
	if len(files) != 0 {
		return fmt.Errorf("backing files left on the RDS: %v", files)
	}
	if s := d.loop.Snapshot(); len(s) != 0 {
		return fmt.Errorf("the agent still tracks %v", s)
	}
	return nil
}

func writeRandom(path string, size int) ([32]byte, error) {
	b := make([]byte, size)
	if _, err := rand.Read(b); err != nil {
		return [32]byte{}, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return [32]byte{}, err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return sha256.Sum256(b), err
}

// readBack drops the page cache first: data the cache still holds would
// prove nothing about the NVMe path.
func readBack(path string) ([32]byte, error) {
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200); err != nil {
		return [32]byte{}, err
	}
	b, err := os.ReadFile(path)
	return sha256.Sum256(b), err
}

// quietConsole keeps kernel messages off the console, where they would
// split the narration's lines; watchKernel narrates the relevant ones. The
// driver's own logs go to klogFile.
func quietConsole() error {
	if err := os.WriteFile("/proc/sys/kernel/printk", []byte("1"), 0o644); err != nil {
		return fmt.Errorf("lowering the console log level: %w", err)
	}
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	for k, v := range map[string]string{"logtostderr": "false", "log_file": klogFile, "stderrthreshold": "FATAL", "v": "2"} {
		if err := fs.Set(k, v); err != nil {
			return err
		}
	}
	return nil
}

// watchKernel narrates the NVMe host driver's controller messages (connect,
// reconnect attempts, the outcome) from /dev/kmsg as they are logged.
// Per-I/O messages are left out: mkfs alone logs dozens (nvmet's file
// backend has no WRITE_ZEROES).
func (d *demo) watchKernel() {
	f, err := os.Open("/dev/kmsg")
	if err != nil {
		d.say("(kernel messages unavailable: %v)", err)
		return
	}
	// Only what is logged from now on: the boot's messages are not the
	// story.
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		d.say("(kernel messages unavailable: %v)", err)
		_ = f.Close()
		return
	}
	go func() {
		defer func() { _ = f.Close() }()
		buf := make([]byte, 8192)
		for {
			// Each read of /dev/kmsg returns exactly one record.
			n, err := f.Read(buf)
			if err != nil {
				if errors.Is(err, unix.EPIPE) {
					continue // records were overwritten before we read them
				}
				return
			}
			_, msg, ok := strings.Cut(string(buf[:n]), ";")
			if !ok {
				continue
			}
			msg, _, _ = strings.Cut(msg, "\n")
			if strings.HasPrefix(msg, "nvme nvme") {
				d.say("kernel: %s", msg)
			}
		}
	}()
}

// mountedFrom is the device number the filesystem at dir is mounted from.
func mountedFrom(dir string) (sysfs.DevT, error) {
	ms, err := mount.List()
	if err != nil {
		return sysfs.DevT{}, err
	}
	for _, m := range ms {
		if m.MountPoint == dir {
			return sysfs.DevT{Major: m.Dev.Major, Minor: m.Dev.Minor}, nil
		}
	}
	return sysfs.DevT{}, fmt.Errorf("nothing is mounted at %s", dir)
}

// writer is the second act's workload: one small file after another, each
// fsynced, as a database commits.
type writer struct {
	dir  string
	quit chan struct{}
	done chan struct{}

	mu      sync.Mutex
	n       int
	errs    []string
	longest time.Duration
}

func startWriter(dir string) *writer {
	w := &writer{dir: dir, quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for i := 0; ; i++ {
			select {
			case <-w.quit:
				return
			default:
			}
			start := time.Now()
			err := workload.WriteSynced(w.path(i), w.content(i))
			w.mu.Lock()
			w.n++
			w.longest = max(w.longest, time.Since(start))
			if err != nil {
				w.errs = append(w.errs, err.Error())
			}
			w.mu.Unlock()
			time.Sleep(50 * time.Millisecond)
		}
	}()
	return w
}

func (w *writer) path(i int) string { return filepath.Join(w.dir, fmt.Sprintf("commit-%06d", i)) }

func (w *writer) content(i int) []byte {
	return []byte(fmt.Sprintf("commit %06d %s\n", i, strings.Repeat("x", i%113)))
}

func (w *writer) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

func (w *writer) errors() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.errs...)
}

func (w *writer) longestWrite() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.longest
}

func (w *writer) waitWrites(n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for w.count() < n {
		if time.Now().After(deadline) {
			return fmt.Errorf("the writer made %d writes in %v, want %d", w.count(), timeout, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

func (w *writer) stop() {
	close(w.quit)
	<-w.done
}

// verify reads every file back after dropping the page cache.
func (w *writer) verify() error {
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200); err != nil {
		return err
	}
	for i := range w.count() {
		got, err := os.ReadFile(w.path(i))
		if err != nil {
			return err
		}
		if string(got) != string(w.content(i)) {
			return fmt.Errorf("%s reads %q, the writer wrote %q", w.path(i), got, w.content(i))
		}
	}
	return nil
}
