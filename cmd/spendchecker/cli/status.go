package cli

import (
	"context"
	"io"
	"log/slog"
	"time"

	"github.com/spendchecker/spendchecker/rotation"
	"github.com/spendchecker/spendchecker/statuspage"
)

// status prints a table of keys, backups left and the lease holder, read
// through the same statuspage.Source as the page at / (docs/operating.md,
// "Status page"), as it reads.
func (a *app) status(ctx context.Context, out io.Writer) error {
	// Streamed: one key at a time is held, at any pool size.
	var snap *statuspage.Snapshot
	if a.cfg.Output == "json" {
		jw := statuspage.NewJSONWriter(out)
		snap = a.statusSource().Visit(ctx, jw)
		if err := jw.Err(); err != nil {
			return partial("%w", err)
		}
	} else {
		snap = a.statusSource().Visit(ctx, statuspage.NewTextWriter(out))
	}
	switch {
	case snap.Store != nil:
		return partial("status: %s", snap.Errors[0]) // the store is unreachable: said once
	case len(snap.Errors) > 0:
		return partial("status: %d part(s) could not be read: %s", len(snap.Errors), snap.Errors[0])
	}
	return nil
}

// statusSource is what status and the status page read.
func (a *app) statusSource() statuspage.Source {
	var pools []statuspage.Pool
	for i, r := range a.chk.Rotators() {
		p := r.Pool()
		sp := statuspage.Pool{Name: p.Name, Keys: a.db.Collection(p.KeysCollection),
			History: a.db.Collection(p.HistoryCollection), Threshold: a.cfg.Pools[i].Threshold,
			MinRemaining: a.cfg.Pools[i].BalanceMinimum(), Backups: r}
		if ub, _ := rotation.ParseUserBudget(a.cfg.Pools[i].UserBudget); ub == rotation.UserBudgetAuto {
			// Shared users hold their keys only under auto.
			sp.Users = r
		}
		pools = append(pools, sp)
	}
	return statuspage.Source{Pools: pools, Leases: a.leases, LeaseName: a.cfg.LeaseName}
}

// statusSummaries is the daemon's page summary: the status read with the
// recent rotations, this replica's cycles and the store's reachability.
func (a *app) statusSummaries() *statuspage.Summaries {
	src := a.statusSource()
	src.Cycles, src.Rotations, src.Reachability = a.cycles, statusRotations, a.reach
	return &statuspage.Summaries{Source: src, Every: max(a.cfg.Interval, 30*time.Second)}
}

// summarise reads the page's summary while the page is looked at: at
// once when it is asked for after a quiet spell, then after each cycle
// (due) and at least every interval (a standby runs no cycle). Nobody
// looking, nothing is read. Until ctx ends.
func (a *app) summarise(ctx context.Context, m *statuspage.Summaries, due <-chan struct{}) {
	first := true
	for m.Wait(ctx, due) {
		// How many cycles had ended when this read began (of the last few).
		ended, start := len(a.cycles.Recent()), time.Now()
		if m.Refresh(ctx) {
			// The first read is when the page starts showing the pool (over a
			// minute at 100,000 keys on the embedded store): said at info.
			level := slog.LevelDebug
			if first {
				level, first = slog.LevelInfo, false
			}
			a.log.Log(ctx, level, "status summary read", "cycles", ended, "took", time.Since(start).Round(time.Millisecond).String())
		}
	}
}
