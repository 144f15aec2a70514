package volume

import "sync"

// InFlight refuses a second operation on a key (a volume ID or name) while
// one runs. CSI sidecars retry, so the caller answers Aborted instead of
// queueing work that would race the first call.
type InFlight struct {
	mu   sync.Mutex
	keys map[string]struct{}
}

// TryAcquire marks key busy and returns a release function, or returns false
// when key is busy already.
func (f *InFlight) TryAcquire(key string) (release func(), ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.keys == nil {
		f.keys = make(map[string]struct{})
	}
	if _, busy := f.keys[key]; busy {
		return nil, false
	}
	f.keys[key] = struct{}{}
	return func() {
		f.mu.Lock()
		delete(f.keys, key)
		f.mu.Unlock()
	}, true
}
