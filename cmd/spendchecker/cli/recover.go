package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
)

// recoverAll completes or undoes every unfinished rotation of every pool.
func (a *app) recoverAll(ctx context.Context, out io.Writer) error {
	if err := a.prepare(ctx); err != nil {
		return partial("%w", err)
	}
	if a.cfg.DryRun {
		return a.recoverPreview(ctx, out)
	}
	var failed []string
	for _, r := range a.chk.Rotators() {
		rep, err := r.Recover(ctx)
		fmt.Fprintf(out, "pool %s: completed %d, dropped %d, failed %d, late inserts removed %d, repaired %d\n",
			r.Pool().Name, rep.Completed, rep.Dropped, rep.Failed, rep.Removed, rep.Repaired)
		if err != nil {
			failed = append(failed, fmt.Sprintf("pool %s: %v", r.Pool().Name, err))
		}
	}
	if len(failed) > 0 {
		return partial("recover: %s", strings.Join(failed, "; "))
	}
	return nil
}

// recoverPreview is recover --dry-run: Recover has no read-only mode, so it
// prints what verify finds (it only reads) — among it every unfinished
// rotation a real run would complete or undo — and writes nothing.
func (a *app) recoverPreview(ctx context.Context, out io.Writer) error {
	var failed []string
	for _, r := range a.chk.Rotators() {
		problems, err := r.Verify(ctx)
		if err != nil {
			failed = append(failed, fmt.Sprintf("pool %s: %v", r.Pool().Name, err))
			continue
		}
		if len(problems) == 0 {
			fmt.Fprintf(out, "pool %s: nothing to recover (dry run)\n", r.Pool().Name)
		}
		for _, p := range problems {
			fmt.Fprintf(out, "pool %s: would recover (dry run): %s\n", r.Pool().Name, p)
		}
	}
	if len(failed) > 0 {
		return partial("recover: %s", strings.Join(failed, "; "))
	}
	return nil
}
