//go:build e2eguest

package guest

// The deterministic crash matrix. The real agent binary, built with the
// faultinject tag (test/e2e builds it and puts it into the initramfs), is
// run as a process with RDS_CSI_FAULT naming one point of internal/fault:
// when NodeStage or NodeUnstage reaches it, the agent and its children die
// by SIGKILL, as a node agent does when its container is killed or the
// node's OOM killer picks it. A new agent process is then started on what
// the dead one left behind, and the CO's next move must work out: the
// kubelet retrying NodeStage, or giving up and calling NodeUnstage, or
// nobody calling at all. Every point of fault.Points is covered; a point
// the agent never reaches fails its case.

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/rds-csi/rds-csi/agent"
	"github.com/rds-csi/rds-csi/internal/fault"
	"github.com/rds-csi/rds-csi/kernel/dm"
	"github.com/rds-csi/rds-csi/kernel/mount"
)

var crashAgent = flag.String("rds.crash.agent", "/rds-csi-agent-fault", "the agent binary built with -tags faultinject that the crash tests kill")

const (
	// crashExitTimeout bounds how long after the fatal call returned the
	// killed agent may take to be reaped: SIGKILL is immediate, the
	// emulated CPU is not.
	crashExitTimeout = 15 * time.Second
	// crashAliveTimeout is how long an agent that answered is given to die
	// all the same before the point is declared not reached.
	crashAliveTimeout = 2 * time.Second
	// crashOrphanGrace is the restarted agent's --orphan-grace in the
	// abandoned cases (production: 2 min).
	crashOrphanGrace = 3 * time.Second
	// crashAbandonBound bounds how long, beyond the grace, an abandoned
	// volume's controller and front may take to go.
	crashAbandonBound = 20 * time.Second
	// crashAgentStart bounds an agent's start until its CSI socket exists;
	// crashAgentStop its exit after SIGTERM.
	crashAgentStart = 60 * time.Second
	crashAgentStop  = 30 * time.Second
	// crashMetrics is where the agents serve /metrics (one at a time); the
	// footprint benchmark's agent uses 9810.
	crashMetrics = "127.0.0.1:9811"
	// faultMessage is what internal/fault prints before it kills.
	faultMessage = "FAULT: killed at "
)

// isUnstagePoint tells whether NodeUnstage passes the point; every other
// point is on NodeStage's path. A new point is covered by the case its name
// puts it in.
func isUnstagePoint(p string) bool { return strings.HasPrefix(p, "unstage-") }

func pointsWhere(keep func(string) bool) []string {
	var out []string
	for _, p := range fault.Points {
		if keep(p) {
			out = append(out, p)
		}
	}
	return out
}

// pointIndex is the point's place in fault.Points; the test fails if the
// point is not there.
func pointIndex(t *testing.T, p string) int {
	t.Helper()
	i := slices.Index(fault.Points, p)
	if i < 0 {
		t.Fatalf("point %s is not in fault.Points %v", p, fault.Points)
	}
	return i
}

// TestCrashStage: for every point on NodeStage's path, the agent dies there
// while staging a blank ext4 volume. A new agent then (i) stages it when
// the kubelet retries: one controller, one front with a live table over the
// namespace, one ext4 mount, at most one mkfs, a clean filesystem; its
// unstage leaves nothing. On a second volume crashed the same way, (ii) the
// kubelet gives up and unstages: nothing may be left; and for points from
// the format marker on, where the device may hold a half-made filesystem,
// a later stage (the pod scheduled back) must still succeed.
func TestCrashStage(t *testing.T) {
	for _, point := range pointsWhere(func(p string) bool { return !isUnstagePoint(p) }) {
		t.Run(point, func(t *testing.T) {
			b := newCrashBed(t)
			retry := b.volume(t, "s-"+point+"-r")
			gaveUp := b.volume(t, "s-"+point+"-u")

			t.Logf("(i) %s, then the kubelet retries NodeStage", point)
			b.crashStaging(t, point, retry)
			a := b.start(t, "", 0)
			must(t, "the retried NodeStage", b.retried(b.stage, retry))
			b.assertStaged(t, a, retry, 1)
			b.assertCleanFilesystem(t, retry)
			must(t, "NodeUnstage after the retry", b.retried(b.unstage, retry))
			b.assertNothingLeft(t, retry)
			a.stop(t)

			t.Logf("(ii) %s, then the kubelet gives up and calls NodeUnstage", point)
			b.crashStaging(t, point, gaveUp)
			a = b.start(t, "", 0)
			must(t, "NodeUnstage of the volume whose stage crashed", b.retried(b.unstage, gaveUp))
			b.assertNothingLeft(t, gaveUp)
			if pointIndex(t, point) >= pointIndex(t, fault.FormatMarked) {
				t.Logf("(ii) the volume is staged again later")
				must(t, "NodeStage after the unstage", b.retried(b.stage, gaveUp))
				b.assertStaged(t, a, gaveUp, 1)
				must(t, "NodeUnstage", b.retried(b.unstage, gaveUp))
				b.assertNothingLeft(t, gaveUp)
			}
			a.stop(t)
		})
	}
}

