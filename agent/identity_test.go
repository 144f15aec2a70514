package agent_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"

	"github.com/rds-csi/rds-csi/agent"
	"github.com/rds-csi/rds-csi/agent/heal"
	"github.com/rds-csi/rds-csi/kernel/loop"
	"github.com/rds-csi/rds-csi/kernel/sysfs"
)

// replaceDisk takes the volume's disk away behind the agent's back and puts
// another file, filled with marker, under the same name: the disk re-created
// under the same slot. It returns both identities the loop transport shows
// and the replacement's checksum.
func (f *fixture) replaceDisk(t *testing.T, id string, marker byte) (staged, other string, sum [32]byte) {
	t.Helper()
	file := f.file(id)
	devs, err := loop.Find(file)
	if err != nil || len(devs) != 1 {
		t.Fatalf("devices of %s: %v %v", id, devs, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(file, &st); err != nil {
		t.Fatal(err)
	}
	staged = fmt.Sprintf("loop.%x.%d", st.Dev, st.Ino)
	if err := loop.Detach(context.Background(), devs[0]); err != nil {
		t.Fatal(err)
	}
	content := bytes.Repeat([]byte{marker}, int(mib))
	tmp := file + ".new"
	if err := os.WriteFile(tmp, content, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(tmp, 64*mib); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, file); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(file, &st); err != nil {
		t.Fatal(err)
	}
	return staged, fmt.Sprintf("loop.%x.%d", st.Dev, st.Ino), f.checksum(t, id)
}

func (f *fixture) checksum(t *testing.T, id string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(f.file(id))
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// The promise the driver exists for: a volume is only ever its own disk. A
// disk replaced under the volume's NQN is refused by the repair (which
// leaves the consumers where they were, never on the other disk) and by a
// NodeStage again, each naming both identities; the other disk is never
// written.
func TestNoRepairOrRestagePutsTheVolumeOnAnotherDisk(t *testing.T) {
	f := newFixture(t)
	id, attrs := f.volume("pvc-identity", 64*mib, bytes.Repeat([]byte{0x11}, 4096), true)
	staging, target := f.stageAndPublishBlock(t, id, attrs)
	staged, other, sum := f.replaceDisk(t, id, 0x5a)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := f.node.Repair(ctx, heal.Volume{VolumeID: id, NQN: prefix + id, NSID: 1}, heal.Health{})
	if !errors.Is(err, agent.ErrIdentityChanged) || !errors.Is(err, heal.ErrIdentityChanged) {
		t.Fatalf("repair onto another disk: %v, want ErrIdentityChanged", err)
	}
	for _, want := range []string{staged, other} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the repair's error %q does not name %s", err, want)
		}
	}
	// The publish was withdrawn (its device number may go to the other
	// disk), and never shows the other disk.
	if m := mountsAt(t, target); len(m) != 0 {
		t.Fatalf("the block publish is still mounted: %+v", m)
	}
	if b, err := readHead(target, 4096); err == nil && bytes.Contains(b, []byte{0x5a, 0x5a, 0x5a, 0x5a}) {
		t.Fatalf("the consumer reads the other disk through %s", target)
	}
	// A new publish (another pod on the node) is refused too.
	err = f.publish(id, staging, target+"-2", blockCap(), attrs)
	wantCode(t, err, codes.FailedPrecondition, "another disk")

	_, err = f.node.NodeStageVolume(context.Background(), &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: blockCap(), VolumeContext: attrs})
	wantCode(t, err, codes.FailedPrecondition, "another disk")
	for _, want := range []string{staged, other} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the restage's error %q does not name %s", err, want)
		}
	}
	if err := f.unpublish(id, target); err != nil {
		t.Fatal(err)
	}
	if err := f.unstage(id, staging); err != nil {
		t.Fatalf("unstage of a volume whose disk was replaced: %v", err)
	}
	if f.checksum(t, id) != sum {
		t.Fatal("the other disk was written")
	}
}

// readHead reads n bytes from the start of path, bounded: a device that
// hangs is not the question here.
func readHead(path string, n int) ([]byte, error) {
	type result struct {
		b   []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		fd, err := os.Open(path)
		if err != nil {
			done <- result{nil, err}
			return
		}
		defer func() { _ = fd.Close() }()
		b := make([]byte, n)
		_, err = fd.ReadAt(b, 0)
		done <- result{b, err}
	}()
	select {
	case r := <-done:
		return r.b, r.err
	case <-time.After(10 * time.Second):
		return nil, errors.New("read timed out")
	}
}

// A front is never moved onto another disk: the namespace that comes back
// with other identifiers is refused before the front is touched, and a
// refused heal makes the front fail I/O instead of queueing it for a disk
// that is gone.
func TestARefusedHealLeavesTheFrontAndFailsItsIO(t *testing.T) {
	f := newMultipathFixture(t)
	staged := sysfs.Identity{WWID: "uuid.a", UUID: "a"}
	f.paths.appearAs(t, f.target.NQN, "nvme1n1", sysfs.DevT{Major: 259, Minor: 3}, staged)
	f.sizes["nvme1n1"] = 64 << 20
	node, _ := f.stagedNode(t, agent.Options{})
	f.calls()
	f.paths.vanish(f.target.NQN)
	f.paths.appearAs(t, f.target.NQN, "nvme2n1", sysfs.DevT{Major: 259, Minor: 4}, sysfs.Identity{WWID: "uuid.b", UUID: "b"})
	f.sizes["nvme2n1"] = 64 << 20

	err := node.Repair(context.Background(), heal.Volume{VolumeID: f.target.VolumeID, NQN: f.target.NQN, NSID: 1}, heal.Health{})
	if !errors.Is(err, heal.ErrIdentityChanged) || !strings.Contains(err.Error(), "uuid.a") || !strings.Contains(err.Error(), "uuid.b") {
		t.Fatalf("repair: %v", err)
	}
	calls := f.calls()
	if want := []string{"message " + f.name + " fail_if_no_path"}; strings.Join(calls, ";") != strings.Join(want, ";") {
		t.Fatalf("device-mapper calls %q, want %q", calls, want)
	}
	if tbl := f.mapper.front(f.name).table[0].Params; !strings.Contains(tbl, "259:3") || strings.Contains(tbl, "259:4") {
		t.Fatalf("the front's table %q moved", tbl)
	}
}

