//go:build e2eguest

package guest

import (
	"path/filepath"
	"testing"
)

// TestLifecycle takes a volume of each kind through its whole life as a CO
// drives it, checking the data after every step, and checks that nothing
// of it is left afterwards.
func TestLifecycle(t *testing.T) {
	for _, kind := range []struct {
		fsType string
		size   int64
	}{
		{"ext4", 64 << 20},
		{"xfs", 320 << 20}, // mkfs.xfs refuses filesystems under 300 MB
		{"block", 64 << 20},
	} {
		t.Run(kind.fsType, func(t *testing.T) {
			f := newFixture(t)
			v := f.create("lifecycle-"+kind.fsType, kind.fsType, kind.size)
			t.Logf("volume %s: %s", v.id, v.nqn)
			// ControllerPublish is skipped: fencing (target-side host
			// access control) is not implemented yet.
			must(t, "NodeStage", f.stage(v))
			dev := device(t, v.nqn)
			t.Logf("staged on %s by controllers %v", dev, controllersOf(t, v.nqn))
			must(t, "NodePublish", f.publish(v))

			p := newPayload(t, 4<<20)
			const off = 8 << 20
			write, check := func(path string) { p.writeFile(t, filepath.Join(path, "data")) },
				func(step, path string) { p.checkFile(t, step, filepath.Join(path, "data")) }
			if kind.fsType == "block" {
				write = func(path string) { p.writeAt(t, path, off) }
				check = func(step, path string) { p.checkAt(t, step, path, off) }
			}
			write(v.target)
			check("after write, through the target", v.target)
			if kind.fsType == "block" {
				check("after write, through the device", dev)
			} else {
				check("after write, through the staging path", v.staging)
			}

			must(t, "NodeUnpublish", f.unpublish(v))
			if kind.fsType == "block" {
				check("after unpublish", dev)
			} else {
				check("after unpublish", v.staging)
			}
			must(t, "NodeUnstage", f.unstage(v))
			if c := controllersOf(t, v.nqn); len(c) != 0 {
				t.Fatalf("after NodeUnstage the volume is still connected: %v", c)
			}

			// Staged again, the volume must come back with its data: a
			// filesystem volume carries createdBlank=true, so this also
			// proves that a volume with a filesystem is never formatted.
			must(t, "NodeStage again", f.stage(v))
			if kind.fsType == "block" {
				check("after staging again", device(t, v.nqn))
			} else {
				check("after staging again", v.staging)
			}
			must(t, "NodeUnstage again", f.unstage(v))
			must(t, "DeleteVolume", f.delete(v))
			f.assertGone(t, v)
		})
	}
}
