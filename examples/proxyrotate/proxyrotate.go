// Package proxyrotate is the code a serving proxy copies to rotate keys
// through spendchecker's rotator instead of its own sequence (README,
// "Running next to the proxy"). It needs nothing from the daemon: a second
// MongoDB client (mongo-driver v2, next to the proxy's v1 client) on the same
// URI and database, and one rotation.Rotator per pool, built once at start-up.
//
// The proxy keeps deciding *when* a key is dead (ShouldRotate mirrors its
// CheckAndRotateOnError); the rotator decides *how*, exactly once per key
// whatever the number of proxies and spendchecker replicas racing for it.
// Recovery of a rotation whose caller died is left to the daemon, which runs
// it at every cycle.
package proxyrotate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/rotation"
)

// Rotator is the proxy's handle: a v2 client and one pool's rotator.
type Rotator struct {
	client *mongo.Client
	rot    *rotation.Rotator
}

// Open connects a second client to uri and builds the rotator of pool (a
// preset name: "openhands" or "factory") in database dbName — the proxy's
// MONGODB_URI and MONGODB_DB_NAME. owner names this proxy instance in the
// rotation journal.
func Open(ctx context.Context, uri, dbName, pool, owner string, log *slog.Logger) (*Rotator, error) {
	p, err := rotation.Preset(pool)
	if err != nil {
		return nil, err
	}
	client, err := mongo.Connect(options.Client().ApplyURI(uri).SetAppName(owner).
		SetServerSelectionTimeout(10 * time.Second))
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	rot, err := rotation.New(client.Database(dbName), p, rotation.Options{Owner: owner, Logger: log})
	if err != nil {
		_ = client.Disconnect(ctx)
		return nil, err
	}
	return &Rotator{client: client, rot: rot}, nil
}

// Close disconnects the rotator's client.
func (r *Rotator) Close(ctx context.Context) error { return r.client.Disconnect(ctx) }

// ShouldRotate reports whether an upstream answer means "this key is dead,
// rotate it now", with the reason recorded in the spend history. It follows
// the proxy's own CheckAndRotateOnError: 401, 402 and 403 always; a 400 only
// when its body says the budget is exceeded; Factory's quota texts whatever
// the status. 429 and 529 are cooldowns, never rotations.
func ShouldRotate(status int, body string) (reason string, ok bool) {
	lower := strings.ToLower(body)
	switch {
	case strings.Contains(lower, "ready for more? reload your tokens"),
		strings.Contains(lower, "ready to get started? subscribe"),
		strings.Contains(lower, "app.factory.ai/settings/billing"):
		return "factory_quota_exhausted", true
	}
	switch status {
	case 400:
		if strings.Contains(body, "ExceededBudget") || strings.Contains(lower, "budget_exceeded") ||
			strings.Contains(lower, "over budget") || strings.Contains(lower, "budget has been exceeded") {
			return "budget_exceeded", true
		}
	case 401:
		return "unauthorized", true
	case 402:
		return "payment_required", true
	case 403:
		return "forbidden", true
	}
	return "", false
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
	case rotation.Rotated, rotation.AlreadyRotated:
		a.SwapTo = res.NewKeyID
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
