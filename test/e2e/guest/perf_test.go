//go:build e2eguest

package guest

// The node benchmarks of `make bench`,
// measured against the real kernel. They run only when the host's
// benchmark (test/bench/node) asks for them with -rds.perf; the VM tests
// skip them. Every sample is printed on a line of its own,
//
//	RDS-CSI-PERF <name> <value> <unit>
//
// which the host turns into benchmark metrics. They check only what makes a
// sample valid (the fault happened, the volume came back, no write failed);
// they never assert a time.

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/rds-csi/rds-csi/agent/heal"
	"github.com/rds-csi/rds-csi/kernel/fabrics"
	"github.com/rds-csi/rds-csi/kernel/uevent"
	"github.com/rds-csi/rds-csi/test/workload"
	"github.com/rds-csi/rds-csi/volume"
)

var (
	perfOn      = flag.Bool("rds.perf", false, "run the node benchmarks (make bench) instead of skipping them")
	perfAgent   = flag.String("rds.agent", "/rds-csi-agent", "the agent binary the footprint benchmark runs")
	perfRounds  = flag.Int("rds.perf.rounds", 5, "how many samples each latency benchmark takes")
	perfVolumes = flag.Int("rds.perf.volumes", 100, "how many volumes the footprint benchmark stages")
)

// perfMarker starts every sample line.
const perfMarker = "RDS-CSI-PERF "

func perfOnly(t *testing.T) {
	t.Helper()
	if !*perfOn {
		t.Skip("a benchmark: make bench runs it (-rds.perf)")
	}
}

