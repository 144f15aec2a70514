package deadline

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestRunReturnsTheResultOfAQuickCall(t *testing.T) {
	got, err := Run(t.Context(), "quick", func() (int, error) { return 7, nil })
	if err != nil || got != 7 {
		t.Fatalf("got %d, %v; want 7, nil", got, err)
	}
}

func TestRunGivesUpOnAStuckCallAtTheDeadline(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err := Run(ctx, "stuck", func() (int, error) { <-release; return 0, nil })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v does not wrap context.DeadlineExceeded", err)
	}
}

func TestRunDoesNotStartAfterTheContextEnded(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	called := false
	_, err := Run(ctx, "late", func() (int, error) { called = true; return 0, nil })
	if !errors.Is(err, context.Canceled) || called {
		t.Fatalf("err %v, called %v; want context.Canceled and no call", err, called)
	}
}