// An agent killed between DM_DEV_CREATE and the table's resume leaves a
// front without a live table: the next attach completes it instead of
// failing on it for ever, and until then the volume is its namespace.
func TestAFrontLeftWithoutATableIsCompleted(t *testing.T) {
	f := newMultipathFixture(t)
	ns := sysfs.DevT{Major: 259, Minor: 3}
	f.paths.appear(t, f.target.NQN, "nvme1n1", ns, true)
	f.sizes["nvme1n1"] = 64 << 20
	f.mapper.halfMade(f.name)
	d, err := f.mp.Find(context.Background(), f.target)
	if err != nil || d.Mapped || d.Dev != ns {
		t.Fatalf("Find of a half-made front: %+v %v, want the namespace", d, err)
	}
	d = f.attach(t)
	if !d.Mapped || d.Backing != ns {
		t.Fatalf("device %+v", d)
	}
	if calls := f.calls(); strings.Join(calls, ";") != "activate "+f.name {
		t.Fatalf("device-mapper calls %q, want the front activated", calls)
	}
	if front := f.mapper.front(f.name); !front.dev.Live || !strings.Contains(front.table[0].Params, "259:3") {
		t.Fatalf("front %+v", front)
	}
}

// A refusal is kept in the record: an agent restarted afterwards keeps the
// volume's front failing I/O (its start would otherwise make every front
// queue again) and its repair refuses at once, without connecting, until
// the volume is staged again.
func TestARefusalOutlivesAnAgentRestart(t *testing.T) {
	f := newMultipathFixture(t)
	f.paths.appearAs(t, f.target.NQN, "nvme1n1", sysfs.DevT{Major: 259, Minor: 3}, sysfs.Identity{WWID: "uuid.a"})
	f.sizes["nvme1n1"] = 64 << 20
	node, _ := f.stagedNode(t, agent.Options{})
	f.paths.vanish(f.target.NQN)
	f.paths.appearAs(t, f.target.NQN, "nvme2n1", sysfs.DevT{Major: 259, Minor: 4}, sysfs.Identity{WWID: "uuid.b"})
	f.sizes["nvme2n1"] = 64 << 20
	vol := heal.Volume{VolumeID: f.target.VolumeID, NQN: f.target.NQN, NSID: 1}
	if err := node.Repair(context.Background(), vol, heal.Health{}); !errors.Is(err, heal.ErrIdentityChanged) {
		t.Fatalf("repair: %v", err)
	}

	opts := agent.Options{NodeID: "node-1"}
	if err := opts.Validate(); err != nil {
		t.Fatal(err)
	}
	restarted := agent.New(opts, f.mp, agent.HostMounter{}, nil)
	vols, err := restarted.Resume(f.kubelet)
	if err != nil || len(vols) != 1 || !vols[0].Refused {
		t.Fatalf("resumed %+v %v, want the refused volume", vols, err)
	}
	f.calls()
	if err := restarted.UndoShutdown(context.Background(), vols); err != nil {
		t.Fatal(err)
	}
	if calls := strings.Join(f.calls(), ";"); calls != "message "+f.name+" fail_if_no_path" {
		t.Fatalf("device-mapper calls at start %q: the refused front must keep failing I/O", calls)
	}
	connects := f.paths.connected
	err = restarted.Repair(context.Background(), vol, heal.Health{})
	if !errors.Is(err, heal.ErrIdentityChanged) || !strings.Contains(err.Error(), "uuid.b") {
		t.Fatalf("repair after the restart: %v", err)
	}
	if f.paths.connected != connects {
		t.Fatal("the repair of a refused volume connected again")
	}
}

// An agent killed inside a reload of a front (after its suspend, before its
// resume) leaves the front suspended: the next agent's start resumes it,
// or its consumers would wait for ever on a volume the kernel shows live.
func TestAFrontLeftSuspendedIsResumedAtStart(t *testing.T) {
	f := newMultipathFixture(t)
	f.paths.appear(t, f.target.NQN, "nvme1n1", sysfs.DevT{Major: 259, Minor: 3}, true)
	f.sizes["nvme1n1"] = 64 << 20
	f.stagedNode(t, agent.Options{})
	f.mapper.front(f.name).dev.Suspended = true
	opts := agent.Options{NodeID: "node-1"}
	if err := opts.Validate(); err != nil {
		t.Fatal(err)
	}
	restarted := agent.New(opts, f.mp, agent.HostMounter{}, nil)
	vols, err := restarted.Resume(f.kubelet)
	if err != nil || len(vols) != 1 {
		t.Fatalf("resumed %+v %v", vols, err)
	}
	f.calls()
	if err := restarted.UndoShutdown(context.Background(), vols); err != nil {
		t.Fatal(err)
	}
	if calls := strings.Join(f.calls(), ";"); calls != "resume "+f.name+";message "+f.name+" queue_if_no_path" {
		t.Fatalf("device-mapper calls at start %q", calls)
	}
	if f.mapper.front(f.name).dev.Suspended {
		t.Fatal("the front is still suspended")
	}
}