// TestCrashUnstage: for every point on NodeUnstage's path, a staged ext4
// volume holding a file is unstaged by an agent that dies there. A new
// agent must complete the kubelet's retried NodeUnstage and leave nothing;
// staging the volume again finds the file intact.
func TestCrashUnstage(t *testing.T) {
	for _, point := range pointsWhere(isUnstagePoint) {
		t.Run(point, func(t *testing.T) {
			b := newCrashBed(t)
			v := b.volume(t, "u-"+point)
			a, data := b.stagedWithData(t, v)
			a.stop(t)

			a = b.start(t, point, 0)
			a.expectKilled(t, point, "NodeUnstage", b.unstage(v))
			a = b.start(t, "", 0)
			must(t, "the retried NodeUnstage", b.retried(b.unstage, v))
			b.assertNothingLeft(t, v)
			must(t, "NodeStage again", b.retried(b.stage, v))
			b.assertStaged(t, a, v, 0)
			data.checkFile(t, "staged again after the crash in NodeUnstage", filepath.Join(v.staging, "data"))
			must(t, "NodeUnstage", b.retried(b.unstage, v))
			b.assertNothingLeft(t, v)
			a.stop(t)
		})
	}
}

// TestCrashNoFormatOverData: a volume that holds an ext4 filesystem with a
// file, from an earlier stage, is staged again by an agent that dies
// between the attach and the format decision. The retried NodeStage must
// mount the filesystem as it is: the file intact, no mkfs. An agent that
// does not reach the format marker on such a volume (it has nothing to
// format) passes that point; the others must be reached.
func TestCrashNoFormatOverData(t *testing.T) {
	for _, point := range []string{fault.StageAttached, fault.StageRecorded, fault.FormatMarked} {
		t.Run(point, func(t *testing.T) {
			b := newCrashBed(t)
			v := b.volume(t, "d-"+point)
			a, data := b.stagedWithData(t, v)
			must(t, "NodeUnstage", b.unstage(v))
			b.assertNothingLeft(t, v)
			a.stop(t)

			a = b.start(t, point, 0)
			err := b.stage(v)
			if point == fault.FormatMarked && err == nil && !a.exitedWithin(crashAliveTimeout) {
				t.Logf("the agent staged the volume without reaching %s: it found the filesystem and marked nothing for formatting", point)
			} else {
				a.expectKilled(t, point, "NodeStage", err)
				a = b.start(t, "", 0)
				must(t, "the retried NodeStage", b.retried(b.stage, v))
			}
			b.assertStaged(t, a, v, 0)
			data.checkFile(t, "after the crash at "+point, filepath.Join(v.staging, "data"))
			must(t, "NodeUnstage", b.retried(b.unstage, v))
			b.assertNothingLeft(t, v)
			a.stop(t)
		})
	}
}

// TestCrashAbandoned: for the points before the record is complete, the
// agent dies while staging and nobody calls again (the pod went away while
// the agent was down). The restarted agent must remove what it leaked, the
// front and the controller, once its orphan grace has passed.
func TestCrashAbandoned(t *testing.T) {
	recorded := slices.Index(fault.Points, fault.StageRecorded)
	if recorded < 0 {
		t.Fatalf("%s is not in fault.Points %v", fault.StageRecorded, fault.Points)
	}
	for _, point := range fault.Points[:recorded] {
		t.Run(point, func(t *testing.T) {
			b := newCrashBed(t)
			v := b.volume(t, "a-"+point)
			b.crashStaging(t, point, v)
			_, front := frontOf(t, v)
			t.Logf("after the crash: controllers %v, front %s exists: %v", controllersIn(t, v.nqn), agent.MapperName(v.id), front)
			start := time.Now()
			b.start(t, "", crashOrphanGrace)
			waitFor(t, "the restarted agent removes the abandoned front and controller of "+v.id, crashOrphanGrace+crashAbandonBound, func() bool {
				_, front := frontOf(t, v)
				return len(controllersIn(t, v.nqn)) == 0 && !front
			})
			t.Logf("the abandoned front and controller were gone %v after the restart", time.Since(start).Round(time.Millisecond))
			if m := mountsUnder(t, filepath.Dir(v.staging)); len(m) != 0 {
				t.Errorf("mounts left behind: %v", m)
			}
		})
	}
}