func sample(name string, v float64, unit string) {
	fmt.Printf("%s%s %.3f %s\n", perfMarker, name, v, unit)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// TestPerfCalibration times a fixed CPU workload in the guest; the host
// times the same one, and the ratio is how much slower the emulated CPU is.
func TestPerfCalibration(t *testing.T) {
	perfOnly(t)
	for range 3 {
		sample("calibrate", ms(workload.Calibrate()), "ms")
	}
}

// liveController is the volume's one live controller.
func liveController(t *testing.T, v *vol) string {
	t.Helper()
	var name string
	waitFor(t, "a live controller of "+v.nqn, healDeadline, func() bool {
		cs, err := sysTree.ControllersOf(v.nqn)
		if err != nil {
			return false
		}
		for _, c := range cs {
			if c.State == "live" {
				name = c.Name
				return true
			}
		}
		return false
	})
	return name
}

// leavesLive returns when the kernel's state of a controller stopped
// reading live, polled every 2 ms: the moment a state-only change
// happened, which no uevent tells.
func leavesLive(ctrl string, d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	go func() {
		deadline := time.Now().Add(d)
		for time.Now().Before(deadline) {
			if s, err := sysTree.ControllerState(ctrl); err != nil || s != "live" {
				ch <- time.Now()
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
		close(ch)
	}()
	return ch
}

// TestPerfDetection: how long the agent takes to know. A
// state-only change (the target's port goes away; the kernel starts
// reconnecting and sends no uevent) is seen by the scan, at production's
// interval of 1 s: measured from when the kernel's state left live (polled
// every 2 ms). A uevent-visible change (the controller is deleted) is seen
// from its uevents: measured from when another listener received the
// first remove uevent, and from the delete request (which includes
// the kernel's own teardown). Each lost volume is healed again, which is
// reported too: a repair with the target answering all along.
func TestPerfDetection(t *testing.T) {
	perfOnly(t)
	h := newHealFixture(t, healOptions{scanInterval: time.Second})
	a := h.agent
	mon, err := uevent.Start(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	v := h.create("perf-detect", "block", map[string]string{volume.KeyCtrlLossTmo: "-1", volume.KeyReconnectDelay: "1"})
	h.stageAndPublish(t, v)
	port := portOf(t, v)
	for range *perfRounds {
		ctrl := liveController(t, v)
		left := leavesLive(ctrl, 30*time.Second)
		since := time.Now()
		must(t, "PortDown", h.exp.PortDown(port))
		kernelAt, ok := <-left
		if !ok {
			t.Fatalf("controller %s still reads live 30 s after its port went away", ctrl)
		}
		tr := a.nextTransition(t, v, since, 30*time.Second, heal.StateReconnecting)
		sample("detect_state_change", ms(tr.at.Sub(kernelAt)), "ms")
		must(t, "PortUp", h.exp.PortUp(port))
		a.nextTransition(t, v, tr.at, healDeadline, heal.StateLive)

		ctrl = liveController(t, v)
		// The kernel first removes the controller's disks, then the
		// controller: the first of these uevents is when the change
		// became visible.
		removed := mon.Subscribe(func(e uevent.Event) bool {
			return e.Action == "remove" && (e.Subsystem == "nvme" || e.Subsystem == "block")
		})
		since = time.Now()
		must(t, "deleting "+ctrl, sysTree.DeleteController(ctrl))
		var ueventAt time.Time
		select {
		case <-removed.Events():
			ueventAt = time.Now()
		case <-time.After(30 * time.Second):
			t.Fatalf("no remove uevent within 30 s of deleting %s", ctrl)
		}
		removed.Cancel()
		first := a.nextTransition(t, v, since, 30*time.Second, heal.StateReconnecting, heal.StateLost, heal.StateUnknown)
		lost := a.nextTransition(t, v, since, 30*time.Second, heal.StateLost)
		t.Logf("deleted %s: first remove uevent after %v; the agent saw %s after %v, lost after %v", ctrl,
			ueventAt.Sub(since), first.to, first.at.Sub(since), lost.at.Sub(since))
		// The agent's own listener often hears the kernel before this
		// test's does, so its first reaction can precede ueventAt: only
		// the verdict lost is measured from the uevent.
		sample("detect_first_from_delete", ms(first.at.Sub(since)), "ms")
		sample("detect_lost_from_delete", ms(lost.at.Sub(since)), "ms")
		sample("detect_lost_from_uevent", ms(lost.at.Sub(ueventAt)), "ms")
		live := a.nextTransition(t, v, lost.at, healDeadline, heal.StateLive)
		sample("heal_deleted_controller", ms(live.at.Sub(lost.at)), "ms")
	}
	a.assertNeverUnknown(t, v.id)
	h.teardown(t, v)
}

// TestPerfHeal: from the target answering again to the consumer
// writing again, with an O_DIRECT writer on the published front all along.
// "controller loss": the port is down until the kernel gives the
// controller up (ctrl_loss_tmo 2 s) and the agent reports it lost; the
// agent reconnects. "short outage": the port comes back as soon as the
// agent reports the volume reconnecting; the kernel reconnects by itself
// (reconnect_delay 1 s).
func TestPerfHeal(t *testing.T) {
	perfOnly(t)
	for _, c := range []struct {
		name, tmo string
		loss      bool
	}{
		{"controller loss", "2", true},
		{"short outage", "30", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHealFixture(t, healOptions{scanInterval: time.Second})
			a := h.agent
			v := h.create("perf-heal", "block", map[string]string{volume.KeyCtrlLossTmo: c.tmo, volume.KeyReconnectDelay: "1"})
			h.stageAndPublish(t, v)
			port := portOf(t, v)
			blocks := int(blockSize(t, v.target) / rawBlock)
			prefix := "heal_outage"
			if c.loss {
				prefix = "heal_loss"
			}
			for range *perfRounds {
				w := startWriter("raw", func(w *writer) { w.rawLoop(v.target, blocks) })
				t.Cleanup(w.requestStop)
				waitFor(t, "the writer is writing", 60*time.Second, func() bool { return w.count() >= 5 })
				since := time.Now()
				must(t, "PortDown", h.exp.PortDown(port))
				if c.loss {
					waitControllersGone(t, v, healDeadline)
					a.nextTransition(t, v, since, 30*time.Second, heal.StateLost, heal.StateHealing)
				} else {
					a.nextTransition(t, v, since, 30*time.Second, heal.StateReconnecting)
				}
				must(t, "PortUp", h.exp.PortUp(port))
				back := time.Now()
				live := a.nextTransition(t, v, back, healDeadline, heal.StateLive)
				var wrote time.Time
				waitFor(t, "the writer writes again", 60*time.Second, func() bool {
					var ok bool
					wrote, ok = w.firstDoneAfter(back)
					return ok
				})
				sample(prefix+"_live", ms(live.at.Sub(back)), "ms")
				sample(prefix+"_writing", ms(wrote.Sub(back)), "ms")
				w.requestStop()
				if !w.waitStopped(60 * time.Second) {
					t.Fatal("the writer does not stop")
				}
				if errs := w.errors(); len(errs) > 0 {
					t.Fatalf("the writer saw %d I/O errors, first %q: the sample is not a heal", len(errs), errs[0])
				}
			}
			h.teardown(t, v)
		})
	}
}

// TestPerfStage: NodeStage against the kernel's own connect to
// the same subsystem (the /dev/nvme-fabrics write until the namespace's
// device node exists), round by round. Block staging adds the record, the
// front and the in-use bookkeeping; ext4 staging of a formatted volume
// adds the mount.
func TestPerfStage(t *testing.T) {
	perfOnly(t)
	h := newHealFixture(t, healOptions{scanInterval: time.Second})
	a := h.agent
	blk := h.create("perf-stage-block", "block", nil)
	ext := h.create("perf-stage-ext4", "ext4", nil)
	vc, err := volume.ParseContext(blk.context)
	if err != nil {
		t.Fatal(err)
	}
	opts := fabrics.Options{
		Transport: "tcp", TrAddr: vc.Address, TrSvcID: strconv.Itoa(vc.Port), NQN: blk.nqn,
		HostNQN: volume.HostNQN(nodeID), HostID: volume.HostID(nodeID),
		CtrlLossTmo: vc.Connect.CtrlLossTmo, ReconnectDelay: vc.Connect.ReconnectDelay,
		KeepAliveTmo: vc.Connect.KeepAliveTmo, FastIOFailTmo: vc.Connect.FastIOFailTmo,
	}
	fab := &fabrics.Fabrics{Device: fabrics.DefaultDevice, Sysfs: sysTree}

	// The first stage of the ext4 volume formats it; that is mkfs's time,
	// reported on its own.
	start := time.Now()
	must(t, "NodeStage (formats)", h.stage(ext))
	sample("stage_ext4_first_with_mkfs", ms(time.Since(start)), "ms")
	a.waitState(t, ext, 30*time.Second, heal.StateLive)
	must(t, "NodeUnstage", h.unstage(ext))

	for range *perfRounds {
		ctx, cancel := context.WithTimeout(t.Context(), rpcTimeout)
		start := time.Now()
		c, err := fab.Connect(ctx, opts)
		if err != nil {
			cancel()
			t.Fatalf("kernel connect: %v", err)
		}
		// Polled every millisecond: waitFor's 100 ms would be the
		// measurement.
		for {
			if ns, err := sysTree.ResolveNamespace(blk.nqn, 1); err == nil {
				if _, err := os.Stat(filepath.Join("/dev", ns.Name)); err == nil {
					break
				}
			}
			if time.Since(start) > rpcTimeout {
				t.Fatalf("no device node of %s %v after the connect", blk.nqn, rpcTimeout)
			}
			time.Sleep(time.Millisecond)
		}
		connect := time.Since(start)
		must(t, "disconnect", fab.Disconnect(ctx, c.Controller))
		cancel()
		waitControllersGone(t, blk, healDeadline)

		for _, v := range []*vol{blk, ext} {
			start = time.Now()
			must(t, "NodeStage "+v.id, h.stage(v))
			stage := time.Since(start)
			a.waitState(t, v, 30*time.Second, heal.StateLive)
			start = time.Now()
			must(t, "NodeUnstage "+v.id, h.unstage(v))
			unstage := time.Since(start)
			kind := "block"
			if v == ext {
				kind = "ext4"
			}
			sample("stage_"+kind, ms(stage), "ms")
			sample("stage_"+kind+"_over_connect", ms(stage-connect), "ms")
			sample("unstage_"+kind, ms(unstage), "ms")
		}
		sample("kernel_connect", ms(connect), "ms")
	}
	for _, v := range []*vol{blk, ext} {
		must(t, "DeleteVolume "+v.id, h.delete(v))
		h.assertGone(t, v)
	}
}

// TestPerfAgentFootprint: the real agent binary, as the DaemonSet
// runs it, idle with no volume and then with -rds.perf.volumes staged block
// volumes: resident memory and CPU time over an idle minute (the scan reads
// every managed controller's state each second).
func TestPerfAgentFootprint(t *testing.T) {
	perfOnly(t)
	h := &healFixture{fixture: newFixture(t)}
	dir := t.TempDir()
	h.kubelet = filepath.Join(dir, "kubelet")
	sock := filepath.Join(dir, "agent.sock")
	logPath := filepath.Join(dir, "agent.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(*perfAgent, "--endpoint=unix://"+sock, "--node-id="+nodeID, "--kubelet-dir="+h.kubelet,
		"--status-socket="+filepath.Join(dir, "status.sock"), "--metrics-address="+strings.TrimSuffix(strings.TrimPrefix(agentMetricsURL, "http://"), "/metrics"), "--events=false")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	must(t, "starting "+*perfAgent, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopAgent := func() error {
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			return err
		}
		select {
		case err := <-exited:
			return err
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
			return errors.New("the agent did not stop within 60 s of SIGTERM")
		}
	}
	t.Cleanup(func() {
		_ = stopAgent()
		_ = logFile.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				t.Logf("the agent's log:\n%s", tail(string(b), 60))
			}
		}
	})
	waitFor(t, "the agent's CSI socket", 60*time.Second, func() bool {
		_, err := os.Stat(sock)
		return err == nil
	})
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	h.node = csi.NewNodeClient(conn)
	pid := cmd.Process.Pid

	time.Sleep(10 * time.Second)
	footprint(t, pid, "0_volumes", 30*time.Second)

	vols := make([]*vol, *perfVolumes)
	start := time.Now()
	for i := range vols {
		vols[i] = h.create(fmt.Sprintf("perf-%03d", i), "block", nil)
	}
	sample("create_volumes_total", time.Since(start).Seconds(), "s")
	start = time.Now()
	for _, v := range vols {
		must(t, "NodeStage "+v.id, h.stage(v))
	}
	sample("stage_volumes_total", time.Since(start).Seconds(), "s")
	if n := managedControllers(t); n != len(vols) {
		t.Fatalf("%d managed controllers after staging %d volumes", n, len(vols))
	}
	time.Sleep(15 * time.Second)
	footprint(t, pid, fmt.Sprintf("%d_volumes", len(vols)), 60*time.Second)

	start = time.Now()
	for _, v := range vols {
		must(t, "NodeUnstage "+v.id, h.unstage(v))
	}
	sample("unstage_volumes_total", time.Since(start).Seconds(), "s")
	must(t, "stopping the agent", stopAgent())
	for _, v := range vols {
		must(t, "DeleteVolume "+v.id, h.delete(v))
	}
	if n := managedControllers(t); n != 0 {
		t.Errorf("%d managed controllers left after unstaging every volume", n)
	}
}

// footprint samples the agent's resident memory and the CPU time it used
// over window.
func footprint(t *testing.T, pid int, label string, window time.Duration) {
	t.Helper()
	before := cpuTicks(t, pid)
	start := time.Now()
	time.Sleep(window)
	used := cpuTicks(t, pid) - before
	elapsed := time.Since(start)
	// The kernel counts CPU time in USER_HZ ticks, 100 per second on
	// every architecture Linux exports to user space.
	const userHZ = 100
	sample("agent_cpu_"+label, 100*float64(used)/userHZ/elapsed.Seconds(), "%cpu")
	status := procStatus(t, pid)
	sample("agent_rss_"+label, float64(status["VmRSS"])/1024, "MiB")
	sample("agent_rss_peak_"+label, float64(status["VmHWM"])/1024, "MiB")
	// Anonymous memory is what the agent allocated; file pages are the
	// parts of its executable it touched, which the kernel can drop.
	sample("agent_rss_anon_"+label, float64(status["RssAnon"])/1024, "MiB")
	sample("agent_rss_file_"+label, float64(status["RssFile"])/1024, "MiB")
	// The guest runs the agent from its initramfs, whose pages are shared
	// memory: there the executable shows here instead of as file pages.
	sample("agent_rss_shmem_"+label, float64(status["RssShmem"])/1024, "MiB")
	sample("agent_threads_"+label, float64(status["Threads"]), "threads")
	sample("agent_go_heap_inuse_"+label, agentMetric(t, "go_memstats_heap_inuse_bytes")/(1<<20), "MiB")
	sample("agent_goroutines_"+label, agentMetric(t, "go_goroutines"), "goroutines")
}

// agentMetricsURL is where the footprint benchmark's agent serves metrics.
const agentMetricsURL = "http://127.0.0.1:9810/metrics"

// agentMetric reads one unlabelled gauge from the agent's /metrics.
func agentMetric(t *testing.T, name string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, agentMetricsURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scraping the agent: %v", err)
	}
	defer func() { _ = resp.Body.Close() }()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == name {
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				t.Fatalf("%s: %v", sc.Text(), err)
			}
			return v
		}
	}
	t.Fatalf("the agent's metrics have no %s (%v)", name, sc.Err())
	return 0
}

// cpuTicks is utime+stime of a process from /proc/<pid>/stat.
func cpuTicks(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The command name may hold spaces; the fields after its ")" do not.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	// fields[0] is the state (field 3); utime and stime are fields 14, 15.
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatalf("/proc/%d/stat: %v", pid, err)
	}
	return utime + stime
}

// procStatus reads the numeric fields of /proc/<pid>/status (kB for
// memory).
func procStatus(t *testing.T, pid int) map[string]int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	out := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		if fs := strings.Fields(val); len(fs) > 0 {
			if n, err := strconv.ParseInt(fs[0], 10, 64); err == nil {
				out[key] = n
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem", "Threads"} {
		if _, ok := out[k]; !ok {
			t.Fatalf("/proc/%d/status has no %s", pid, k)
		}
	}
	return out
}

// managedControllers counts the controllers of managed subsystems.
func managedControllers(t *testing.T) int {
	t.Helper()
	cs, err := sysTree.Controllers()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range cs {
		if strings.HasPrefix(c.SubsysNQN, volume.DefaultNQNPrefix) {
			n++
		}
	}
	return n
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
