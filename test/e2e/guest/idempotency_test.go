//go:build e2eguest

package guest

import (
	"path/filepath"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// parallel calls fn n times at once. Every call must succeed, or be
// refused with Aborted, the answer for an operation already in progress.
func parallel(t *testing.T, what string, n int, fn func() error) {
	t.Helper()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = fn() })
	}
	wg.Wait()
	ok, aborted := 0, 0
	for _, err := range errs {
		switch status.Code(err) {
		case codes.OK:
			ok++
		case codes.Aborted:
			aborted++
		default:
			t.Fatalf("parallel %s: %v", what, err)
		}
	}
	t.Logf("parallel %s: %d succeeded, %d aborted", what, ok, aborted)
}

// TestIdempotency repeats every node call, in a row and at once, as a CO
// does after a timeout or a restart: the result must be one connection and
// one mount per path.
func TestIdempotency(t *testing.T) {
	for _, fsType := range []string{"ext4", "block"} {
		t.Run(fsType, func(t *testing.T) {
			f := newFixture(t)
			v := f.create("idem-"+fsType, fsType, 64<<20)

			parallel(t, "NodeStage", 4, func() error { return f.stage(v) })
			// A CO retries an aborted call until it succeeds.
			must(t, "NodeStage after the parallel ones", f.stage(v))
			must(t, "NodeStage repeated", f.stage(v))
			wantStaged := 1
			if fsType == "block" {
				wantStaged = 0 // a block volume is only attached at stage
			}
			if n := mountsAt(t, v.staging); n != wantStaged {
				t.Fatalf("%d mounts at the staging path, want %d", n, wantStaged)
			}
			if c := controllersOf(t, v.nqn); len(c) != 1 {
				t.Fatalf("controllers of the volume: %v, want exactly one", c)
			}

			parallel(t, "NodePublish", 4, func() error { return f.publish(v) })
			must(t, "NodePublish after the parallel ones", f.publish(v))
			must(t, "NodePublish repeated", f.publish(v))
			if n := mountsAt(t, v.target); n != 1 {
				t.Fatalf("%d mounts at the target path, want 1", n)
			}

			p := newPayload(t, 1<<20)
			if fsType == "block" {
				p.writeAt(t, v.target, 0)
				p.checkAt(t, "after repeated publishes", v.target, 0)
			} else {
				p.writeFile(t, filepath.Join(v.target, "data"))
				p.checkFile(t, "after repeated publishes", filepath.Join(v.target, "data"))
			}

			parallel(t, "NodeUnpublish", 4, func() error { return f.unpublish(v) })
			must(t, "NodeUnpublish after the parallel ones", f.unpublish(v))
			if n := mountsAt(t, v.target); n != 0 {
				t.Fatalf("%d mounts left at the target path", n)
			}
			if fsType == "block" {
				p.checkAt(t, "after unpublish", device(t, v.nqn), 0)
			} else {
				p.checkFile(t, "after unpublish", filepath.Join(v.staging, "data"))
			}
			parallel(t, "NodeUnstage", 4, func() error { return f.unstage(v) })
			must(t, "NodeUnstage after the parallel ones", f.unstage(v))
			if n := mountsAt(t, v.staging); n != 0 {
				t.Fatalf("%d mounts left at the staging path", n)
			}
			must(t, "DeleteVolume", f.delete(v))
			must(t, "DeleteVolume repeated", f.delete(v))
			f.assertGone(t, v)
		})
	}
}
