package cli

import (
	"context"
	"fmt"
	"io"
	"math"
	"text/tabwriter"
	"time"

	"github.com/spendchecker/spendchecker/cmd/spendchecker/config"
	"github.com/spendchecker/spendchecker/rotation/history"
	"github.com/spendchecker/spendchecker/statuspage"
)

// history prints the rotations since --since, every pool's.
func (a *app) history(ctx context.Context, out io.Writer) error {
	since, _ := config.ParseSince(a.cfg.Since, time.Now())
	all := []history.Record{} // JSON: [] when there is none, never null
	for _, r := range a.chk.Rotators() {
		recs, err := history.NewStore(a.db.Collection(r.Pool().HistoryCollection)).Since(ctx, since)
		if err != nil {
			return partial("pool %s: %w", r.Pool().Name, err)
		}
		for _, h := range recs {
			h.Pool = r.Pool().Name
			all = append(all, h)
		}
	}
	if a.cfg.Output == "json" {
		return writeJSON(out, all)
	}
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ROTATED AT\tPOOL\tKEY\tAPI KEY\tSPEND\tTHRESHOLD\tREASON\tNEW KEY\tINSTANCE\tEPOCH")
	for _, h := range all {
		// A balance rotation shows what remained, and no threshold
		// (docs/providers.md).
		thr := "-"
		if h.Remaining == nil && !math.IsNaN(h.Threshold) && !math.IsInf(h.Threshold, 0) {
			thr = fmt.Sprintf("$%.2f", h.Threshold)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", h.RotatedAt.Format(time.RFC3339), h.Pool,
			h.KeyID, h.APIKeyMasked, statuspage.RecordReading(h), thr, h.RotationReason, h.NewKeyID, h.Instance, h.LeaseEpoch)
	}
	_ = tw.Flush()
	return nil
}
