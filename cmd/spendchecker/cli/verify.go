package cli

import (
	"context"
	"fmt"
	"io"
)

func verifyCommand(_ *Config, p *program) spec {
	return spec{
		name:  "verify",
		usage: "spendchecker verify [FLAGS]",
		short: "check the invariants and the schema (orphan bindings, stranded claims, TTL on history, indexes); exit 1 when something is wrong",
		store: true,
		exec:  p.withApp(func(ctx context.Context, a *app) error { return a.verify(ctx, p.env.Stdout) }),
	}
}

// verify checks the invariants and the schema of every pool; problems are
// its result (stdout), and exit 1.
func (a *app) verify(ctx context.Context, out io.Writer) error {
	var failed error
	for _, r := range a.chk.Rotators() {
		probs, err := r.Verify(ctx)
		if err != nil {
			failed = partial("pool %s: %w", r.Pool().Name, err)
			continue
		}
		if len(probs) == 0 {
			fmt.Fprintf(out, "pool %s: ok\n", r.Pool().Name)
			continue
		}
		if failed == nil {
			failed = &ExitError{Code: ExitPartial}
		}
		for _, p := range probs {
			fmt.Fprintf(out, "pool %s: %s\n", r.Pool().Name, p)
		}
	}
	return failed
}
