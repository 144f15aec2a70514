//go:build e2eguest

package guest

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/rds-csi/rds-csi/agent"
	"github.com/rds-csi/rds-csi/agent/heal"
	"github.com/rds-csi/rds-csi/kernel/sysfs"
	"github.com/rds-csi/rds-csi/kernel/uevent"
	"github.com/rds-csi/rds-csi/rpc"
	"github.com/rds-csi/rds-csi/volume"
)

const (
	// healScanInterval is shorter than production's second so that state
	// changes the kernel announces by no uevent are seen quickly even
	// under TCG.
	healScanInterval = 200 * time.Millisecond
	// healOrphanGrace is long enough for a NodeStage under TCG to reach
	// Track (the Hold covers it anyway) and short enough to wait out.
	healOrphanGrace = 3 * time.Second
	// healDeadline bounds what waits on the kernel's timers and the
	// repair's backoff (up to 15 s between attempts).
	healDeadline = 90 * time.Second
	// defaultPort is where the controller exports unless told otherwise.
	defaultPort = 4420
)

// healOptions vary the healing agent. The zero value is the production
// wiring.
type healOptions struct {
	// noRepair leaves the Repairer out: lost volumes stay lost. It exists
	// to prove that the scenarios fail when healing does not happen.
	noRepair bool
	// noFront runs the agent with --dm-multipath=false: consumers get the
	// namespace itself.
	noFront bool
	// scanInterval replaces healScanInterval; the benchmarks measure with
	// production's default.
	scanInterval time.Duration
}

// healFixture is a fixture whose node agent is wired as cmd/rds-csi-agent
// wires it: the healing loop with the node as Repairer, the node tracking
// through it, orphan removal through the node's in-use check, and volume
// records read back from a kubelet-like directory. Staging and target paths
// follow the kubelet's layout, because that is where Resume looks for
// records after a restart.
type healFixture struct {
	*fixture
	opts    healOptions
	kubelet string
	agent   *healAgent
}

// newHealFixture starts the usual fixture, then a healing agent that
// replaces its node service; the fixture's own agent stays idle. The
// healing agent is stopped before the fixture sweeps, so that no repair
// reconnects what the sweep deletes.
func newHealFixture(t *testing.T, opts healOptions) *healFixture {
	t.Helper()
	h := &healFixture{fixture: newFixture(t), opts: opts}
	h.kubelet = filepath.Join(h.dir, "kubelet")
	h.startAgent()
	return h
}

// healAgent is one run of the agent process: a restart is a new one.
type healAgent struct {
	t        *testing.T
	node     *agent.Node
	loop     *heal.Loop
	reg      *prometheus.Registry
	client   csi.NodeClient
	repairer *waitedRepairer
	// resumed is what Resume found at start.
	resumed []agent.StagedVolume

	mu          sync.Mutex
	transitions []transition

	stopOnce sync.Once
	stopFn   func()
}

// transition is one health change the loop reported.
type transition struct {
	volumeID string
	from, to heal.State
	cause    string
	// device is the namespace's major:minor as the loop last saw it.
	device string
	at     time.Time
}