// crashBed is a fixture whose node service is the agent binary, run as a
// process, restarted at will; volumes get kubelet paths so that a new
// agent finds their records.
type crashBed struct {
	*healFixture
	dir  string
	runs int
	// cur is the agent process that serves b.node now.
	cur *agentRun
}

func newCrashBed(t *testing.T) *crashBed {
	t.Helper()
	if _, err := os.Stat(*crashAgent); err != nil {
		t.Fatalf("the fault-injecting agent: %v (test/e2e builds it with -tags faultinject into the initramfs; -rds.crash.agent names it)", err)
	}
	h := &healFixture{fixture: newFixture(t)}
	h.kubelet = filepath.Join(h.dir, "kubelet")
	return &crashBed{healFixture: h, dir: t.TempDir()}
}

// agentRun is one agent process.
type agentRun struct {
	name    string
	cmd     *exec.Cmd
	log     string
	done    chan struct{}
	state   *os.ProcessState
	waitErr error
	conn    *grpc.ClientConn
	stopped bool
}

// volume creates a blank ext4 volume with kubelet paths. Its cleanup,
// which runs after the agents' and before the fixture's sweep, removes a
// front the crash left without a table: such a front has no disk in sysfs,
// where the sweep looks.
func (b *crashBed) volume(t *testing.T, name string) *vol {
	t.Helper()
	v := b.create(name, "ext4", nil)
	t.Cleanup(func() {
		d, ok, err := dm.Lookup(agent.MapperName(v.id))
		if err != nil || !ok {
			return
		}
		if _, err := os.Stat(fmt.Sprintf("/sys/block/dm-%d", d.Minor)); err == nil {
			return // the sweep's
		}
		t.Logf("cleanup: removing the front %s, which has no table", agent.MapperName(v.id))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := dm.Remove(ctx, agent.MapperName(v.id)); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return v
}

// retried makes a call as the kubelet does after a failure: again, for as
// long as the agent answers Aborted (an operation on the volume, such as
// the restarted agent's repair of what it resumed, is in progress), within
// rpcTimeout.
func (b *crashBed) retried(call func(*vol) error, v *vol) error {
	return retryAborted(func() error { return call(v) })
}

// stagedWithData starts an agent that stages the blank volume v (and
// formats it), and writes a file into it. The agent keeps running.
func (b *crashBed) stagedWithData(t *testing.T, v *vol) (*agentRun, payload) {
	t.Helper()
	data := newPayload(t, 256<<10)
	a := b.start(t, "", 0)
	must(t, "NodeStage (formats)", b.stage(v))
	data.writeFile(t, filepath.Join(v.staging, "data"))
	return a, data
}

// crashStaging stages v with an agent armed at point, which must die there.
func (b *crashBed) crashStaging(t *testing.T, point string, v *vol) {
	t.Helper()
	a := b.start(t, point, 0)
	a.expectKilled(t, point, "NodeStage", b.stage(v))
}

// start runs the agent binary as the DaemonSet does, on the bed's kubelet
// directory, armed at point unless point is empty, and makes it the bed's
// node service. A zero grace keeps production's orphan grace, which no
// case waits out. The agent before must have ended.
func (b *crashBed) start(t *testing.T, point string, grace time.Duration) *agentRun {
	t.Helper()
	if b.cur != nil && !b.cur.exited() {
		t.Fatalf("starting an agent while %s still runs", b.cur.name)
	}
	b.runs++
	a := &agentRun{name: fmt.Sprintf("agent run %d", b.runs), done: make(chan struct{})}
	if point != "" {
		a.name += " (" + fault.Env + "=" + point + ")"
	}
	sock := filepath.Join(b.dir, fmt.Sprintf("agent-%d.sock", b.runs))
	a.log = filepath.Join(b.dir, fmt.Sprintf("agent-%d.log", b.runs))
	logFile, err := os.Create(a.log)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--endpoint=unix://" + sock, "--node-id=" + nodeID, "--kubelet-dir=" + b.kubelet,
		"--status-socket=" + filepath.Join(b.dir, fmt.Sprintf("status-%d.sock", b.runs)),
		"--metrics-address=" + crashMetrics, "--events=false", "--scan-interval=" + healScanInterval.String(), "-v=2"}
	if grace > 0 {
		args = append(args, "--orphan-grace="+grace.String())
	}
	a.cmd = exec.Command(*crashAgent, args...)
	a.cmd.Stdout, a.cmd.Stderr = logFile, logFile
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, fault.Env+"=") })
	if point != "" {
		env = append(env, fault.Env+"="+point)
	}
	a.cmd.Env = env
	if err := a.cmd.Start(); err != nil {
		_ = logFile.Close()
		t.Fatalf("starting %s: %v", *crashAgent, err)
	}
	go func() {
		a.waitErr = a.cmd.Wait()
		a.state = a.cmd.ProcessState
		_ = logFile.Close()
		close(a.done)
	}()
	t.Cleanup(func() {
		a.stop(t)
		if a.conn != nil {
			_ = a.conn.Close()
		}
		if t.Failed() {
			t.Logf("the log of %s (pid %d):\n%s", a.name, a.cmd.Process.Pid, tail(a.logText(), 40))
		}
	})
	b.cur = a
	a.conn, err = grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	// The socket's file exists between bind and listen, when a connect is
	// still refused: the agent serves once it answers a Probe.
	identity := csi.NewIdentityClient(a.conn)
	deadline := time.Now().Add(crashAgentStart)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		_, err := identity.Probe(ctx, &csi.ProbeRequest{}, grpc.WaitForReady(true))
		cancel()
		if err == nil {
			break
		}
		if a.exited() {
			t.Fatalf("%s ended before it served CSI (%v):\n%s", a.name, a.waitErr, tail(a.logText(), 40))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not answer a Probe %v after its start: %v", a.name, crashAgentStart, err)
		}
	}
	b.node = csi.NewNodeClient(a.conn)
	t.Logf("%s started (pid %d)", a.name, a.cmd.Process.Pid)
	return a
}

