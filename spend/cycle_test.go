package spend_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/spendchecker/spendchecker/spend"
)

func TestCycleShared(t *testing.T) {
	var runs atomic.Int64
	release := make(chan struct{})
	fn := func(context.Context) (int, error) {
		runs.Add(1)
		<-release
		return 7, nil
	}
	ctx := spend.WithCycle(context.Background(), spend.BeginCycle())
	var wg sync.WaitGroup
	started := make(chan struct{}, 20)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			started <- struct{}{}
			if v, err := spend.Shared(ctx, "acct", fn); v != 7 || err != nil {
				t.Errorf("got %d, %v", v, err)
			}
		}()
	}
	for range 20 {
		<-started
	}
	close(release)
	wg.Wait()
	if v, _ := spend.Shared(ctx, "acct", fn); v != 7 || runs.Load() != 1 {
		t.Fatalf("ran %d times for one id in one cycle, want 1", runs.Load())
	}
	if _, _ = spend.Shared(ctx, "other", fn); runs.Load() != 2 {
		t.Fatalf("another id: ran %d times in all, want 2", runs.Load())
	}
	// Outside a cycle every call runs.
	_, _ = spend.Shared(context.Background(), "acct", fn)
	_, _ = spend.Shared(context.Background(), "acct", fn)
	if runs.Load() != 4 {
		t.Fatalf("without a cycle: ran %d times in all, want 4", runs.Load())
	}
}

// A call that failed because its caller's context ended is not kept: the
// next caller of the cycle runs it again.
func TestCycleCancelledCallNotKept(t *testing.T) {
	cyc := spend.BeginCycle()
	cctx, cancel := context.WithCancel(spend.WithCycle(context.Background(), cyc))
	cancel()
	_, err := spend.Shared(cctx, "acct", func(ctx context.Context) (int, error) { return 0, ctx.Err() })
	if !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	v, err := spend.Shared(spend.WithCycle(context.Background(), cyc), "acct", func(context.Context) (int, error) { return 3, nil })
	if v != 3 || err != nil {
		t.Fatalf("got %d, %v; want the call run again", v, err)
	}
}
