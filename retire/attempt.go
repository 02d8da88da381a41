package retire

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/keyadmin"
	"github.com/spendchecker/spendchecker/rotation"
	"github.com/spendchecker/spendchecker/rotation/secret"
)

// disable runs one attempt to disable the old key of rotation e.
func (r *Retirer) disable(ctx context.Context, e rotationEntry, a archived, now time.Time, rep *Report) error {
	if a.NextAt != nil && now.Before(*a.NextAt) {
		rep.Waiting++
		return nil
	}
	log := r.log.With("rotation", e.ID, "key", e.OldKeyID)
	key, kerr := rotation.DecodeKey(a.Document)
	id := ""
	if kerr == nil {
		id = key.UpstreamKeyID
		if id == "" {
			id = r.cfg.IDs[key.ID]
		}
		if id == "" {
			id = r.cfg.Upstream.IDOf(key.APIKey)
		}
		log = log.With("apiKeyMasked", secret.Mask(key.APIKey))
	}
	if r.cfg.DryRun {
		action := "disable"
		if id == "" {
			action = "skip (no upstream id)"
		}
		rep.Would = append(rep.Would, Planned{Action: action, RotationID: e.ID, KeyID: e.OldKeyID, APIKeyMasked: secret.Mask(key.APIKey)})
		return nil
	}
	if id == "" {
		rep.Skipped++
		log.Warn("cannot disable the rotated key upstream: no upstream id (set upstreamKeyId on the key or map it in upstream-key-ids); left to the operator")
		return r.settle(ctx, e.ID, OutcomeNoUpstreamID, "", a.Attempts, now)
	}
	live, err := r.isLive(ctx, key.APIKey, id)
	if err != nil {
		return err
	}
	if live {
		// An earlier attempt may have disabled it upstream without its
		// outcome recorded (a crash after the answer, a lost answer): a
		// live key must not stay disabled.
		tried, err := r.claims.CountDocuments(ctx, bson.M{"rotationId": e.ID, "op": "disable"}, options.Count().SetLimit(1))
		if err != nil {
			return fmt.Errorf("retire %s: read attempts: %w", e.ID, err)
		}
		if tried > 0 {
			if err := r.cfg.Upstream.Enable(ctx, id); err != nil && !errors.Is(err, keyadmin.ErrNotFound) {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				rep.Failed++
				log.Warn("the rotated key is live again but could not be enabled upstream after an earlier disable; will retry", "err", err)
				return r.fail(ctx, e.ID, FieldAttempts, FieldLastError, FieldNextAt, a.Attempts, err, now.Add(backoff(max(a.Attempts, 1), err)))
			}
		}
		rep.Skipped++
		log.Warn("the rotated key is live again (a key or an unused backup holds it, or names its upstream id); not disabling it")
		if tried > 0 {
			// A disable whose answer never came may still be carried out.
			return r.settleLive(ctx, e.ID, id, a.Attempts, now)
		}
		return r.settle(ctx, e.ID, OutcomeLive, id, a.Attempts, now)
	}
	n, won, err := r.claim(ctx, e.ID, "disable", a.Attempts, now)
	if err != nil || !won {
		if err == nil {
			rep.Waiting++
		}
		return err
	}
	if err := r.after(ctx, e.ID, StepClaim); err != nil {
		return err
	}
	uerr := r.cfg.Upstream.Disable(ctx, id)
	if ctx.Err() != nil {
		// Stopped (the lease lost, shutdown) with the outcome unknown: the
		// claim goes stale and a later pass tries again.
		return ctx.Err()
	}
	if err := r.after(ctx, e.ID, StepUpstream); err != nil {
		return err
	}
	if uerr == nil {
		// A secret put back (by hand) while the request was out must not
		// stay disabled.
		if live, err := r.isLive(ctx, key.APIKey, id); err != nil || live {
			if err != nil {
				return err
			}
			rep.Skipped++
			log.Warn("the rotated key went live again while it was being disabled; enabling it again")
			if err := r.cfg.Upstream.Enable(ctx, id); err != nil {
				return fmt.Errorf("retire %s: enable a key live again: %w", e.ID, err)
			}
			// An earlier attempt of this rotation may still be carried out.
			return r.settleLive(ctx, e.ID, id, n, now)
		}
	}
	switch {
	case uerr == nil:
		rep.Retired++
		log.Info("rotated key disabled upstream", "attempt", n)
		err = r.settle(ctx, e.ID, OutcomeDisabled, id, n, now)
	case errors.Is(uerr, keyadmin.ErrNotFound):
		rep.NotFound++
		log.Info("rotated key not found upstream; nothing to disable", "attempt", n)
		err = r.settle(ctx, e.ID, OutcomeNotFound, id, n, now)
	default:
		rep.Failed++
		next := now.Add(backoff(n, uerr))
		log.Warn("could not disable the rotated key upstream; will retry", "attempt", n, "next", next, "err", uerr)
		err = r.fail(ctx, e.ID, FieldAttempts, FieldLastError, FieldNextAt, n, uerr, next)
	}
	if err != nil {
		return err
	}
	return r.after(ctx, e.ID, StepRecord)
}

