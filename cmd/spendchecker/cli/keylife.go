package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/spendchecker/spendchecker/checker"
	"github.com/spendchecker/spendchecker/keyadmin"
	"github.com/spendchecker/spendchecker/refill"
	"github.com/spendchecker/spendchecker/retire"
)

// keylife is one pool's refill and retire (nil when off).
type keylife struct {
	pool   string
	admin  *keyadmin.Client
	retire *retire.Retirer
	refill *refill.Refiller
}

// startKeylife builds the passes of the pools that have them on.
func (a *app) startKeylife() error {
	var live []retire.LiveCollection
	for _, r := range a.chk.Rotators() {
		live = append(live, retire.LiveCollection{Name: r.Pool().KeysCollection}, retire.LiveCollection{Name: r.Pool().BackupsCollection, Backups: true})
	}
	epoch := func() int64 { e, _ := a.lease.Epoch(); return e }
	for _, p := range a.cfg.Pools {
		if !p.KeylifeSet() {
			continue
		}
		if p.ManagementKey() == "" {
			if a.cfg.Command == "" {
				a.log.Info("refill and retire are off for this pool", "pool", p.Pool, "why", p.KeylifeOff())
			}
			continue
		}
		pool, _ := p.Resolve()
		admin, err := keyadmin.New(keyadmin.Config{Kind: keyadmin.For(p.Provider), BaseURL: p.ProviderURL, AdminKey: p.ManagementKey(),
			HTTP: &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}, Timeout: a.cfg.RequestTimeout})
		if err != nil {
			return err
		}
		k := keylife{pool: p.Pool, admin: admin}
		if p.Retire {
			grace, deleteAfter, _ := p.RetireTimes()
			k.retire, err = retire.New(a.db, retire.Config{Pool: pool, Upstream: admin, Grace: grace, DeleteAfter: deleteAfter,
				IDs: p.UpstreamKeyIDs, Live: live, Owner: a.cfg.Instance, Epoch: epoch, DryRun: a.cfg.DryRun, Logger: a.log})
			if err != nil {
				return err
			}
		}
		if p.RefillSet() {
			rc := p.RefillConfig()
			rc.Pool, rc.Upstream, rc.Owner, rc.Epoch, rc.DryRun, rc.Logger = pool, admin, a.cfg.Instance, epoch, a.cfg.DryRun, a.log
			if k.refill, err = refill.New(a.db, rc); err != nil {
				return err
			}
		}
		a.keylife = append(a.keylife, k)
	}
	return nil
}

// keylifeIndexes prepares the store for the passes; idempotent.
func (a *app) keylifeIndexes(ctx context.Context) error {
	for _, k := range a.keylife {
		if k.retire != nil {
			if err := k.retire.EnsureIndexes(ctx); err != nil {
				return err
			}
		}
		if k.refill != nil {
			if err := k.refill.EnsureIndexes(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

// runKeylife runs each pool's retire then refill pass, within the cycle's
// leader context; a dry run says what they would do (on out too, when
// given). Failures are logged and counted, never the cycle's.
func (a *app) runKeylife(ctx context.Context, out io.Writer) {
	for _, k := range a.keylife {
		if ctx.Err() != nil {
			return
		}
		log := a.log.With("pool", k.pool)
		if k.retire != nil {
			rep, err := k.retire.Run(ctx)
			a.met.retired(k.pool, rep, err)
			if err != nil && ctx.Err() == nil {
				log.Warn("retire pass stopped early; the next cycle resumes it", "err", err)
			}
			for _, w := range rep.Would {
				log.Info("dry run: would retire upstream", "action", w.Action, "key", w.KeyID, "rotation", w.RotationID, "apiKeyMasked", w.APIKeyMasked)
				if out != nil {
					fmt.Fprintf(out, "pool %s: dry run: would %s rotated key %s (%s), rotation %s\n", k.pool, w.Action, w.KeyID, w.APIKeyMasked, w.RotationID)
				}
			}
		}
		if k.refill != nil {
			rep, err := k.refill.Run(ctx)
			a.met.refilled(k.pool, rep, err)
			if err != nil && ctx.Err() == nil {
				log.Warn("refill pass stopped early; the next cycle resumes it", "err", err)
			}
			for _, ev := range rep.Events {
				a.notifier.Notify(ev)
			}
			if rep.Would > 0 {
				log.Info("dry run: would create backup keys upstream", "keys", rep.Would, "unused", rep.Unused)
				if out != nil {
					fmt.Fprintf(out, "pool %s: dry run: would create %d backup keys upstream (%d unused now)\n", k.pool, rep.Would, rep.Unused)
				}
			}
		}
	}
}

// keylifeCycler is the daemon's cycle: the checks, then the pools' retire
// and refill passes, all under the leader's context.
type keylifeCycler struct{ a *app }

func (k keylifeCycler) Cycle(ctx context.Context) (checker.Summary, error) {
	sum, err := k.a.chk.Cycle(ctx)
	k.a.runKeylife(ctx, nil)
	return sum, err
}

// verifyKeylife names the retirements overdue and the retired keys the
// upstream still shows enabled (asked without side effects), and the
// refill slots left unsettled.
func (a *app) verifyKeylife(ctx context.Context, out io.Writer) (problems int, err error) {
	for _, k := range a.keylife {
		if k.retire != nil {
			probs, err := k.retire.Verify(ctx, k.admin.Lookup)
			if err != nil {
				return problems, fmt.Errorf("pool %s: %w", k.pool, err)
			}
			for _, p := range probs {
				fmt.Fprintf(out, "pool %s: %s\n", k.pool, p)
			}
			problems += len(probs)
		}
		if k.refill != nil {
			probs, err := k.refill.Verify(ctx)
			if err != nil {
				return problems, fmt.Errorf("pool %s: %w", k.pool, err)
			}
			for _, p := range probs {
				fmt.Fprintf(out, "pool %s: %s\n", k.pool, p)
			}
			problems += len(probs)
		}
	}
	return problems, nil
}