func (a *agentRun) exited() bool {
	select {
	case <-a.done:
		return true
	default:
		return false
	}
}

func (a *agentRun) exitedWithin(d time.Duration) bool {
	select {
	case <-a.done:
		return true
	case <-time.After(d):
		return false
	}
}

func (a *agentRun) logText() string {
	b, err := os.ReadFile(a.log)
	if err != nil {
		return fmt.Sprintf("(log unreadable: %v)", err)
	}
	return string(b)
}

// stop ends the agent as its DaemonSet's rolling update would (SIGTERM),
// or kills it when it does not go.
func (a *agentRun) stop(t *testing.T) {
	t.Helper()
	if a.stopped || a.exited() {
		return
	}
	a.stopped = true
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	if a.exitedWithin(crashAgentStop) {
		return
	}
	t.Errorf("%s did not stop within %v of SIGTERM; killing it", a.name, crashAgentStop)
	_ = a.cmd.Process.Kill()
	if !a.exitedWithin(crashAgentStop) {
		t.Errorf("%s survives SIGKILL", a.name)
	}
}

// expectKilled checks that the call the agent was armed for failed because
// the agent died at point by SIGKILL, as internal/fault kills.
func (a *agentRun) expectKilled(t *testing.T, point, call string, err error) {
	t.Helper()
	wait := crashExitTimeout
	if err == nil {
		wait = crashAliveTimeout
	}
	if !a.exitedWithin(wait) {
		t.Fatalf("the agent did not die at point %s: %s returned %v and %s (pid %d) still runs %v later; the point is not wired into the agent, or not on this path",
			point, call, errOrOK(err), a.name, a.cmd.Process.Pid, wait)
	}
	ws, ok := a.state.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the agent did not die at point %s by SIGKILL: %s ended with %v (%s returned %v):\n%s", point, a.name, a.waitErr, call, errOrOK(err), tail(a.logText(), 40))
	}
	if !strings.Contains(a.logText(), faultMessage+point) {
		t.Fatalf("%s was killed by SIGKILL during %s, but its log does not say it reached %s:\n%s", a.name, call, point, tail(a.logText(), 40))
	}
	if err == nil {
		t.Fatalf("%s succeeded although the agent was killed at %s, before it could answer", call, point)
	}
	t.Logf("the agent died at %s; %s returned %v", point, call, err)
}