// settle records the outcome of the rotation's retirement, once: a later
// record (a second executor) changes nothing.
func (r *Retirer) settle(ctx context.Context, rotationID, outcome, upstreamID string, n int, now time.Time) error {
	set := bson.M{FieldOutcome: outcome, FieldRetiredAt: now.UTC()}
	if outcome == OutcomeNoUpstreamID || outcome == OutcomeLive {
		set = bson.M{FieldOutcome: outcome}
	}
	if outcome == OutcomeDisabled {
		// An enable sent for the key earlier (it was live then) whose
		// answer never came may still be carried out (late.go).
		set[FieldRecheckUntil] = now.Add(r.cfg.LateWithin).UTC()
	}
	if upstreamID != "" {
		set[FieldUpstreamID] = upstreamID
	}
	_, err := r.archive.UpdateOne(ctx, bson.M{"_id": rotationID, FieldOutcome: bson.M{"$exists": false}},
		bson.M{"$set": set, "$max": bson.M{FieldAttempts: n}, "$unset": bson.M{FieldNextAt: "", FieldLastError: ""}})
	if err != nil {
		return fmt.Errorf("retire %s: record %s: %w", rotationID, outcome, err)
	}
	return nil
}

// fail records a failed attempt n and when to try again.
func (r *Retirer) fail(ctx context.Context, rotationID, attempts, lastErr, nextAt string, n int, err error, next time.Time) error {
	_, uerr := r.archive.UpdateOne(ctx, bson.M{"_id": rotationID},
		bson.M{"$max": bson.M{attempts: n}, "$set": bson.M{lastErr: err.Error(), nextAt: next.UTC()}})
	if uerr != nil {
		return fmt.Errorf("retire %s: record a failed attempt: %w", rotationID, uerr)
	}
	return nil
}

// claim takes the next attempt of op on the rotation by a unique insert:
// attempt n+1 after the n recorded. An attempt another executor holds is
// left to it, unless it is stale (its process died in it): then it counts
// as failed and the next one is claimed.
func (r *Retirer) claim(ctx context.Context, rotationID, op string, recorded int, now time.Time) (n int, won bool, err error) {
	attemptsField := FieldAttempts
	if op == "delete" {
		attemptsField = FieldDelAttempts
	}
	for n = recorded + 1; n <= recorded+3; n++ {
		id := fmt.Sprintf("%s#%s#%d", rotationID, op, n)
		_, err := r.claims.InsertOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "pool", Value: r.cfg.Pool.Name},
			{Key: "rotationId", Value: rotationID}, {Key: "op", Value: op}, {Key: "attempt", Value: n},
			{Key: "owner", Value: r.cfg.Owner}, {Key: "epoch", Value: r.cfg.Epoch()}, {Key: "claimedAt", Value: now.UTC()}})
		if err == nil {
			return n, true, nil
		}
		if !mongo.IsDuplicateKeyError(err) {
			return n, false, fmt.Errorf("retire %s: claim attempt %d: %w", rotationID, n, err)
		}
		var c struct {
			ClaimedAt time.Time `bson:"claimedAt"`
		}
		if err := r.claims.FindOne(ctx, bson.M{"_id": id}).Decode(&c); err != nil {
			return n, false, fmt.Errorf("retire %s: read attempt %d: %w", rotationID, n, err)
		}
		if now.Sub(c.ClaimedAt) < r.cfg.StaleAfter {
			return n, false, nil
		}
		if _, err := r.archive.UpdateOne(ctx, bson.M{"_id": rotationID}, bson.M{"$max": bson.M{attemptsField: n}}); err != nil {
			return n, false, fmt.Errorf("retire %s: count a stale attempt: %w", rotationID, err)
		}
	}
	return n, false, nil
}

