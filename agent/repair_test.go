package agent_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rds-csi/rds-csi/agent"
	"github.com/rds-csi/rds-csi/agent/heal"
	"github.com/rds-csi/rds-csi/kernel/loop"
	"github.com/rds-csi/rds-csi/test/looptransport"
)

// loseAndRenumber detaches the volume's device behind the agent's back and
// gives its number to another file, as a controller loss followed by another
// connect does.
func (f *fixture) loseAndRenumber(t *testing.T, id string) string {
	t.Helper()
	devs, err := loop.Find(f.file(id))
	if err != nil || len(devs) != 1 {
		t.Fatalf("devices of %s: %v %v", id, devs, err)
	}
	if err := loop.Detach(context.Background(), devs[0]); err != nil {
		t.Fatal(err)
	}
	squatter := filepath.Join(f.dir, "squatter.img")
	if err := os.WriteFile(squatter, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(squatter, mib); err != nil {
		t.Fatal(err)
	}
	dev, err := loop.Attach(context.Background(), squatter)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = loop.Detach(context.Background(), dev) })
	return devs[0]
}

// stageAndPublishBlock stages the volume as a raw block volume and
// publishes it once.
func (f *fixture) stageAndPublishBlock(t *testing.T, id string, attrs map[string]string) (staging, target string) {
	t.Helper()
	staging, target = f.paths(id)
	if err := f.stage(id, staging, blockCap(), attrs); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := f.publish(id, staging, target, blockCap(), attrs); err != nil {
		t.Fatal(err)
	}
	return staging, target
}

func TestRepairReconnectsAndMovesBlockPublishesToTheRenumberedDevice(t *testing.T) {
	f := newFixture(t)
	id, attrs := f.volume("pvc-repair-block", 64*mib, nil, true)
	staging, target := f.stageAndPublishBlock(t, id, attrs)
	old := f.loseAndRenumber(t, id)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.node.Repair(ctx, heal.Volume{VolumeID: id, NQN: prefix + id, NSID: 1}, heal.Health{}); err != nil {
		t.Fatal(err)
	}
	devs, err := loop.Find(f.file(id))
	if err != nil || len(devs) != 1 || devs[0] == old {
		t.Fatalf("after repair the volume is on %v (was %s): %v", devs, old, err)
	}
	var st, want unix.Stat_t
	if err := unix.Stat(target, &st); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(devs[0], &want); err != nil {
		t.Fatal(err)
	}
	if st.Rdev != want.Rdev {
		t.Fatalf("the block target still shows device %d, the volume is now %d", st.Rdev, want.Rdev)
	}
	w, err := os.OpenFile(target, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt([]byte("after the heal"), 0); err != nil {
		t.Fatal(err)
	}
	_ = w.Sync()
	_ = w.Close()
	if got := head(t, f.file(id), 14); string(got) != "after the heal" {
		t.Fatalf("a write through the repaired target landed as %q", got)
	}
	if len(mountsAt(t, target)) != 1 {
		t.Fatal("the repair stacked mounts at the target")
	}
	if err := f.unpublish(id, target); err != nil {
		t.Fatal(err)
	}
	if err := f.unstage(id, staging); err != nil {
		t.Fatal(err)
	}
}

func TestRepairOfAMountedFilesystemSaysItsConsumersNeedARestart(t *testing.T) {
	f := newFixture(t)
	id, attrs := f.volume("pvc-repair-fs", 64*mib, nil, true)
	staging, _ := f.paths(id)
	if err := f.stage(id, staging, fsCap("ext4"), attrs); err != nil {
		t.Fatal(err)
	}
	// A mounted device cannot be detached; lose it by taking the mount
	// away first, as a dead controller leaves a filesystem behind.
	if err := unix.Unmount(staging, 0); err != nil {
		t.Fatal(err)
	}
	f.loseAndRenumber(t, id)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := f.node.Repair(ctx, heal.Volume{VolumeID: id, NQN: prefix + id, NSID: 1}, heal.Health{})
	if !errors.Is(err, heal.ErrConsumersStuck) || !strings.Contains(err.Error(), "until the volume is staged again") {
		t.Fatalf("repair of a filesystem volume: %v", err)
	}
	if !attached(t, f.file(id)) {
		t.Fatal("the repair did not reconnect the volume")
	}
}

// fronted is the loop transport behind a stable front: the device the
// consumers use keeps the number it had at the first attach, whatever the
// namespace below it becomes, as a Multipath front's does.
type fronted struct {
	*looptransport.Attacher
	front agent.Device
}

func (a *fronted) Attach(ctx context.Context, t agent.Target) (agent.Device, error) {
	ns, err := a.Attacher.Attach(ctx, t)
	if err != nil {
		return ns, err
	}
	if a.front.Path == "" {
		a.front = ns
	}
	return agent.Device{Path: a.front.Path, Dev: a.front.Dev, Mapped: true, Backing: ns.Dev}, nil
}

func TestRepairOfAFrontedFilesystemKeepsItsConsumers(t *testing.T) {
	f := newFixture(t)
	opts := agent.Options{NodeID: "node-1"}
	if err := opts.Validate(); err != nil {
		t.Fatal(err)
	}
	at := &fronted{Attacher: &looptransport.Attacher{Sim: f.disks}}
	f.node = agent.New(opts, at, agent.HostMounter{}, nil)
	id, attrs := f.volume("pvc-repair-front", 64*mib, nil, true)
	staging, _ := f.paths(id)
	if err := f.stage(id, staging, fsCap("ext4"), attrs); err != nil {
		t.Fatal(err)
	}
	if err := unix.Unmount(staging, 0); err != nil {
		t.Fatal(err)
	}
	f.loseAndRenumber(t, id)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.node.Repair(ctx, heal.Volume{VolumeID: id, NQN: prefix + id, NSID: 1}, heal.Health{}); err != nil {
		t.Fatalf("repair under a front: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(filepath.Dir(staging), "rds-csi-"+id+".json"))
	if err != nil {
		t.Fatal(err)
	}
	devs, err := loop.Find(f.file(id))
	if err != nil || len(devs) != 1 {
		t.Fatal(devs, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(devs[0], &st); err != nil {
		t.Fatal(err)
	}
	ns := fmt.Sprintf(`"namespace": "%d:%d"`, unix.Major(st.Rdev), unix.Minor(st.Rdev))
	if !strings.Contains(string(b), ns) || !strings.Contains(string(b), fmt.Sprintf(`"device": "%s"`, at.front.Dev)) {
		t.Fatalf("the record after the repair does not keep the front and name the new namespace (%s):\n%s", ns, b)
	}
}