func errOrOK(err error) string {
	if err == nil {
		return "OK"
	}
	return err.Error()
}

// assertStaged checks what a staged ext4 volume must be on the node:
// exactly one controller of its NQN, exactly one front (rds-csi-<id>) with
// a live, resumed table whose one path is the namespace and is active, the
// namespace held by that front alone, exactly one mount at the staging
// path, ext4 from the front, the record beside it; and that the agent
// serving now formatted at most maxFormats times.
func (b *crashBed) assertStaged(t *testing.T, a *agentRun, v *vol, maxFormats int) {
	t.Helper()
	ctrls := controllersIn(t, v.nqn)
	if len(ctrls) != 1 {
		t.Fatalf("controllers of %s in /sys/class/nvme: %v, want exactly one", v.nqn, ctrls)
	}
	ns, err := sysTree.ResolveNamespace(v.nqn, 1)
	if err != nil {
		t.Fatalf("resolving namespace 1 of %s: %v", v.nqn, err)
	}
	name := agent.MapperName(v.id)
	d, ok := frontOf(t, v)
	if !ok {
		t.Fatalf("no dm device named %s", name)
	}
	// dm names are unique; the disk must be registered (it is once a
	// table was loaded) under that name.
	front := fmt.Sprintf("dm-%d", d.Minor)
	if got := sysRead(t, "/sys/block/"+front+"/dm/name"); got != name {
		t.Fatalf("/sys/block/%s is named %q, want %s", front, got, name)
	}
	if s := sysRead(t, "/sys/block/"+front+"/dm/suspended"); s != "0" {
		t.Fatalf("front %s (%s) is suspended (%q): no live table serves I/O", name, front, s)
	}
	ctx := ctxFor(t, 30*time.Second)
	table, err := dm.Table(ctx, name)
	if err != nil {
		t.Fatalf("live table of %s: %v", name, err)
	}
	if len(table) != 1 || table[0].Type != "multipath" || !slices.Contains(strings.Fields(table[0].Params), ns.Dev.String()) {
		t.Fatalf("live table of %s is %v, want one multipath target over the namespace %s (%s)", name, table, ns.Name, ns.Dev)
	}
	status, err := dm.Status(ctx, name)
	if err != nil {
		t.Fatalf("status of %s: %v", name, err)
	}
	if !pathIsActive(status, ns.Dev.String()) {
		t.Fatalf("front %s: its path %s is not active: %q", name, ns.Dev, status)
	}
	holders, err := os.ReadDir("/sys/block/" + ns.Name + "/holders")
	if err != nil {
		t.Fatal(err)
	}
	var held []string
	for _, h := range holders {
		held = append(held, h.Name())
	}
	if !slices.Equal(held, []string{front}) {
		t.Fatalf("namespace %s is held by %v, want the front %s alone", ns.Name, held, front)
	}
	frontDev := fmt.Sprintf("%d:%d", d.Major, d.Minor)
	ms, err := mount.List()
	if err != nil {
		t.Fatal(err)
	}
	var at []mount.Entry
	for _, m := range ms {
		if m.MountPoint == v.staging {
			at = append(at, m)
		}
	}
	if len(at) != 1 {
		t.Fatalf("%d mounts at the staging path %s, want exactly one", len(at), v.staging)
	}
	if m := at[0]; m.FSType != "ext4" || fmt.Sprintf("%d:%d", m.Dev.Major, m.Dev.Minor) != frontDev {
		t.Fatalf("the staging mount is %s from %d:%d, want ext4 from the front %s (%s)", m.FSType, m.Dev.Major, m.Dev.Minor, front, frontDev)
	}
	if _, err := os.Stat(recordFile(v)); err != nil {
		t.Fatalf("the staged volume has no record: %v", err)
	}
	formats, ok := a.formats(t)
	if !ok {
		t.Fatalf("the agent's metrics have no rds_node_operations_total after a stage")
	}
	if formats > maxFormats {
		t.Fatalf("%s formatted %d times, want at most %d", a.name, formats, maxFormats)
	}
	t.Logf("staged: controller %v, front %s (%s, %s) over %s (%s), ext4 mounted at the staging path; %d mkfs by %s", ctrls, name, front, frontDev, ns.Name, ns.Dev, formats, a.name)
}