// deleteDue deletes upstream the keys disabled DeleteAfter ago.
func (r *Retirer) deleteDue(ctx context.Context, now time.Time, rep *Report) error {
	cur, err := r.archive.Find(ctx, bson.M{FieldOutcome: OutcomeDisabled, "metadata.pool": r.cfg.Pool.Name,
		FieldRetiredAt: bson.M{"$lte": now.Add(-r.cfg.DeleteAfter)}, FieldDeletedAt: bson.M{"$exists": false}},
		options.Find().SetLimit(int64(r.cfg.Batch)).SetSort(bson.D{{Key: FieldRetiredAt, Value: 1}}))
	if err != nil {
		return fmt.Errorf("retire: find keys due for deletion: %w", err)
	}
	var docs []archived
	if err := cur.All(ctx, &docs); err != nil {
		return fmt.Errorf("retire: find keys due for deletion: %w", err)
	}
	for _, a := range docs {
		if err := r.deleteOne(ctx, a, now, rep); err != nil {
			return err
		}
	}
	return nil
}

func (r *Retirer) deleteOne(ctx context.Context, a archived, now time.Time, rep *Report) error {
	if a.DelNextAt != nil && now.Before(*a.DelNextAt) {
		return nil
	}
	key, _ := rotation.DecodeKey(a.Document)
	log := r.log.With("rotation", a.ID, "key", key.ID, "apiKeyMasked", secret.Mask(key.APIKey))
	if r.cfg.DryRun {
		rep.Would = append(rep.Would, Planned{Action: "delete", RotationID: a.ID, KeyID: key.ID, APIKeyMasked: secret.Mask(key.APIKey)})
		return nil
	}
	if live, err := r.isLive(ctx, key.APIKey, a.UpstreamID); err != nil || live {
		if err == nil {
			log.Warn("a disabled rotated key is live again; not deleting it (enable it upstream by hand if it is to serve)")
			err = r.fail(ctx, a.ID, FieldDelAttempts, FieldDelError, FieldDelNextAt, a.DelAttempts+1, errors.New("the key is live again"), now.Add(maxBackoff))
		}
		return err
	}
	n, won, err := r.claim(ctx, a.ID, "delete", a.DelAttempts, now)
	if err != nil || !won {
		return err
	}
	uerr := r.cfg.Upstream.Delete(ctx, a.UpstreamID)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if uerr != nil && !errors.Is(uerr, keyadmin.ErrNotFound) {
		rep.Failed++
		log.Warn("could not delete the retired key upstream; will retry", "attempt", n, "err", uerr)
		return r.fail(ctx, a.ID, FieldDelAttempts, FieldDelError, FieldDelNextAt, n, uerr, now.Add(backoff(n, uerr)))
	}
	rep.Deleted++
	log.Info("retired key deleted upstream", "attempt", n)
	_, err = r.archive.UpdateOne(ctx, bson.M{"_id": a.ID, FieldDeletedAt: bson.M{"$exists": false}},
		bson.M{"$set": bson.M{FieldDeletedAt: now.UTC()}, "$max": bson.M{FieldDelAttempts: n}, "$unset": bson.M{FieldDelError: "", FieldDelNextAt: ""}})
	if err != nil {
		return fmt.Errorf("retire %s: record the delete: %w", a.ID, err)
	}
	return nil
}
