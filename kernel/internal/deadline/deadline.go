// Package deadline bounds host calls that cannot be interrupted.
//
// A syscall stuck on hung storage (a read from a disconnected NVMe namespace,
// a mount, a statfs on a dead filesystem) cannot be cancelled from Go. Run
// therefore runs it on its own goroutine and stops waiting when the context
// ends. The goroutine stays blocked in the kernel until the call returns, so
// the function passed in must release whatever it acquires by itself, and a
// caller that gave up must not assume the call did not happen.
package deadline

import (
	"context"
	"fmt"
)

// Run calls fn and returns its result, or returns at ctx's end with an error
// wrapping ctx.Err() that names what was abandoned.
func Run[T any](ctx context.Context, what string, fn func() (T, error)) (T, error) {
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, fmt.Errorf("%s: not started: %w", what, err)
	}
	type result struct {
		value T
		err   error
	}
	done := make(chan result, 1) // buffered: an abandoned call must still be able to finish
	go func() {
		v, err := fn()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.value, r.err
	case <-ctx.Done():
		return zero, fmt.Errorf("%s: gave up waiting, the call may still complete in the kernel: %w", what, ctx.Err())
	}
}
