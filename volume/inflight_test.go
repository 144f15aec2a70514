package volume

import (
	"sync"
	"sync/atomic"
	"testing"
)

func TestInFlightRefusesASecondHolderUntilReleased(t *testing.T) {
	var f InFlight
	release, ok := f.TryAcquire("vol-a")
	if !ok {
		t.Fatal("first acquire refused")
	}
	if _, ok := f.TryAcquire("vol-a"); ok {
		t.Fatal("second acquire of a busy key succeeded")
	}
	if r, ok := f.TryAcquire("vol-b"); !ok {
		t.Fatal("another key was refused")
	} else {
		r()
	}
	release()
	if r, ok := f.TryAcquire("vol-a"); !ok {
		t.Fatal("acquire after release refused")
	} else {
		r()
	}
}

func TestInFlightAdmitsExactlyOneOfManyConcurrentCallers(t *testing.T) {
	var f InFlight
	var admitted atomic.Int32
	var tries sync.WaitGroup
	releases := make(chan func(), 50)
	start := make(chan struct{})
	for range 50 {
		tries.Add(1)
		go func() {
			defer tries.Done()
			<-start
			if release, ok := f.TryAcquire("vol"); ok {
				admitted.Add(1)
				releases <- release
			}
		}()
	}
	close(start)
	tries.Wait() // nobody releases before every caller has tried
	close(releases)
	for release := range releases {
		release()
	}
	if n := admitted.Load(); n != 1 {
		t.Fatalf("%d callers admitted at once, want 1", n)
	}
}
