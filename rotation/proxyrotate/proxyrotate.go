// Package proxyrotate is the package a serving proxy imports to rotate keys
// through spendchecker's rotator instead of its own sequence (docs/proxy.md,
// "Running next to the proxy"). It needs nothing from the daemon: a second
// MongoDB client (mongo-driver v2, next to the proxy's v1 client) on the same
// URI and database, and one rotation.Rotator per pool, built once at start-up.
//
// The proxy decides *when* a key is dead with ShouldRotate, which reads an
// upstream answer through upstream.Read, the very reading the daemon's
// polls use (the proxy's own CheckAndRotateOnError rules, narrowed to
// answers about the key); the rotator decides *how*, exactly once per key
// whatever the number of proxies and spendchecker replicas racing for it,
// and holds a key refused for a LiteLLM user's budget that another key of
// the pool shares. Recovery of a rotation whose caller died is left to the
// daemon, which runs it at every cycle.
package proxyrotate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/rotation"
	"github.com/spendchecker/spendchecker/rotation/upstream"
)

// Rotator is the proxy's handle: a v2 client and one pool's rotator.
type Rotator struct {
	client *mongo.Client
	db     *mongo.Database
	rot    *rotation.Rotator
}

// Open connects a second client to uri and builds the rotator of pool (a
// preset name: "openhands" or "factory") in database dbName — the proxy's
// MONGODB_URI and MONGODB_DB_NAME; an empty dbName is "fproxy", as in the
// proxy. owner names this proxy instance in the rotation journal. opts
// carry the pool's settings the daemon has too (WithUserBudget): give them
// the daemon's values, so that both decide alike.
//
// Before returning, Open ensures the indexes the rotator's guarantees rest
// on (the journal's unique backupId index is what stops one backup being
// used twice), retrying a few times; it fails rather than hand out a
// rotator on a database without them.
func Open(ctx context.Context, uri, dbName, pool, owner string, log *slog.Logger, opts ...Option) (*Rotator, error) {
	p, err := rotation.Preset(pool)
	if err != nil {
		return nil, err
	}
	if dbName == "" {
		dbName = DefaultDatabase
	}
	client, err := mongo.Connect(options.Client().ApplyURI(uri).SetAppName(owner).
		SetServerSelectionTimeout(10 * time.Second))
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	cfg := rotation.Config{Owner: owner, Logger: log}
	for _, o := range opts {
		o(&cfg)
	}
	rot, err := rotation.New(client.Database(dbName), p, cfg)
	if err == nil {
		err = ensureIndexes(ctx, rot)
	}
	if err != nil {
		_ = client.Disconnect(context.WithoutCancel(ctx))
		return nil, err
	}
	return &Rotator{client: client, db: client.Database(dbName), rot: rot}, nil
}

// Option sets one of the pool's settings (Open).
type Option func(*rotation.Config)

// WithUserBudget sets the pool's rule for LiteLLM's personal-budget
// refusals, as the daemon's user-budget setting: rotation.UserBudgetAuto
// (the default: rotate unless another key of the pool names the same
// user), UserBudgetRotate or UserBudgetHold.
func WithUserBudget(u rotation.UserBudget) Option {
	return func(c *rotation.Config) { c.UserBudget = u }
}

// WithNoLegacyRotator declares that no replica of the proxy runs its own
// rotator against this pool any more (and every spendchecker replica runs
// a version that knows forward-only rotations): Rotate then answers as soon
// as the new key is live and its backup marked, about half the round trips,
// and the rotation finishes in the background (Close waits for it).
// Without the declaration the answer waits for the old key's delete,
// because the old rotator can still make the rotation undo itself.
func WithNoLegacyRotator() Option {
	return func(c *rotation.Config) { c.NoLegacyRotator = true }
}

// DefaultDatabase is the proxy's database when MONGODB_DB_NAME is unset.
const DefaultDatabase = "fproxy"

// indexAttempts bounds Open's index creation: two processes creating the
// same index at once may see one attempt fail (FerretDB drops the
// connection), and a store that is just starting may need a moment.
const indexAttempts = 4

func ensureIndexes(ctx context.Context, rot *rotation.Rotator) error {
	wait := 500 * time.Millisecond
	var err error
	for i := range indexAttempts {
		if err = rot.EnsureIndexes(ctx); err == nil {
			return nil
		}
		if i == indexAttempts-1 {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("ensure the rotator's indexes: %w", ctx.Err())
		case <-time.After(wait):
		}
		wait *= 2
	}
	return fmt.Errorf("ensure the rotator's indexes (%d attempts): %w", indexAttempts, err)
}

