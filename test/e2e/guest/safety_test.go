//go:build e2eguest

package guest

import (
	"maps"
	"path/filepath"
	"strconv"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rds-csi/rds-csi/volume"
)

// TestSafety covers what must never happen to data: formatting a volume
// that holds some, disconnecting a device still in use, touching a
// connection the agent does not manage. A foreign subsystem stays connected
// through all of it.
func TestSafety(t *testing.T) {
	fr := connectForeign(t, "bystander", 4493)

	t.Run("raw data is never formatted", func(t *testing.T) {
		f := newFixture(t)
		v := f.create("safety-raw", "block", 64<<20)
		must(t, "NodeStage as block", f.stage(v))
		// Data where a filesystem's superblock would go, but no
		// filesystem: the volume is not blank, whatever the volume
		// context says.
		p := newPayload(t, 2<<20)
		p.writeAt(t, device(t, v.nqn), 0)
		must(t, "NodeUnstage", f.unstage(v))

		asExt4 := *v
		asExt4.cap = mountCap("ext4")
		if asExt4.context[volume.KeyCreatedBlank] != "true" {
			t.Fatalf("the volume context lacks %s=true: %v", volume.KeyCreatedBlank, asExt4.context)
		}
		err := f.stage(&asExt4)
		t.Logf("NodeStage as ext4 of a volume with raw data: %v", err)
		if status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("NodeStage as ext4 of a volume holding raw data: %v, want FailedPrecondition", err)
		}
		if n := mountsAt(t, v.staging); n != 0 {
			t.Fatalf("%d mounts at the staging path after the refused stage", n)
		}
		must(t, "NodeUnstage after the refusal", f.unstage(&asExt4))
		must(t, "NodeStage as block again", f.stage(v))
		p.checkAt(t, "after the refused format", device(t, v.nqn), 0)
		must(t, "NodeUnstage", f.unstage(v))
		must(t, "DeleteVolume", f.delete(v))
		f.assertGone(t, v)
	})

	t.Run("a filesystem is never formatted over", func(t *testing.T) {
		f := newFixture(t)
		v := f.create("safety-xfs", "xfs", 320<<20)
		must(t, "NodeStage as xfs", f.stage(v))
		p := newPayload(t, 2<<20)
		p.writeFile(t, filepath.Join(v.staging, "data"))
		must(t, "NodeUnstage", f.unstage(v))

		asExt4 := *v
		asExt4.cap = mountCap("ext4")
		err := f.stage(&asExt4)
		t.Logf("NodeStage as ext4 of an xfs volume: %v", err)
		if status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("NodeStage as ext4 of an xfs volume: %v, want FailedPrecondition", err)
		}
		must(t, "NodeUnstage after the refusal", f.unstage(&asExt4))
		must(t, "NodeStage as xfs again", f.stage(v))
		p.checkFile(t, "after the refused format", filepath.Join(v.staging, "data"))
		must(t, "NodeUnstage", f.unstage(v))
		must(t, "DeleteVolume", f.delete(v))
		f.assertGone(t, v)
	})

	t.Run("unstage refuses while the device is in use", func(t *testing.T) {
		f := newFixture(t)
		blk := f.create("safety-busy-block", "block", 64<<20)
		must(t, "NodeStage block", f.stage(blk))
		dev := device(t, blk.nqn)
		p := newPayload(t, 1<<20)
		p.writeAt(t, dev, 0)
		release := holdOpen(t, dev)
		err := f.unstage(blk)
		t.Logf("NodeUnstage while a process holds %s: %v", dev, err)
		if status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("NodeUnstage while %s is open: %v, want FailedPrecondition", dev, err)
		}
		if c := controllersOf(t, blk.nqn); len(c) == 0 {
			t.Fatal("the refused NodeUnstage disconnected the volume anyway")
		}
		p.checkAt(t, "after the refused unstage", dev, 0)
		release()
		must(t, "NodeUnstage once released", f.unstage(blk))

		fsv := f.create("safety-busy-fs", "ext4", 64<<20)
		must(t, "NodeStage ext4", f.stage(fsv))
		must(t, "NodePublish ext4", f.publish(fsv))
		p.writeFile(t, filepath.Join(fsv.target, "data"))
		// A CO that unstages before unpublishing: the bind mount still
		// uses the filesystem.
		err = f.unstage(fsv)
		t.Logf("NodeUnstage while published: %v", err)
		if status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("NodeUnstage while published: %v, want FailedPrecondition", err)
		}
		p.checkFile(t, "after the refused unstage", filepath.Join(fsv.target, "data"))
		must(t, "NodeUnpublish", f.unpublish(fsv))
		must(t, "NodeUnstage", f.unstage(fsv))
		for _, v := range []*vol{blk, fsv} {
			must(t, "DeleteVolume", f.delete(v))
			f.assertGone(t, v)
		}
	})

	t.Run("unmanaged subsystems are refused", func(t *testing.T) {
		f := newFixture(t)
		v := f.create("safety-foreign", "ext4", 64<<20)
		other := *v
		other.context = maps.Clone(v.context)
		other.context[volume.KeyNQN] = fr.nqn
		other.context[volume.KeyPort] = strconv.Itoa(fr.port)
		err := f.stage(&other)
		t.Logf("NodeStage of %s: %v", fr.nqn, err)
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("NodeStage of an unmanaged NQN: %v, want InvalidArgument", err)
		}
		must(t, "NodeUnstage of the refused volume", f.unstage(&other))
		fr.assertLive(t)
		must(t, "DeleteVolume", f.delete(v))
		f.assertGone(t, v)
	})

	fr.assertLive(t)
}
