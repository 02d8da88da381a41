package cli

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/history"
	"github.com/spendchecker/spendchecker/lease"
	"github.com/spendchecker/spendchecker/rotation"
)

func (a *app) warnHistoryTTL(ctx context.Context) {
	for _, r := range a.chk.Rotators() {
		p := r.Pool()
		name, after, found, err := history.NewStore(a.db.Collection(p.HistoryCollection)).TTLIndex(ctx)
		if err == nil && found {
			a.log.Warn("history collection has a TTL index that silently deletes spend history; drop it",
				"pool", p.Name, "collection", p.HistoryCollection, "index", name, "expire_after", after)
		}
	}
}

// status prints a table of keys, backups left and the lease holder.
func (a *app) status(ctx context.Context, out io.Writer) int {
	now := time.Now()
	rec, err := lease.Latest(ctx, a.leases, a.cfg.LeaseName)
	if err != nil {
		fmt.Fprintf(out, "error: %v\n", err)
		return ExitPartial
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
	code := ExitOK
	for i, r := range a.chk.Rotators() {
		p := r.Pool()
		threshold := a.cfg.Pools[i].Threshold
		left, err := r.BackupsAvailable(ctx)
		if err != nil {
			fmt.Fprintf(out, "error: %v\n", err)
			return ExitPartial
		}
		fmt.Fprintf(out, "\npool %s (%s): %s, backups left %d\n", p.Name, p.KeysCollection, a.cfg.Pools[i].rotatesAt(), left)
		cur, err := a.db.Collection(p.KeysCollection).Find(ctx, bson.M{}, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
		if err != nil {
			fmt.Fprintf(out, "error: %v\n", err)
			return ExitPartial
		}
		tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "KEY\tAPI KEY\tSTATUS\tSPEND\tBUDGET\t% THRESHOLD\tLAST CHECK\tNEXT CHECK")
		for cur.Next(ctx) {
			d := cur.Current
			secret, _ := d.Lookup("apiKey").StringValueOK()
			st, _ := d.Lookup("status").StringValueOK()
			if e, ok := d.Lookup("spendCheckError").StringValueOK(); ok && e != "" {
				st += " (upstream: " + e + ")" // rejected, and not rotated (--rotate-unauthorized=false)
			}
			spendS, pct, budget := "-", "-", "-"
			if v, err := d.LookupErr("totalSpend"); err == nil {
				if f, ok := v.AsFloat64OK(); ok {
					spendS = fmt.Sprintf("$%.2f", f)
					pct = fmt.Sprintf("%.0f%%", 100*f/threshold)
				}
			}
			if v, err := d.LookupErr("spendBudget"); err == nil {
				if f, ok := v.AsFloat64OK(); ok {
					budget = fmt.Sprintf("$%.2f", f)
				}
			}
			spendS, pct = readingColumns(d, spendS, pct)
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", idString(d.Lookup("_id")), history.Mask(secret), st,
				spendS, budget, pct, ago(d.Lookup("lastSpendCheck"), now), until(d.Lookup("nextSpendCheck"), now))
		}
		_ = tw.Flush()
		if err := cur.Err(); err != nil {
			fmt.Fprintf(out, "error: %v\n", err)
			code = ExitPartial
		}
	}
	return code
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

// rotate rotates one key by hand through the shared rotator.
func (a *app) rotate(ctx context.Context, out io.Writer) int {
	if err := a.prepare(ctx); err != nil {
		fmt.Fprintf(out, "error: %v\n", err)
		return ExitPartial
	}
	keyID := a.cfg.Args[0]
	if a.cfg.DryRun {
		fmt.Fprintf(out, "dry run: would rotate %s (reason %s)\n", keyID, a.cfg.Reason)
		return ExitOK
	}
	// The key is looked for in every configured pool (--pool narrows them to
	// one); it rotates in the one that holds it, and an id held by several
	// pools is refused rather than guessed.
	if rs := a.chk.Rotators(); len(rs) > 1 {
		var holders []string
		for _, r := range rs {
			n, err := a.db.Collection(r.Pool().KeysCollection).CountDocuments(ctx, bson.M{"_id": keyID})
			if err != nil {
				fmt.Fprintf(out, "error: %v\n", err)
				return ExitPartial
			}
			if n > 0 {
				holders = append(holders, r.Pool().Name)
			}
		}
		if len(holders) > 1 {
			fmt.Fprintf(out, "key %s is in pools %s; name one with --pool; nothing rotated\n", keyID, strings.Join(holders, " and "))
			return ExitUsage
		}
	}
	for i, r := range a.chk.Rotators() {
		res, err := r.Rotate(ctx, keyID, a.cfg.Reason, rotation.WithObservation(history.Observation{
			Threshold: a.cfg.Pools[i].Threshold, Provider: a.cfg.Pools[i].Provider, Instance: a.cfg.Instance,
		}))
		if err != nil {
			fmt.Fprintf(out, "pool %s: rotation of %s stopped part-way: %v (run `spendchecker recover`)\n", r.Pool().Name, keyID, err)
			return ExitPartial
		}
		switch res.Outcome {
		case rotation.NotFound:
			continue
		case rotation.Rotated:
			fmt.Fprintf(out, "pool %s: rotated %s -> %s (rotation %s)\n", r.Pool().Name, keyID, res.NewKeyID, res.RotationID)
			return ExitOK
		case rotation.AlreadyRotated, rotation.InProgress:
			fmt.Fprintf(out, "pool %s: %s was %s (new key %s)\n", r.Pool().Name, keyID, strings.ReplaceAll(res.Outcome.String(), "_", " "), res.NewKeyID)
			return ExitOK
		case rotation.NoBackup:
			fmt.Fprintf(out, "pool %s: no backup key left; %s unchanged\n", r.Pool().Name, keyID)
			return ExitPartial
		}
	}
	fmt.Fprintf(out, "key %s not found in any pool\n", keyID)
	return ExitPartial
}

func (a *app) recoverAll(ctx context.Context, out io.Writer) int {
	if err := a.prepare(ctx); err != nil {
		fmt.Fprintf(out, "error: %v\n", err)
		return ExitPartial
	}
	code := ExitOK
	for _, r := range a.chk.Rotators() {
		rep, err := r.Recover(ctx)
		fmt.Fprintf(out, "pool %s: completed %d, dropped %d, failed %d, late inserts removed %d, repaired %d\n",
			r.Pool().Name, rep.Completed, rep.Dropped, rep.Failed, rep.Removed, rep.Repaired)
		if err != nil {
			fmt.Fprintf(out, "  error: %v\n", err)
			code = ExitPartial
		}
	}
	return code
}

func (a *app) verify(ctx context.Context, out io.Writer) int {
	code := ExitOK
	for _, r := range a.chk.Rotators() {
		probs, err := r.Verify(ctx)
		if err != nil {
			fmt.Fprintf(out, "pool %s: error: %v\n", r.Pool().Name, err)
			code = ExitPartial
			continue
		}
		if len(probs) == 0 {
			fmt.Fprintf(out, "pool %s: ok\n", r.Pool().Name)
			continue
		}
		code = ExitPartial
		for _, p := range probs {
			fmt.Fprintf(out, "pool %s: %s\n", r.Pool().Name, p)
		}
	}
	return code
}

func (a *app) history(ctx context.Context, out io.Writer) int {
	since, _ := parseSince(a.cfg.Since, time.Now())
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ROTATED AT\tPOOL\tKEY\tAPI KEY\tSPEND\tTHRESHOLD\tREASON\tNEW KEY\tINSTANCE\tEPOCH")
	for _, r := range a.chk.Rotators() {
		recs, err := history.NewStore(a.db.Collection(r.Pool().HistoryCollection)).Since(ctx, since)
		if err != nil {
			fmt.Fprintf(out, "error: %v\n", err)
			return ExitPartial
		}
		for _, h := range recs {
			spendS, thr := fmt.Sprintf("$%.2f", h.Spend), fmt.Sprintf("$%.2f", h.Threshold)
			if h.Remaining != nil {
				spendS, thr = remainingString(*h.Remaining, h.Currency), "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", h.RotatedAt.Format(time.RFC3339), r.Pool().Name,
				h.KeyID, h.APIKeyMasked, spendS, thr, h.RotationReason, h.NewKeyID, h.Instance, h.LeaseEpoch)
		}
	}
	_ = tw.Flush()
	return ExitOK
}

// healthcheck probes a running daemon's /healthz (for container checks).
func healthcheck(ctx context.Context, cfg *Config, env Env) int {
	if cfg.Listen == "" {
		fmt.Fprintln(env.Stderr, "spendchecker: healthcheck needs --listen")
		return ExitUsage
	}
	host, port, _ := net.SplitHostPort(cfg.Listen)
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(host, port)+"/healthz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintf(env.Stderr, "spendchecker: unhealthy: %v\n", err)
		return ExitPartial
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(env.Stderr, "spendchecker: unhealthy: %s\n", resp.Status)
		return ExitPartial
	}
	fmt.Fprintln(env.Stdout, "healthy")
	return ExitOK
}
