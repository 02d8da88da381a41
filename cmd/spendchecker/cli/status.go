package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/checker"
	"github.com/spendchecker/spendchecker/history"
	"github.com/spendchecker/spendchecker/lease"
	"github.com/spendchecker/spendchecker/rotation"
)

func statusCommand(c *Config, p *program) spec {
	return spec{
		name:  "status",
		usage: "spendchecker status [FLAGS]",
		short: "a table of keys (spend, budget, % of threshold, last and next check), backups left, lease holder",
		store: true,
		flags: func(fs *flag.FlagSet) { leaseNameFlag(fs, c) },
		exec:  p.withApp(func(ctx context.Context, a *app) error { return a.status(ctx, p.env.Stdout) }),
	}
}

// status prints a table of keys, backups left and the lease holder.
func (a *app) status(ctx context.Context, out io.Writer) error {
	now := time.Now()
	rec, err := lease.Latest(ctx, a.leases, a.cfg.LeaseName)
	if err != nil {
		return partial("lease: %w", err)
	}
	switch {
	case rec == nil:
		fmt.Fprintf(out, "lease %s: never held\n", a.cfg.LeaseName)
	case rec.Released:
		fmt.Fprintf(out, "lease %s: released by %s (epoch %d)\n", a.cfg.LeaseName, rec.Holder, rec.Epoch)
	default:
		fmt.Fprintf(out, "lease %s: held by %s, epoch %d, last renewed %s ago (by its clock)\n",
			a.cfg.LeaseName, rec.Holder, rec.Epoch, now.Sub(rec.RenewedAt).Round(time.Second))
	}
	var failed error
	for i, r := range a.chk.Rotators() {
		p := r.Pool()
		threshold := a.cfg.Pools[i].Threshold
		left, err := r.BackupsAvailable(ctx)
		if err != nil {
			return partial("pool %s: %w", p.Name, err)
		}
		fmt.Fprintf(out, "\npool %s (%s): threshold $%.2f, backups left %d\n", p.Name, p.KeysCollection, threshold, left)
		cur, err := a.db.Collection(p.KeysCollection).Find(ctx, bson.M{}, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
		if err != nil {
			return partial("pool %s: %w", p.Name, err)
		}
		tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "KEY\tAPI KEY\tSTATUS\tSPEND\tBUDGET\t% THRESHOLD\tLAST CHECK\tNEXT CHECK")
		for cur.Next(ctx) {
			d := cur.Current
			secret, _ := d.Lookup(rotation.FieldAPIKey).StringValueOK()
			st, _ := d.Lookup(rotation.FieldStatus).StringValueOK()
			if e, ok := d.Lookup(checker.FieldCheckError).StringValueOK(); ok && e != "" {
				st += " (upstream: " + e + ")" // rejected, and not rotated (--rotate-unauthorized=false)
			}
			spendS, pct, budget := "-", "-", "-"
			if v, err := d.LookupErr(rotation.FieldTotalSpend); err == nil {
				if f, ok := v.AsFloat64OK(); ok {
					spendS = fmt.Sprintf("$%.2f", f)
					pct = fmt.Sprintf("%.0f%%", 100*f/threshold)
				}
			}
			if v, err := d.LookupErr(checker.FieldBudget); err == nil {
				if f, ok := v.AsFloat64OK(); ok {
					budget = fmt.Sprintf("$%.2f", f)
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", idString(d.Lookup("_id")), history.Mask(secret), st,
				spendS, budget, pct, ago(d.Lookup(checker.FieldLastCheck), now), until(d.Lookup(checker.FieldNextCheck), now))
		}
		_ = tw.Flush()
		if err := cur.Err(); err != nil {
			failed = partial("pool %s: %w", p.Name, err)
		}
	}
	return failed
}

func idString(v bson.RawValue) string {
	if s, ok := v.StringValueOK(); ok {
		return s
	}
	return v.String()
}

func ago(v bson.RawValue, now time.Time) string {
	t, ok := v.TimeOK()
	if !ok {
		return "never"
	}
	return now.Sub(t).Round(time.Second).String() + " ago"
}

func until(v bson.RawValue, now time.Time) string {
	t, ok := v.TimeOK()
	if !ok || !t.After(now) {
		return "due"
	}
	return "in " + t.Sub(now).Round(time.Second).String()
}
