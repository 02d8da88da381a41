package rotation

import (
	"context"
	"errors"
	"sync"
	"time"
)

// DefaultFinishWithin is Config.FinishWithin when unset: how long the
// background completion of a rotation answered early may take before it
// gives up and leaves the rest to recovery.
const DefaultFinishWithin = time.Minute

// finishDetached runs the rest of a saga answered early (from the
// activation on) in the background, on a context the caller's cancellation
// does not reach, bounded by FinishWithin and cut by Close. It returns false,
// starting nothing, once the rotator is closed: the caller then finishes the
// saga before answering. A crash or an error here leaves an unfinished
// journal entry, which the next Recover completes; being forward-only, no
// executor undoes it.
func (r *Rotator) finishDetached(ctx context.Context, s *saga) bool {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return false
	}
	if r.running == 0 {
		r.idle = make(chan struct{})
	}
	r.running++
	r.mu.Unlock()
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.opts.FinishWithin)
	stop := context.AfterFunc(r.base, cancel)
	go func() {
		defer r.finished()
		defer cancel()
		defer stop()
		if err := s.run(bctx, StepActivateKey); err != nil {
			r.log.Warn("rotation answered early stopped part-way; recovery will finish it (the new key stays live)",
				"key", s.e.OldKeyID, "rotation", s.e.ID, "new_key", s.e.NewKeyID, "err", err)
		}
	}()
	return true
}

func (r *Rotator) finished() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.running--
	if r.running == 0 {
		close(r.idle)
	}
}

// Wait blocks until no rotation this rotator answered early is still
// finishing in the background, or ctx ends (its error is returned).
func (r *Rotator) Wait(ctx context.Context) error {
	r.mu.Lock()
	if r.running == 0 {
		r.mu.Unlock()
		return nil
	}
	idle := r.idle
	r.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close lets the rotations answered early finish, until ctx ends; then it
// stops those still running (recovery completes them), waits for them to
// return and gives ctx's error. Rotate still works after Close, answering
// only once a rotation is done.
func (r *Rotator) Close(ctx context.Context) error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	err := r.Wait(ctx)
	if err != nil {
		r.stop()
		_ = r.Wait(context.WithoutCancel(ctx))
	}
	return err
}

// together runs fns concurrently and waits for all of them: reads that do
// not depend on one another cost one round trip of latency.
func together(ctx context.Context, fns ...func(context.Context) error) error {
	errs := make([]error, len(fns))
	var wg sync.WaitGroup
	for i, fn := range fns[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i+1] = fn(ctx)
		}()
	}
	errs[0] = fns[0](ctx)
	wg.Wait()
	return errors.Join(errs...)
}
