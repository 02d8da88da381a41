// Package proxyrotate is the code a serving proxy copies to rotate keys
// through spendchecker's rotator instead of its own sequence (docs/proxy.md,
// "Running next to the proxy"). It needs nothing from the daemon: a second
// MongoDB client (mongo-driver v2, next to the proxy's v1 client) on the same
// URI and database, and one rotation.Rotator per pool, built once at start-up.
//
// The proxy keeps deciding *when* a key is dead (ShouldRotate follows its
// CheckAndRotateOnError, narrowed to answers about the key); the rotator
// decides *how*, exactly once per key whatever the number of proxies and
// spendchecker replicas racing for it. Recovery of a rotation whose caller
// died is left to the daemon, which runs it at every cycle.
package proxyrotate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
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
// proxy. owner names this proxy instance in the rotation journal.
//
// Before returning, Open ensures the indexes the rotator's guarantees rest
// on (the journal's unique backupId index is what stops one backup being
// used twice), retrying a few times; it fails rather than hand out a
// rotator on a database without them.
func Open(ctx context.Context, uri, dbName, pool, owner string, log *slog.Logger) (*Rotator, error) {
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
	rot, err := rotation.New(client.Database(dbName), p, rotation.Config{Owner: owner, Logger: log})
	if err == nil {
		err = ensureIndexes(ctx, rot)
	}
	if err != nil {
		_ = client.Disconnect(context.WithoutCancel(ctx))
		return nil, err
	}
	return &Rotator{client: client, db: client.Database(dbName), rot: rot}, nil
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

// Close disconnects the rotator's client.
func (r *Rotator) Close(ctx context.Context) error { return r.client.Disconnect(ctx) }

// ShouldRotate reports whether an upstream answer means "this key is dead,
// rotate it now", with the reason recorded in the spend history. It is the
// proxy's own CheckAndRotateOnError (both pools' rules) narrowed by the
// daemon's reading of the same answers (upstream.Classify, docs/providers.md "Providers"),
// so that an answer that says nothing about this key never burns a backup:
//
//   - 429 and 529 are cooldowns, never rotations;
//   - Factory's quota texts rotate whatever the status;
//   - a LiteLLM budget refusal rotates only when it is about the key's own
//     budget, never a team, model or organisation budget all keys share;
//   - 401, 402 and 403 rotate only with the provider's own JSON error, not a
//     CDN or WAF block page;
//   - a JSON error body saying invalid_api_key or revoked rotates whatever
//     the status (the proxy's factory rule).
func ShouldRotate(status int, body string) (reason string, ok bool) {
	if status == 429 || status == 529 {
		return "", false
	}
	lower := strings.ToLower(body)
	switch {
	case strings.Contains(lower, "ready for more? reload your tokens"),
		strings.Contains(lower, "ready to get started? subscribe"),
		strings.Contains(lower, "app.factory.ai/settings/billing"):
		return "factory_quota_exhausted", true
	}
	switch upstream.Classify(status, []byte(body)) {
	case upstream.KeyBudgetExceeded:
		return "budget_exceeded", true
	case upstream.SharedBudget:
		return "", false
	case upstream.KeyRejected:
		switch status {
		case 401:
			return "unauthorized", true
		case 402:
			return "payment_required", true
		}
		return "forbidden", true
	}
	if (strings.Contains(lower, "invalid_api_key") || strings.Contains(lower, "revoked")) && jsonObject(body) {
		return "invalid_key", true
	}
	return "", false
}

// jsonObject: an error the upstream wrote, not an HTML page that happens to
// contain the words.
func jsonObject(body string) bool {
	b := strings.TrimSpace(body)
	return strings.HasPrefix(b, "{") && json.Valid([]byte(b))
}

// Action is what the proxy does to its in-memory pool after a rotation.
type Action struct {
	// Outcome is the rotator's answer ("rotated", "already_rotated", ...).
	Outcome string
	// SwapTo, when set, is the key that replaces the dead one: load it
	// (or reload the pool) and use it from now on.
	SwapTo string
	// Drop: stop using the dead key now, whatever else happens.
	Drop bool
	// NoBackup: no backup key was left; the dead key stays in the database
	// for the operator, out of the in-memory pool. Alert on it.
	NoBackup bool
}

// Rotate rotates keyID and tells the proxy what to do with its pool. An
// error means the rotation stopped part-way or could not start: drop the key
// from memory and carry on; the daemon's recovery completes the rotation and
// the proxy's periodic reload picks up the new key.
func (r *Rotator) Rotate(ctx context.Context, keyID, reason string) (Action, error) {
	// The saga must not be cut short by the request that triggered it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	res, err := r.rot.Rotate(ctx, keyID, reason)
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
		// Another caller is rotating it: its new key appears at the next reload.
	case rotation.NoBackup:
		a.NoBackup = true
	case rotation.NotFound:
		// Deleted by hand; nothing to swap in.
	default:
		return a, errors.New("unknown rotation outcome")
	}
	return a, nil
}
