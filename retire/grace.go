package retire

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// The grace period of a rotation, measured on the retirer's clock when the
// rotator's is behind it.

// lastPass is when the pool's previous pass read the journal (zero before
// the first).
func (r *Retirer) lastPass(ctx context.Context) (time.Time, error) {
	var m struct {
		LastPass time.Time `bson:"lastPassAt"`
	}
	if err := r.claims.FindOne(ctx, bson.M{"_id": "since/" + r.cfg.Pool.Name}).Decode(&m); err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
		return time.Time{}, fmt.Errorf("retire: read the last pass: %w", err)
	}
	return m.LastPass, nil
}

// markPass records that a pass read the journal at now.
func (r *Retirer) markPass(ctx context.Context, now time.Time) error {
	if r.cfg.DryRun {
		return nil
	}
	_, err := r.claims.UpdateOne(ctx, bson.M{"_id": "since/" + r.cfg.Pool.Name}, bson.M{"$max": bson.M{"lastPassAt": now.UTC()}})
	if err != nil {
		return fmt.Errorf("retire: record the pass: %w", err)
	}
	return nil
}

// due is when the old key of rotation e may be disabled: its grace after
// the finishedAt its rotator stamped, unless that stamp is older than the
// previous pass, which did not see the rotation done: the rotator's clock
// is behind this one (a proxy on another machine), so the grace runs from
// this pass. Recorded when first seen, so later passes and processes keep
// it.
func (r *Retirer) due(ctx context.Context, e rotationEntry, a archived, prev, now time.Time) (time.Time, error) {
	if a.NotBefore != nil {
		return *a.NotBefore, nil
	}
	due := e.FinishedAt.Add(r.cfg.Grace)
	if !prev.IsZero() && e.FinishedAt.Before(prev) && due.Before(now.Add(r.cfg.Grace)) {
		due = now.Add(r.cfg.Grace)
	}
	if r.cfg.DryRun {
		return due, nil
	}
	_, err := r.archive.UpdateOne(ctx, bson.M{"_id": e.ID, FieldNotBefore: bson.M{"$exists": false}},
		bson.M{"$set": bson.M{FieldNotBefore: due.UTC()}})
	if err != nil {
		return due, fmt.Errorf("retire %s: record the end of its grace: %w", e.ID, err)
	}
	return due, nil
}