// startAgent starts a healing agent as the agent binary does at start:
// uevents first, then the node and the loop, Resume before Run, and the
// CSI server last. It becomes the fixture's node service.
func (h *healFixture) startAgent() *healAgent {
	t := h.t
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	events, err := uevent.Start(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	nopts := agent.Options{Version: "e2e", NodeID: nodeID}
	if err := nopts.Validate(); err != nil {
		cancel()
		t.Fatal(err)
	}
	attacher, nvme := nodeAttacher(events, !h.opts.noFront)
	a := &healAgent{t: t, reg: rpc.NewRegistry()}
	a.node = agent.New(nopts, attacher, agent.HostMounter{}, agent.NewMetrics(a.reg))
	cfg := heal.Config{
		Sysfs:            sysTree,
		Events:           events,
		ManagedNQNPrefix: nopts.ManagedNQNPrefix,
		ScanInterval:     cmp.Or(h.opts.scanInterval, healScanInterval),
		OrphanGrace:      healOrphanGrace,
		Links:            heal.NetlinkLinks{},
		Disconnect:       a.node.OrphanDisconnect(sysTree, nvme.Fabrics.Disconnect),
		Metrics:          heal.NewMetrics(a.reg),
		Notifier:         heal.Notifiers{a, a.node},
	}
	if !h.opts.noRepair {
		a.repairer = &waitedRepairer{next: a.node}
		cfg.Repairer = a.repairer
	}
	a.loop, err = heal.New(cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	a.node.SetTracker(a.loop)
	if a.resumed, err = a.node.Resume(h.kubelet); err != nil {
		cancel()
		t.Fatalf("resuming from the records under %s: %v", h.kubelet, err)
	}
	if err := a.node.UndoShutdown(ctx, a.resumed); err != nil {
		cancel()
		t.Fatalf("undoing a shutdown mode: %v", err)
	}
	loopCtx, stopLoop := context.WithCancel(ctx)
	loopDone := make(chan error, 1)
	go func() { loopDone <- a.loop.Run(loopCtx) }()

	sock := filepath.Join(t.TempDir(), "heal-agent.sock")
	srv := rpc.NewServer("e2e", nil)
	csi.RegisterIdentityServer(srv, a.node)
	csi.RegisterNodeServer(srv, a.node)
	lis, err := rpc.Listen("unix://" + sock)
	if err != nil {
		stopLoop()
		cancel()
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		srv.Stop()
		stopLoop()
		cancel()
		t.Fatal(err)
	}
	a.client = csi.NewNodeClient(conn)

	a.stopFn = func() {
		stopLoop()
		if err := <-loopDone; err != nil {
			t.Errorf("healing loop: %v", err)
		}
		// Run cancels the repairs it started before it returns; waiting for
		// them keeps a late reconnect from outliving this agent.
		a.repairer.stop()
		srv.Stop()
		_ = conn.Close()
		cancel()
	}
	t.Cleanup(a.stop)
	h.agent = a
	h.node = a.client
	return a
}

// stop ends the agent as a killed process would end: the loop and the CSI
// server stop, nothing is disconnected or unmounted.
func (a *healAgent) stop() { a.stopOnce.Do(a.stopFn) }

// Notify records the loop's transitions (the agent is the loop's Notifier).
func (a *healAgent) Notify(tr heal.Transition) {
	a.mu.Lock()
	defer a.mu.Unlock()
	hl := tr.Health
	a.transitions = append(a.transitions, transition{volumeID: hl.VolumeID, from: tr.From, to: hl.State, cause: hl.LastCause, device: hl.Device, at: time.Now()})
}

// statesOf lists the states a volume entered, in order.
func (a *healAgent) statesOf(volumeID string) []heal.State {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []heal.State
	for _, tr := range a.transitions {
		if tr.volumeID == volumeID {
			out = append(out, tr.to)
		}
	}
	return out
}

// assertSequence fails unless the volume entered the states of want in
// that order (others may come between).
func (a *healAgent) assertSequence(t *testing.T, volumeID string, want ...heal.State) {
	t.Helper()
	got := a.statesOf(volumeID)
	i := 0
	for _, s := range got {
		if i < len(want) && s == want[i] {
			i++
		}
	}
	if i < len(want) {
		t.Fatalf("volume %s went through %v; want %v in that order", volumeID, got, want)
	}
	t.Logf("volume %s went through %v", volumeID, got)
}

// assertNeverUnknown fails if the volume ever read unknown after it was
// first judged: a controller being deleted must read as going or gone,
// never as sysfs that cannot be read.
func (a *healAgent) assertNeverUnknown(t *testing.T, volumeID string) {
	t.Helper()
	if got := a.statesOf(volumeID); slices.Contains(got, heal.StateUnknown) {
		t.Errorf("volume %s read unknown on the way: %v", volumeID, got)
	}
}

// waitTransition waits until the loop reported the volume entering state
// and returns that report. Unlike waitState it cannot miss a state the
// volume left again before a poll looked.
func (a *healAgent) waitTransition(t *testing.T, v *vol, d time.Duration, state heal.State) transition {
	t.Helper()
	return a.nextTransition(t, v, time.Time{}, d, state)
}

// nextTransition waits for the first report, at or after since, of the
// volume entering one of states.
func (a *healAgent) nextTransition(t *testing.T, v *vol, since time.Time, d time.Duration, states ...heal.State) transition {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		a.mu.Lock()
		for _, tr := range a.transitions {
			if tr.volumeID == v.id && !tr.at.Before(since) && slices.Contains(states, tr.to) {
				a.mu.Unlock()
				return tr
			}
		}
		a.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("volume %s did not become %v within %v; states so far %v", v.id, states, d, a.statesOf(v.id))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitState waits until the loop reports the volume in one of states and
// returns its health then.
func (a *healAgent) waitState(t *testing.T, v *vol, d time.Duration, states ...heal.State) heal.Health {
	t.Helper()
	var last heal.Health
	start := time.Now()
	deadline := start.Add(d)
	for {
		hl, ok := a.loop.Health(v.id)
		if ok {
			last = hl
			for _, s := range states {
				if hl.State == s {
					t.Logf("volume %s is %s after %v (controller %s, device %s, cause %q)", v.id, hl.State, time.Since(start).Round(time.Millisecond), hl.Controller, hl.Device, hl.LastCause)
					return hl
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("volume %s not %v after %v; health now %+v (tracked %v), states so far %v", v.id, states, d, last, ok, a.statesOf(v.id))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// counter reads one series of a counter from the agent's registry: what a
// Prometheus scrape of the agent would show.
func (a *healAgent) counter(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	fams, err := a.reg.Gather()
	if err != nil {
		t.Fatalf("gathering metrics: %v", err)
	}
	for _, fam := range fams {
		if fam.GetName() != name {
			continue
		}
	series:
		for _, m := range fam.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue series
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func (a *healAgent) volumeCounter(t *testing.T, name string, v *vol) float64 {
	t.Helper()
	return a.counter(t, name, map[string]string{"volume": v.id})
}

// statusRow returns the status command's table row of a volume, split
// into its columns (VOLUME NQN CONTROLLER DEVICE STATE ...).
func (a *healAgent) statusRow(t *testing.T, v *vol) []string {
	t.Helper()
	rec := httptest.NewRecorder()
	heal.StatusHandler(a.loop).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("status handler answered %d: %s", rec.Code, rec.Body)
	}
	table := rec.Body.String()
	for line := range strings.SplitSeq(table, "\n") {
		if cols := strings.Fields(line); len(cols) > 4 && cols[0] == v.id {
			return cols
		}
	}
	t.Fatalf("volume %s is not in the status table:\n%s", v.id, table)
	return nil
}

// waitedRepairer hands repairs to the node and lets stop wait for those
// running: a repair left behind could connect a volume after the test's
// sweep deleted it.
type waitedRepairer struct {
	next    heal.Repairer
	mu      sync.Mutex
	stopped bool
	running sync.WaitGroup
}

func (r *waitedRepairer) Repair(ctx context.Context, v heal.Volume, h heal.Health) error {
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return errors.New("agent stopped")
	}
	r.running.Add(1)
	r.mu.Unlock()
	defer r.running.Done()
	return r.next.Repair(ctx, v, h)
}

func (r *waitedRepairer) stop() {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.stopped = true
	r.mu.Unlock()
	r.running.Wait()
}

// create provisions a volume with extra StorageClass parameters and gives
// it kubelet paths: filesystem volumes stage at
// plugins/kubernetes.io/csi/<driver>/<sha256 of the handle>/globalmount and
// publish into a pod's volumes directory, block volumes stage at
// plugins/kubernetes.io/csi/volumeDevices/staging/<pv> and publish at
// volumeDevices/publish/<pv>/<pod>.
func (h *healFixture) create(name, fsType string, params map[string]string) *vol {
	h.t.Helper()
	c := blockCap()
	if fsType != "block" {
		c = mountCap(fsType)
	}
	p := maps.Clone(storageClass)
	maps.Copy(p, params)
	resp, err := h.ctrl.CreateVolume(rpcCtx(h.t), &csi.CreateVolumeRequest{
		Name:               name,
		CapacityRange:      &csi.CapacityRange{RequiredBytes: 64 << 20},
		VolumeCapabilities: []*csi.VolumeCapability{c},
		Parameters:         p,
	})
	if err != nil {
		h.t.Fatalf("CreateVolume %s: %v", name, err)
	}
	rv := resp.GetVolume()
	id := rv.GetVolumeId()
	csiDir := filepath.Join(h.kubelet, "plugins", "kubernetes.io", "csi")
	const pod = "0b5e3c1a-pod-of-" // a pod UID stands here; the volume name keeps it unique
	v := &vol{id: id, nqn: rv.GetVolumeContext()[volume.KeyNQN], context: rv.GetVolumeContext(), cap: c}
	if fsType == "block" {
		v.staging = filepath.Join(csiDir, "volumeDevices", "staging", id)
		v.target = filepath.Join(csiDir, "volumeDevices", "publish", id, pod+name)
	} else {
		v.staging = filepath.Join(csiDir, "rds.csi.dev", fmt.Sprintf("%x", sha256.Sum256([]byte(id))), "globalmount")
		v.target = filepath.Join(h.kubelet, "pods", pod+name, "volumes", "kubernetes.io~csi", id, "mount")
	}
	return v
}

// stageAndPublish stages and publishes a volume and waits until the loop
// tracks it as live. The loop may judge a volume tracked before it has
// handled the uevent of the volume's new controller, find no controller
// and start a needless repair, which holds the volume's operation slot:
// publishing then fails with Aborted, which a CO retries. Publishing once
// the volume is live keeps the scenarios about what they test.
func (h *healFixture) stageAndPublish(t *testing.T, v *vol) {
	t.Helper()
	must(t, "NodeStage "+v.id, h.stage(v))
	h.agent.waitState(t, v, 30*time.Second, heal.StateLive)
	must(t, "NodePublish "+v.id, h.publish(v))
}

// teardown unpublishes, unstages and deletes a volume as a CO would, and
// checks nothing is left.
func (h *healFixture) teardown(t *testing.T, v *vol) {
	t.Helper()
	must(t, "NodeUnpublish "+v.id, retryAborted(func() error { return h.unpublish(v) }))
	must(t, "NodeUnstage "+v.id, retryAborted(func() error { return h.unstage(v) }))
	must(t, "DeleteVolume "+v.id, h.delete(v))
	h.assertGone(t, v)
}

// retryAborted retries a call for as long as it returns Aborted, as the
// kubelet does: right after a heal, the agent may still be reloading the
// volume's front when the test tears it down.
func retryAborted(call func() error) error {
	deadline := time.Now().Add(rpcTimeout)
	for {
		err := call()
		if status.Code(err) != codes.Aborted || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitControllersGone waits until the kernel has deleted every controller
// of the volume. Attributes of a controller being deleted read ENODEV, so
// a failed listing only means "not yet".
func waitControllersGone(t *testing.T, v *vol, d time.Duration) {
	t.Helper()
	waitFor(t, "the kernel deletes the controllers of "+v.nqn, d, func() bool {
		cs, err := sysTree.ControllersOf(v.nqn)
		return err == nil && len(cs) == 0 || errors.Is(err, fs.ErrNotExist)
	})
}

// portOf is the volume's NVMe/TCP port from its context.
func portOf(t *testing.T, v *vol) int {
	t.Helper()
	p, err := volume.ParsePort(v.context[volume.KeyPort])
	if err != nil {
		t.Fatalf("volume %s: %v", v.id, err)
	}
	return p
}

// rdevOf is the device number a path shows (a device node, or a bind mount
// of one).
func rdevOf(t *testing.T, path string) sysfs.DevT {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return sysfs.DevT{Major: unix.Major(st.Rdev), Minor: unix.Minor(st.Rdev)}
}

// volumeDev is the volume's namespace device number as sysfs shows it now.
func volumeDev(t *testing.T, v *vol) sysfs.DevT {
	t.Helper()
	ns, err := sysTree.ResolveNamespace(v.nqn, 1)
	if err != nil {
		t.Fatalf("resolving namespace 1 of %s: %v", v.nqn, err)
	}
	return ns.Dev
}

// write is a workload's write, run on its own goroutine: it may block for
// as long as the kernel queues I/O, and must not call t.Fatal.
type write struct {
	done chan error
}

// startWrite writes data at off of a block device, or into a file when
// off is negative, and fsyncs it, as a database commit would.
func startWrite(path string, off int64, data []byte) *write {
	w := &write{done: make(chan error, 1)}
	go func() {
		flags := os.O_WRONLY
		if off < 0 {
			flags |= os.O_CREATE | os.O_TRUNC
		}
		f, err := os.OpenFile(path, flags, 0o644)
		if err != nil {
			w.done <- err
			return
		}
		if off < 0 {
			_, err = f.Write(data)
		} else {
			_, err = f.WriteAt(data, off)
		}
		err = errors.Join(err, f.Sync(), f.Close())
		w.done <- err
	}()
	return w
}

// blocked fails unless the write is still waiting after d: the proof that
// the outage reached the workload and was not absorbed by a cache.
func (w *write) blocked(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case err := <-w.done:
		t.Fatalf("the write during the outage returned (%v) instead of waiting for the target", err)
	case <-time.After(d):
		t.Logf("the write during the outage is blocked, as it should be")
	}
}

// result waits for the write to finish.
func (w *write) result(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case err := <-w.done:
		return err
	case <-time.After(d):
		t.Fatalf("the write during the outage still has not returned after %v", d)
		return nil
	}
}

// kernelAtLeast reports whether the running kernel is major.minor or newer.
func kernelAtLeast(t *testing.T, major, minor int) bool {
	t.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	rel := unix.ByteSliceToString(u.Release[:])
	var ma, mi int
	if _, err := fmt.Sscanf(rel, "%d.%d", &ma, &mi); err != nil {
		t.Fatalf("kernel release %q: %v", rel, err)
	}
	return ma > major || (ma == major && mi >= minor)
}