// assertCleanFilesystem writes a file into the staged filesystem, freezes
// it (which writes the journal back and marks it recovered) and runs
// e2fsck -fn on its device: a filesystem made across a crash must not
// need repair.
func (b *crashBed) assertCleanFilesystem(t *testing.T, v *vol) {
	t.Helper()
	p := newPayload(t, 64<<10)
	p.writeFile(t, filepath.Join(v.staging, "probe"))
	d, ok := frontOf(t, v)
	if !ok {
		t.Fatalf("no dm device named %s", agent.MapperName(v.id))
	}
	dev := fmt.Sprintf("/dev/dm-%d", d.Minor)
	thaw := freeze(t, v.staging)
	defer thaw()
	out, err := exec.CommandContext(ctxFor(t, 60*time.Second), "e2fsck", "-f", "-n", dev).CombinedOutput()
	if err != nil {
		t.Fatalf("e2fsck -fn %s: %v\n%s", dev, err, out)
	}
	t.Logf("e2fsck -fn %s: clean (%s)", dev, lastLine(string(out)))
	thaw()
	p.checkFile(t, "written before the check", filepath.Join(v.staging, "probe"))
}

// assertNothingLeft checks that nothing of the volume is left on the node:
// no controller of its NQN (the kernel deletes one asynchronously, so this
// waits a little), no front, no mount, no record.
func (b *crashBed) assertNothingLeft(t *testing.T, v *vol) {
	t.Helper()
	waitFor(t, "no controller of "+v.nqn+" is left", 10*time.Second, func() bool { return len(controllersIn(t, v.nqn)) == 0 })
	if d, ok := frontOf(t, v); ok {
		t.Fatalf("front %s (dm-%d) left behind", agent.MapperName(v.id), d.Minor)
	}
	if m := mountsUnder(t, filepath.Dir(v.staging)); len(m) != 0 {
		t.Fatalf("mounts left behind: %v", m)
	}
	if left, _ := filepath.Glob(recordFile(v) + "*"); len(left) != 0 {
		t.Fatalf("record left behind: %v", left)
	}
}

// recordFile is where the agent keeps the volume's record (agent/records.go).
func recordFile(v *vol) string {
	return filepath.Join(filepath.Dir(v.staging), "rds-csi-"+v.id+".json")
}

// controllersIn lists the controllers of nqn in /sys/class/nvme, with their
// states. A controller being deleted may have lost its attributes before
// its directory: it is gone already.
func controllersIn(t *testing.T, nqn string) []string {
	t.Helper()
	dirs, err := os.ReadDir("/sys/class/nvme")
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join("/sys/class/nvme", d.Name(), "subsysnqn"))
		if err != nil || strings.TrimSpace(string(b)) != nqn {
			continue
		}
		state, _ := os.ReadFile(filepath.Join("/sys/class/nvme", d.Name(), "state"))
		out = append(out, d.Name()+"("+strings.TrimSpace(string(state))+")")
	}
	return out
}

// frontOf looks the volume's front up by name in the device-mapper itself:
// a front created without a table has no disk in sysfs yet.
func frontOf(t *testing.T, v *vol) (dm.Device, bool) {
	t.Helper()
	d, ok, err := dm.Lookup(agent.MapperName(v.id))
	if err != nil {
		t.Fatalf("looking up the front of %s: %v", v.id, err)
	}
	return d, ok
}

// pathIsActive tells whether a multipath status line shows the path dev
// as active ("<major:minor> A ...").
func pathIsActive(status []string, dev string) bool {
	for _, line := range status {
		f := strings.Fields(line)
		for i := range len(f) - 1 {
			if f[i] == dev && f[i+1] == "A" {
				return true
			}
		}
	}
	return false
}

func sysRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// formats reads how many times the agent serving now ran mkfs
// successfully, from its /metrics; ok is false if the metrics have no
// node operations at all.
func (a *agentRun) formats(t *testing.T) (n int, ok bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+crashMetrics+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scraping %s: %v", a.name, err)
	}
	defer func() { _ = resp.Body.Close() }()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "rds_node_operations_total{") {
			continue
		}
		ok = true
		if strings.Contains(line, `operation="format"`) && strings.Contains(line, `result="ok"`) {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			n = int(v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("scraping %s: %v", a.name, err)
	}
	return n, ok
}
