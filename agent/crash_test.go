package agent_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/rds-csi/rds-csi/agent"
	"github.com/rds-csi/rds-csi/agent/heal"
	"github.com/rds-csi/rds-csi/kernel/loop"
	"github.com/rds-csi/rds-csi/kernel/sysfs"
	"github.com/rds-csi/rds-csi/kernel/sysfs/sysfstest"
	"github.com/rds-csi/rds-csi/test/looptransport"
)

// killedMkfs puts an mkfs.ext4 first in PATH that does what an mkfs killed
// after its first writes leaves: 64 KiB written at 64 KiB, no superblock.
func killedMkfs(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	script := `#!/bin/sh
for last; do :; done
head -c 65536 /dev/zero | tr '\0' '\245' | dd of="$last" bs=65536 seek=1 conv=notrunc,fsync 2>/dev/null
kill -9 $$
`
	if err := os.WriteFile(filepath.Join(dir, "mkfs.ext4"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
}

// An mkfs killed half-way leaves bytes in the first MiB and no filesystem.
// The format gate refuses such a device as "holding data" — unless this
// node's marker says that the bytes are its own interrupted format of this
// very disk: then the retry formats again. Once a whole filesystem is
// there, a marker left over never makes it format again.
func TestAnInterruptedFormatIsRedoneAndOnlyThat(t *testing.T) {
	f := newFixture(t)
	state := t.TempDir()
	opts := agent.Options{NodeID: "node-1", AttachTimeout: 10e9, StateDir: state}
	if err := opts.Validate(); err != nil {
		t.Fatal(err)
	}
	f.node = agent.New(opts, &looptransport.Attacher{Sim: f.disks}, agent.HostMounter{}, nil)
	id, attrs := f.volume("pvc-mkfs", 64*mib, nil, true)
	staging, _ := f.paths(id)
	marker := filepath.Join(state, "format-"+id+".json")

	t.Run("mkfs killed", func(t *testing.T) {
		killedMkfs(t)
		if err := f.stage(id, staging, fsCap("ext4"), attrs); err == nil {
			t.Fatal("a stage whose mkfs was killed succeeded")
		}
	})
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("no format marker after an interrupted format: %v", err)
	}
	saved, err := os.ReadFile(marker)
	if err != nil {
		t.Fatal(err)
	}
	if h := head(t, f.file(id), 128<<10); !bytes.Contains(h, []byte{0xa5, 0xa5, 0xa5, 0xa5}) {
		t.Fatal("the killed mkfs left nothing behind: the test proves nothing")
	}

	// Without the marker, the same bytes are data: refused.
	if err := os.Rename(marker, marker+".away"); err != nil {
		t.Fatal(err)
	}
	err = f.stage(id, staging, fsCap("ext4"), attrs)
	wantCode(t, err, 9, "not an ext4 filesystem") // FailedPrecondition
	if err := os.Rename(marker+".away", marker); err != nil {
		t.Fatal(err)
	}

	// With it, but with the magic of something else written since (an
	// interrupted mkfs of ext4 leaves no such thing), still refused.
	// Both a whole header blkid knows and a bare magic that it does not
	// vouch for are refused.
	for _, m := range []struct {
		magic []byte
		off   int64
		named string
	}{{[]byte("LUKS\xba\xbe\x00\x01"), 0, "crypto_LUKS"}, {[]byte("XFSB"), 0, "holds xfs"}} {
		saved := headAt(t, f.file(id), m.off, len(m.magic))
		writeAt(t, f.file(id), m.magic, m.off)
		err = f.stage(id, staging, fsCap("ext4"), attrs)
		wantCode(t, err, 9, m.named)
		writeAt(t, f.file(id), saved, m.off)
	}

	// With it, the retry formats again and mounts.
	if err := f.stage(id, staging, fsCap("ext4"), attrs); err != nil {
		t.Fatalf("the retry after an interrupted format: %v", err)
	}
	if m := mountsAt(t, staging); len(m) != 1 || m[0].FSType != "ext4" {
		t.Fatalf("mounts at %s: %+v", staging, m)
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the marker outlived a finished format: %v", err)
	}
	data := filepath.Join(staging, "data")
	if err := os.WriteFile(data, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.unstage(id, staging); err != nil {
		t.Fatal(err)
	}

	// A marker left over (a crash after mkfs, before its removal) must not
	// format a whole filesystem again.
	if err := os.WriteFile(marker, saved, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.stage(id, staging, fsCap("ext4"), attrs); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(data); err != nil || string(b) != "keep me" {
		t.Fatalf("data after a stale marker: %q %v", b, err)
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the stale marker stayed: %v", err)
	}
}

func headAt(t *testing.T, file string, off int64, n int) []byte {
	t.Helper()
	return head(t, file, int(off)+n)[off:]
}

func writeAt(t *testing.T, file string, b []byte, off int64) {
	t.Helper()
	fd, err := os.OpenFile(file, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = fd.Close() }()
	if _, err := fd.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// attachThenDie attaches, then fails as an agent killed right after the
// connect would: nothing after the attach runs.
type attachThenDie struct{ *looptransport.Attacher }

func (a attachThenDie) Attach(ctx context.Context, t agent.Target) (agent.Device, error) {
	if _, err := a.Attacher.Attach(ctx, t); err != nil {
		return agent.Device{}, err
	}
	return agent.Device{}, errors.New("killed")
}

// The stage's record goes down before the first change on the host, so a
// stage interrupted after its connect leaves a record: the unstage that
// follows disconnects what the stage made instead of answering "never
// staged" and leaking it; a restarted agent does not heal such a volume
// (it was never handed to anyone) but unstages it all the same.
func TestAStageInterruptedAfterItsConnectIsUndoneByUnstage(t *testing.T) {
	for _, restart := range []bool{false, true} {
		name := "same agent"
		if restart {
			name = "restarted agent"
		}
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			opts := agent.Options{NodeID: "node-1", AttachTimeout: 10e9}
			if err := opts.Validate(); err != nil {
				t.Fatal(err)
			}
			sim := &looptransport.Attacher{Sim: f.disks}
			f.node = agent.New(opts, attachThenDie{sim}, agent.HostMounter{}, nil)
			id, attrs := f.volume("pvc-intent", 64*mib, nil, true)
			staging, _ := f.paths(id)
			if err := f.stage(id, staging, fsCap("ext4"), attrs); err == nil {
				t.Fatal("the interrupted stage succeeded")
			}
			if devs, _ := loop.Find(f.file(id)); len(devs) != 1 {
				t.Fatalf("the stage's connect left %v: the test proves nothing", devs)
			}
			if restart {
				f.node = agent.New(opts, sim, agent.HostMounter{}, nil)
				tr := &fakeTracker{tracked: map[string]heal.Volume{}, health: map[string]heal.Health{}}
				f.node.SetTracker(tr)
				vols, err := f.node.Resume(filepath.Join(f.dir, "kubelet"))
				if err != nil {
					t.Fatal(err)
				}
				if len(vols) != 0 || len(tr.tracked) != 0 {
					t.Fatalf("an interrupted stage was resumed as staged: %+v %+v", vols, tr.tracked)
				}
			}
			if err := f.unstage(id, staging); err != nil {
				t.Fatal(err)
			}
			if devs, _ := loop.Find(f.file(id)); len(devs) != 0 {
				t.Fatalf("the unstage left the volume attached: %v", devs)
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(staging), "rds-csi-"+id+".json")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("record after the unstage: %v", err)
			}
		})
	}
}

// The front of a volume whose NodeStage was interrupted and never retried
// or unstaged is the agent's own: the orphan sweep removes it when nothing
// uses it (it would otherwise hold the namespace and make the orphan's
// disconnect refuse for ever), and refuses while anything does.
func TestTheOrphanSweepRemovesOurOwnUnusedLeakedFront(t *testing.T) {
	for _, inUse := range []bool{false, true} {
		t.Run(map[bool]string{false: "unused", true: "in use"}[inUse], func(t *testing.T) {
			f := newMultipathFixture(t)
			f.mp.DevDir = t.TempDir() // where the front's node is: a file
			f.paths.appear(t, f.target.NQN, "nvme1n1", sysfs.DevT{Major: 259, Minor: 3}, true)
			f.sizes["nvme1n1"] = 64 << 20
			d := f.attach(t)
			if err := os.WriteFile(d.Path, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			holders := filepath.Join(f.paths.sys, "class", "block", filepath.Base(d.Path), "holders")
			if err := os.MkdirAll(holders, 0o755); err != nil {
				t.Fatal(err)
			}
			if inUse {
				if err := os.MkdirAll(filepath.Join(holders, "dm-9"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			opts := agent.Options{NodeID: "node-1", SysRoot: f.paths.sys, ProcRoot: t.TempDir()}
			if err := opts.Validate(); err != nil {
				t.Fatal(err)
			}
			node := agent.New(opts, f.mp, agent.HostMounter{}, nil)
			root := t.TempDir()
			sysfstest.AddController(t, root, sysfstest.Controller{Name: "nvme1", SubsysNQN: f.target.NQN})
			var disconnected []string
			disconnect := node.OrphanDisconnect(sysfs.Tree{Root: root}, func(_ context.Context, c string) error {
				disconnected = append(disconnected, c)
				return nil
			})
			f.calls()
			err := disconnect(context.Background(), "nvme1")
			calls := strings.Join(f.calls(), ";")
			if inUse {
				if err == nil || !strings.Contains(err.Error(), "dm-9") || len(disconnected) != 0 || strings.Contains(calls, "remove") {
					t.Fatalf("a front in use: err=%v disconnected=%v calls=%q", err, disconnected, calls)
				}
				return
			}
			if err != nil || len(disconnected) != 1 || calls != "remove "+f.name {
				t.Fatalf("the leaked front: err=%v disconnected=%v calls=%q", err, disconnected, calls)
			}
		})
	}
}

// A front whose making was interrupted after its table was loaded (not
// resumed) holds the namespace as the finished front would: NodeUnstage
// removes it rather than taking it for a user of the volume and refusing
// for ever.
func TestUnstageRemovesAHalfMadeFront(t *testing.T) {
	f := newMultipathFixture(t)
	f.paths.appear(t, f.target.NQN, "nvme1n1", sysfs.DevT{Major: 259, Minor: 3}, true)
	f.sizes["nvme1n1"] = 64 << 20
	node, staging := f.stagedNode(t, agent.Options{SysRoot: f.paths.sys, ProcRoot: t.TempDir()})
	// The agent is killed inside a re-creation of the front: the device is
	// there, its loaded table holds the namespace, nothing is live.
	front := f.mapper.front(f.name)
	front.dev.Live = false
	if err := os.MkdirAll(filepath.Join(f.paths.sys, "class", "block", "nvme1n1", "holders"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.paths.sys, "class", "block", "nvme1n1", "holders", fmt.Sprintf("dm-%d", front.dev.Minor)), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	f.calls()
	if _, err := node.NodeUnstageVolume(context.Background(), &csi.NodeUnstageVolumeRequest{VolumeId: f.target.VolumeID, StagingTargetPath: staging}); err != nil {
		t.Fatalf("unstage with a half-made front: %v", err)
	}
	if calls := strings.Join(f.calls(), ";"); !strings.HasPrefix(calls, "remove "+f.name) {
		t.Fatalf("device-mapper calls %q", calls)
	}
	if len(f.paths.detached) != 1 {
		t.Fatalf("detached %v", f.paths.detached)
	}
}
