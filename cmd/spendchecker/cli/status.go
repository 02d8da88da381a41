package cli

import (
	"context"
	"encoding/json"
	"io"

	"github.com/spendchecker/spendchecker/rotation"
	"github.com/spendchecker/spendchecker/statuspage"
)

// status prints a table of keys, backups left and the lease holder, read
// through the same statuspage.Source as the page at / (docs/operating.md, "Status page").
func (a *app) status(ctx context.Context, out io.Writer) error {
	snap := a.statusSource().Read(ctx)
	if a.cfg.Output == "json" {
		if err := writeJSON(out, snap); err != nil {
			return err
		}
	} else {
		statuspage.WriteText(out, snap)
	}
	switch {
	case snap.Store != nil:
		return partial("status: %s", snap.Errors[0]) // the store is unreachable: said once
	case len(snap.Errors) > 0:
		return partial("status: %d part(s) could not be read: %s", len(snap.Errors), snap.Errors[0])
	}
	return nil
}

// writeJSON writes v as indented JSON, all or nothing: a value that cannot
// be encoded is exit 1 with one line, never empty output with exit 0.
func writeJSON(out io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return partial("cannot write the output as JSON: %w", err)
	}
	_, err = out.Write(append(b, '\n'))
	return err
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
