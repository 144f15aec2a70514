//go:build e2eguest

package guest

import (
	"path/filepath"
	"testing"
	"time"
)

// TestRenumbering checks that the agent finds a volume by subsystem NQN and
// namespace ID, not by name: controller, subsystem and namespace numbers are
// handed out first come, first served, so a volume that reconnects after
// something else connected gets other names.
func TestRenumbering(t *testing.T) {
	t.Run("after unstage", func(t *testing.T) {
		f := newFixture(t)
		v := f.create("renumber-unstaged", "ext4", 64<<20)
		must(t, "NodeStage", f.stage(v))
		first := device(t, v.nqn)
		t.Logf("first stage: %s via %v", first, controllersOf(t, v.nqn))
		p := newPayload(t, 2<<20)
		p.writeFile(t, filepath.Join(v.staging, "data"))
		must(t, "NodeUnstage", f.unstage(v))

		// Another subsystem connects meanwhile and takes the numbers the
		// volume had.
		fr := connectForeign(t, "shift-a", 4491)
		must(t, "NodeStage after the shift", f.stage(v))
		second := device(t, v.nqn)
		t.Logf("second stage: %s via %v; the foreign subsystem holds %s", second, controllersOf(t, v.nqn), device(t, fr.nqn))
		if second == first {
			t.Fatalf("the volume got %s again: the foreign connection did not shift the numbers, so this proves nothing", first)
		}
		p.checkFile(t, "renamed device", filepath.Join(v.staging, "data"))
		must(t, "NodePublish", f.publish(v))
		p.checkFile(t, "published", filepath.Join(v.target, "data"))
		must(t, "NodeUnpublish", f.unpublish(v))
		must(t, "NodeUnstage", f.unstage(v))
		fr.assertLive(t)
		must(t, "DeleteVolume", f.delete(v))
		f.assertGone(t, v)
	})

	t.Run("controller deleted behind the agent", func(t *testing.T) {
		f := newFixture(t)
		v := f.create("renumber-deleted", "block", 64<<20)
		must(t, "NodeStage", f.stage(v))
		first := device(t, v.nqn)
		ctrls := controllersOf(t, v.nqn)
		t.Logf("first stage: %s via %v", first, ctrls)
		p := newPayload(t, 1<<20)
		const off = 1 << 20
		p.writeAt(t, first, off)

		// Someone else (an admin, nvme-cli) disconnects the volume...
		for _, c := range ctrls {
			must(t, "deleting controller "+c, sysTree.DeleteController(ctrlName(c)))
		}
		waitFor(t, "the volume's controllers are gone", 60*time.Second, func() bool { return len(controllersOf(t, v.nqn)) == 0 })
		// ...and another connection takes its numbers before the CO
		// retries NodeStage.
		fr := connectForeign(t, "shift-b", 4492)
		must(t, "NodeStage again", f.stage(v))
		second := device(t, v.nqn)
		t.Logf("second stage: %s via %v; the foreign subsystem holds %s", second, controllersOf(t, v.nqn), device(t, fr.nqn))
		if second == first {
			t.Fatalf("the volume got %s again: the foreign connection did not shift the numbers, so this proves nothing", first)
		}
		p.checkAt(t, "renamed device", second, off)
		must(t, "NodePublish", f.publish(v))
		p.checkAt(t, "published", v.target, off)
		must(t, "NodeUnpublish", f.unpublish(v))
		must(t, "NodeUnstage", f.unstage(v))
		fr.assertLive(t)
		must(t, "DeleteVolume", f.delete(v))
		f.assertGone(t, v)
	})
}
