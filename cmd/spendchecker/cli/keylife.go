package cli

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spendchecker/spendchecker/checker"
	"github.com/spendchecker/spendchecker/keyadmin"
	"github.com/spendchecker/spendchecker/refill"
	"github.com/spendchecker/spendchecker/retire"
)

// A pool that refills and retires itself (docs/refill.md): its settings in
// the pool's config entry, its management key, and the passes the leader's
// cycle runs after the checks.

// A pool's management key (OpenRouter's management key, LiteLLM's master
// key) is read, in this order, from its entry's management-key-file, the
// systemd credential management-key-<pool>, $SPENDCHECKER_MANAGEMENT_KEY_<POOL>,
// or, for provider openrouter-keys, its admin key (the same management
// key); never from the config file itself.
const envManagementKeyPrefix = "SPENDCHECKER_MANAGEMENT_KEY_"

// DefaultRetireGrace is retire-grace's default.
const DefaultRetireGrace = retire.DefaultGrace

func managementKeyEnv(pool string) string {
	return envManagementKeyPrefix + strings.TrimPrefix(adminKeyEnv(pool), envAdminKeyPrefix)
}

func managementKeyCredential(pool string) string { return "management-key-" + pool }

// keylifeSet reports whether the pool's entry has any refill or retire
// setting.
func (p PoolConfig) keylifeSet() bool {
	return p.refillSet() || p.Retire || p.RetireGrace != "" || p.RetireDeleteAfter != "" || p.ManagementKeyFile != ""
}

func (p PoolConfig) refillSet() bool {
	return p.RefillBelow != 0 || p.RefillTo != 0 || p.RefillKeyLimit != 0 || p.RefillMaxKeys != 0 || p.RefillMaxUSD != 0
}

// readManagementKey finds the pool's management key; "" when none is given.
func readManagementKey(p PoolConfig) (string, error) {
	if p.ManagementKeyFile != "" {
		b, err := os.ReadFile(p.ManagementKeyFile)
		if err != nil {
			return "", fmt.Errorf("management-key-file: %w", err)
		}
		k := strings.TrimSpace(string(b))
		if k == "" {
			return "", fmt.Errorf("management-key-file %s is empty", p.ManagementKeyFile)
		}
		return k, nil
	}
	if k, ok, err := readCredential(managementKeyCredential(p.Pool)); err != nil || ok {
		return k, err
	}
	if k := strings.TrimSpace(os.Getenv(managementKeyEnv(p.Pool))); k != "" {
		return k, nil
	}
	if p.Provider == "openrouter-keys" {
		return p.adminKey, nil
	}
	return "", nil
}

// refillConfig is the pool's refill settings; Limit defaults to the
// threshold rounded up to whole dollars (a $9.95 threshold, $10 keys).
func (p PoolConfig) refillConfig() refill.Config {
	limit := p.RefillKeyLimit
	if limit == 0 {
		limit = math.Ceil(p.Threshold)
	}
	return refill.Config{Below: p.RefillBelow, To: p.RefillTo, Limit: limit, MaxKeysPerDay: p.RefillMaxKeys, MaxUSDPerDay: p.RefillMaxUSD}
}

// retireTimes parses retire-grace and retire-delete-after.
func (p PoolConfig) retireTimes() (grace, deleteAfter time.Duration, err error) {
	grace = DefaultRetireGrace
	if p.RetireGrace != "" {
		if grace, err = time.ParseDuration(p.RetireGrace); err != nil || grace <= 0 {
			return 0, 0, fmt.Errorf("retire-grace %q is not a positive duration", p.RetireGrace)
		}
	}
	if p.RetireDeleteAfter != "" {
		if deleteAfter, err = time.ParseDuration(p.RetireDeleteAfter); err != nil || deleteAfter <= 0 {
			return 0, 0, fmt.Errorf("retire-delete-after %q is not a positive duration", p.RetireDeleteAfter)
		}
	}
	return grace, deleteAfter, nil
}

// loadKeylife checks the refill and retire settings of every pool and
// reads the management keys. A pool whose key is missing keeps both off;
// keylifeOff says why (logged once at start).
func loadKeylife(c *Config) error {
	for i := range c.Pools {
		p := &c.Pools[i]
		if !p.keylifeSet() {
			continue
		}
		if keyadmin.For(p.Provider) == "" || p.Custom != nil {
			return usage("pool %s: refill and retire need an upstream with a key-management API (provider openrouter, openrouter-keys or litellm), not %s", p.Pool, p.Provider)
		}
		if p.refillSet() {
			if p.RefillBelow == 0 || p.RefillTo == 0 {
				return usage("pool %s: refill needs refill-below and refill-to", p.Pool)
			}
			if !finite(p.RefillKeyLimit) || !finite(p.RefillMaxUSD) {
				return usage("pool %s: refill-key-limit and refill-max-usd-per-day must be finite numbers", p.Pool)
			}
			// A 0 written is a value, not the default: a cap of 0 would
			// otherwise create the default keys a day.
			for _, k := range []struct {
				name string
				zero bool
			}{{"refill-max-keys-per-day", p.RefillMaxKeys == 0}, {"refill-max-usd-per-day", p.RefillMaxUSD == 0}, {"refill-key-limit", p.RefillKeyLimit == 0}} {
				if k.zero && p.set[k.name] {
					return usage("pool %s: %s must be above 0 (to stop creating keys, remove refill-below and refill-to)", p.Pool, k.name)
				}
			}
			if err := p.refillConfig().Validate(); err != nil {
				return usage("pool %s: %v", p.Pool, err)
			}
		}
		if !p.Retire && (p.RetireGrace != "" || p.RetireDeleteAfter != "") {
			return usage(`pool %s: retire-grace and retire-delete-after need "retire": true`, p.Pool)
		}
		if _, _, err := p.retireTimes(); err != nil {
			return usage("pool %s: %v", p.Pool, err)
		}
		k, err := readManagementKey(*p)
		if err != nil {
			return usage("pool %s: %v", p.Pool, err)
		}
		if k == "" {
			p.keylifeOff = fmt.Sprintf("no management key: management-key-file in the pool's entry, the systemd credential %s, or $%s",
				managementKeyCredential(p.Pool), managementKeyEnv(p.Pool))
			continue
		}
		p.managementKey = k
	}
	return nil
}

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
		if !p.keylifeSet() {
			continue
		}
		if p.managementKey == "" {
			if a.cfg.Command == "" {
				a.log.Info("refill and retire are off for this pool", "pool", p.Pool, "why", p.keylifeOff)
			}
			continue
		}
		pool, _ := p.resolve()
		admin, err := keyadmin.New(keyadmin.Config{Kind: keyadmin.For(p.Provider), BaseURL: p.ProviderURL, AdminKey: p.managementKey,
			HTTP: &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}, Timeout: a.cfg.RequestTimeout})
		if err != nil {
			return err
		}
		k := keylife{pool: p.Pool, admin: admin}
		if p.Retire {
			grace, deleteAfter, _ := p.retireTimes()
			k.retire, err = retire.New(a.db, retire.Config{Pool: pool, Upstream: admin, Grace: grace, DeleteAfter: deleteAfter,
				IDs: p.UpstreamKeyIDs, Live: live, Owner: a.cfg.Instance, Epoch: epoch, DryRun: a.cfg.DryRun, Logger: a.log})
			if err != nil {
				return err
			}
		}
		if p.refillSet() {
			rc := p.refillConfig()
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
