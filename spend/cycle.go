package spend

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"sync"
)

// Cycle is one check cycle's memo of upstream answers: calls with the same
// id made while the cycle lasts share one request and its outcome,
// singleflight-style, whether they run at once or one after another. So an
// account whose keys all report the one balance is asked once per cycle,
// not once per key, and a batch report (one call, many keys) is fetched
// once per cycle. The checker begins one per cycle and passes it in the
// context (WithCycle); providers reach it with CycleFrom, or through
// Shared. Outside a cycle (no Cycle in the context) every call runs.
//
// What is shared must not carry one key's secret to another key's log
// line: callers redact their own secret from errors before returning them
// (secret.Redact). A Cycle holds its answers until it is dropped; begin a new one
// per cycle.
type Cycle struct {
	mu    sync.Mutex
	calls map[string]*cycleCall
}

type cycleCall struct {
	done chan struct{}
	v    any
	err  error
}

// BeginCycle starts an empty memo for one check cycle.
func BeginCycle() *Cycle { return &Cycle{calls: map[string]*cycleCall{}} }

type cycleKey struct{}

// WithCycle returns ctx carrying cyc, for the providers the cycle calls.
func WithCycle(ctx context.Context, cyc *Cycle) context.Context {
	return context.WithValue(ctx, cycleKey{}, cyc)
}

// CycleFrom returns the cycle ctx carries, or nil.
func CycleFrom(ctx context.Context) *Cycle {
	cyc, _ := ctx.Value(cycleKey{}).(*Cycle)
	return cyc
}

// Shared runs fn once per id in the cycle ctx carries and hands its result
// to every caller with that id, its error included (a batch report asked
// with one admin credential for every key); without a cycle it just runs fn.
// A caller whose ctx ends while another runs fn gets ctx's error; a call that
// failed because its own context ended is not kept, so the next caller runs
// again.
func Shared[T any](ctx context.Context, id string, fn func(context.Context) (T, error)) (T, error) {
	return share(ctx, id, fn, true)
}

// SharedSuccess is Shared for answers asked with one key's own credential
// (an account's balance): only a successful answer is shared. An error — a
// 401/403, an exhausted refusal, an unclear or failed answer — is about the
// key that was sent, so a caller that finds one asks again with its own key.
func SharedSuccess[T any](ctx context.Context, id string, fn func(context.Context) (T, error)) (T, error) {
	return share(ctx, id, fn, false)
}

// share is Shared (keepErrors) and SharedSuccess (not).
func share[T any](ctx context.Context, id string, fn func(context.Context) (T, error), keepErrors bool) (T, error) {
	cyc := CycleFrom(ctx)
	if cyc == nil {
		return fn(ctx)
	}
	for {
		cyc.mu.Lock()
		c, ok := cyc.calls[id]
		if !ok {
			c = &cycleCall{done: make(chan struct{})}
			cyc.calls[id] = c
			cyc.mu.Unlock()
			v, err := fn(ctx)
			c.v, c.err = v, err
			ownCancel := ctx.Err() != nil && errors.Is(err, ctx.Err())
			if err != nil && (!keepErrors || ownCancel) {
				cyc.mu.Lock()
				delete(cyc.calls, id)
				cyc.mu.Unlock()
			}
			close(c.done)
			return v, err
		}
		cyc.mu.Unlock()
		select {
		case <-c.done:
		case <-ctx.Done():
			var zero T
			return zero, ctx.Err()
		}
		if c.err != nil && !keepErrors {
			// Not shared: ask with this caller's own key.
			return fn(ctx)
		}
		cyc.mu.Lock()
		dropped := cyc.calls[id] != c
		cyc.mu.Unlock()
		if dropped && ctx.Err() == nil {
			// The caller that ran it was cancelled: run it again.
			continue
		}
		v, _ := c.v.(T)
		return v, c.err
	}
}

// accountID is the id under which an account's answer is shared in a
// cycle: the provider, its base URL, the pool and the account label, or a
// hash of the secret when the key has none (it is then its own account).
// Labels are the operator's names, per pool: two pools that both call an
// account "main" are not taken for one.
func accountID(provider, base string, k Key) string {
	if k.Account != "" {
		return provider + "\x00" + base + "\x00pool\x00" + k.Pool + "\x00account\x00" + k.Account
	}
	h := sha256.Sum256([]byte(k.Secret))
	return provider + "\x00" + base + "\x00key\x00" + hex.EncodeToString(h[:])
}