// Close lets the rotations answered early finish (until ctx ends; the
// daemon's recovery completes any cut short), then disconnects the
// rotator's client.
func (r *Rotator) Close(ctx context.Context) error {
	werr := r.rot.Close(ctx)
	return errors.Join(werr, r.client.Disconnect(context.WithoutCancel(ctx)))
}

// Decision is what ShouldRotate read in an upstream answer: why the key
// should be rotated, and, for LiteLLM's personal-budget refusal, the user
// whose budget is spent (the rotator holds the key when another key of the
// pool names the same user). Pass it to Rotate as it is.
type Decision struct {
	// Reason is recorded in the spend history: unauthorized,
	// payment_required, forbidden, invalid_key, budget_exceeded, exhausted
	// or factory_quota_exhausted.
	Reason string
	// BudgetUser is the LiteLLM user a personal-budget refusal names.
	BudgetUser string
}

func (d Decision) String() string { return d.Reason }

// ShouldRotate reports whether an upstream answer means "this key is dead,
// rotate it now". It reads the answer through upstream.Read, the very
// function the daemon's polls use, so the proxy and the daemon never
// disagree about a key:
//
//   - a success, 429 and 529 never rotate;
//   - a LiteLLM budget refusal rotates when it is about the key's own
//     budget, or its owner's personal budget (Decision.BudgetUser: the
//     rotator holds the key when another key of the pool shares the user);
//     never a team, organisation, project, tag, customer, model or global
//     budget all keys share, nor one without figures;
//   - a quota used up rotates: Factory's reload-your-tokens answers
//     (whatever the status), one-api and new-api's 额度已用尽 (401/403);
//   - LiteLLM's access refusals ("key not allowed to access model", routes,
//     IP addresses) never rotate: one client asking for a forbidden model
//     must not burn a backup per request;
//   - 401, 402 and 403 rotate only with the provider's own JSON error, not a
//     CDN or WAF block page;
//   - a JSON error body saying invalid_api_key or revoked rotates whatever
//     the status (the proxy's factory rule).
func ShouldRotate(status int, body string) (Decision, bool) {
	a := upstream.Read(status, []byte(body))
	if !a.Rotates() {
		return Decision{}, false
	}
	return Decision{Reason: a.Reason, BudgetUser: a.User}, true
}

// Action is what the proxy does to its in-memory pool after a rotation.
type Action struct {
	// Outcome is the rotator's answer: rotated, already_rotated,
	// in_progress, no_backup, not_found or held.
	Outcome string
	// SwapTo, when set, is the key that replaces the dead one: load it (or
	// reload the pool) and retry the request with it. Set on rotated, on
	// already_rotated (the live end of the chain), and on in_progress once
	// the rotation under way has put its new key in the pool; an
	// in_progress without it means wait for the next reload or fail over.
	SwapTo string
	// Drop: stop using the dead key now, whatever else happens.
	Drop bool
	// NoBackup: no backup key was left; the dead key stays in the database
	// for the operator, out of the in-memory pool. Alert on it.
	NoBackup bool
}

// Rotate rotates keyID for the decision ShouldRotate made (or a reason of
// the proxy's own, Decision{Reason: "manual"}) and tells the proxy what to
// do with its pool. An error means the rotation stopped part-way or could
// not start: drop the key from memory and carry on; the daemon's recovery
// completes the rotation and the proxy's periodic reload picks up the new
// key. A held key (outcome held: its owner's budget is shared with another
// key of the pool) stays in the database: keep it out of memory until the
// budget resets, like a key in cooldown.
func (r *Rotator) Rotate(ctx context.Context, keyID string, d Decision) (Action, error) {
	// The saga must not be cut short by the request that triggered it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	var opts []rotation.RotateOption
	if d.BudgetUser != "" {
		opts = append(opts, rotation.WithBudgetUser(d.BudgetUser))
	}
	res, err := r.rot.Rotate(ctx, keyID, d.Reason, opts...)
	a := Action{Outcome: res.Outcome.String(), Drop: true}
	if err != nil {
		return a, err
	}
	switch res.Outcome {
	case rotation.Rotated:
		a.SwapTo = res.NewKeyID
	case rotation.AlreadyRotated:
		// The replacement may itself have been rotated since: swap in the
		// live end of the chain, or nothing (drop; the reload brings it).
		// A failed read only costs the swap, not the answer.
		a.SwapTo, _ = r.rot.LiveEnd(ctx, res.NewKeyID)
	case rotation.InProgress:
		// Another caller is rotating it; its new key, once in the pool.
		a.SwapTo = res.NewKeyID
	case rotation.NoBackup:
		a.NoBackup = true
	case rotation.NotFound, rotation.Held:
		// Deleted by hand, or held for a shared budget: nothing to swap in.
	default:
		return a, errors.New("unknown rotation outcome")
	}
	return a, nil
}
