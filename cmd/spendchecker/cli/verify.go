package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spendchecker/spendchecker/notify"
)

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
	if err := a.verifyClaims(ctx, out); err != nil && failed == nil {
		failed = err
	}
	if n, err := a.verifyKeylife(ctx, out); err != nil && failed == nil {
		failed = partial("%w", err)
	} else if n > 0 && failed == nil {
		failed = &ExitError{Code: ExitPartial}
	}
	return failed
}

// verifyClaims names the notification claims left `claimed` past their
// deadline: the owner stopped (killed, or cut off from the store) before
// recording an outcome, so the event may never have been sent, and no
// other replica resends it (docs/operating.md, "Notifications").
func (a *app) verifyClaims(ctx context.Context, out io.Writer) error {
	now := time.Now()
	stale, err := notify.StaleClaims(ctx, a.db.Collection(notify.Collection), now)
	for _, c := range stale {
		fmt.Fprintf(out, "notifications: claim %s (%s, pool %s, format %s) taken by %s at %s is still claimed %s past its deadline: the event may never have been sent\n",
			c.ID, c.Kind, c.Pool, c.Format, c.Instance, c.ClaimedAt.UTC().Format(time.RFC3339), c.Overdue(now).Round(time.Second))
	}
	switch {
	case err != nil:
		return partial("notifications: %w", err)
	case len(stale) > 0:
		return &ExitError{Code: ExitPartial}
	}
	return nil
}
