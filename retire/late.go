package retire

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/keyadmin"
	"github.com/spendchecker/spendchecker/rotation"
	"github.com/spendchecker/spendchecker/rotation/secret"
)

// A disable request whose answer never came (a timeout, a dropped
// connection, a process stopped while it was out) may still be carried
// out by the upstream later, after a pass found the key live again and
// recorded it so. No check made before sending can prevent that: the key
// can be put back while the request is out, and the upstreams have no
// conditional update. So a key recorded live after any disable was sent
// for it is watched: each pass looks it up until LateWithin has passed,
// and enables it again when it finds it disabled while still live.
//
// The enable that undoes such a disable can be carried out late in turn,
// after the key was rotated out again and retired: so a key recorded
// disabled is watched the same way, and disabled again when the upstream
// shows it enabled while it is not live.

// settleLive records the rotation's key live after a disable was sent for
// it, and watches it until LateWithin from now.
func (r *Retirer) settleLive(ctx context.Context, rotationID, upstreamID string, n int, now time.Time) error {
	_, err := r.archive.UpdateOne(ctx, bson.M{"_id": rotationID, FieldOutcome: bson.M{"$exists": false}},
		bson.M{"$set": bson.M{FieldOutcome: OutcomeLive, FieldUpstreamID: upstreamID, FieldRecheckUntil: now.Add(r.cfg.LateWithin).UTC()},
			"$max": bson.M{FieldAttempts: n}, "$unset": bson.M{FieldNextAt: "", FieldLastError: ""}})
	if err != nil {
		return fmt.Errorf("retire %s: record %s: %w", rotationID, OutcomeLive, err)
	}
	return nil
}

// recheck looks up the watched keys of the pool: a live one the upstream
// shows disabled is enabled again. Past its window, a key's last look
// ends its watch.
func (r *Retirer) recheck(ctx context.Context, now time.Time, rep *Report) error {
	if r.cfg.DryRun {
		return nil
	}
	cur, err := r.archive.Find(ctx, bson.M{FieldRecheckUntil: bson.M{"$gt": time.Unix(0, 0).UTC()}, "metadata.pool": r.cfg.Pool.Name},
		options.Find().SetLimit(int64(r.cfg.Batch)))
	if err != nil {
		return fmt.Errorf("retire: read watched keys: %w", err)
	}
	var docs []archived
	if err := cur.All(ctx, &docs); err != nil {
		return fmt.Errorf("retire: read watched keys: %w", err)
	}
	for _, a := range docs {
		key, _ := rotation.DecodeKey(a.Document)
		log := r.log.With("rotation", a.ID, "key", key.ID, "apiKeyMasked", secret.Mask(key.APIKey))
		live, err := r.isLive(ctx, key.APIKey, a.UpstreamID)
		if err != nil {
			return err
		}
		if a.Outcome == OutcomeDisabled {
			if !live {
				if done, err := r.redisable(ctx, a, key.APIKey, now, rep); err != nil || !done {
					if err != nil {
						return err
					}
					continue // looked at again next pass
				}
			}
		} else if live {
			k, err := r.cfg.Upstream.Lookup(ctx, a.UpstreamID)
			switch {
			case ctx.Err() != nil:
				return ctx.Err()
			case errors.Is(err, keyadmin.ErrNotFound):
			case err != nil:
				// Looked up again next pass; the watch outlasts its window
				// until a look succeeds.
				log.Warn("could not look up a live key an earlier disable may have reached; will look again", "err", err)
				continue
			case k.Disabled:
				if err := r.cfg.Upstream.Enable(ctx, a.UpstreamID); err != nil {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					log.Warn("a live key was disabled by a disable the upstream carried out late; enabling it failed, will retry", "err", err)
					continue
				}
				rep.Reenabled++
				log.Warn("a live key was disabled by a disable the upstream carried out late; enabled it again")
				if _, err := r.archive.UpdateOne(ctx, bson.M{"_id": a.ID}, bson.M{"$max": bson.M{FieldReenabledAt: now.UTC()}}); err != nil {
					return fmt.Errorf("retire %s: record the re-enable: %w", a.ID, err)
				}
			}
		}
		if a.RecheckUntil != nil && now.After(*a.RecheckUntil) {
			if _, err := r.archive.UpdateOne(ctx, bson.M{"_id": a.ID, FieldRecheckUntil: *a.RecheckUntil},
				bson.M{"$unset": bson.M{FieldRecheckUntil: ""}}); err != nil {
				return fmt.Errorf("retire %s: end the watch: %w", a.ID, err)
			}
		}
	}
	return nil
}

// redisable looks up a retired key that is not live and disables it again
// if the upstream shows it enabled (an enable carried out late). done is
// false when the upstream could not be asked or refused: the watch goes on.
func (r *Retirer) redisable(ctx context.Context, a archived, apiKey string, now time.Time, rep *Report) (done bool, err error) {
	log := r.log.With("rotation", a.ID)
	k, err := r.cfg.Upstream.Lookup(ctx, a.UpstreamID)
	switch {
	case ctx.Err() != nil:
		return false, ctx.Err()
	case errors.Is(err, keyadmin.ErrNotFound):
		return true, nil
	case err != nil:
		log.Warn("could not look up a retired key an earlier enable may have reached; will look again", "err", err)
		return false, nil
	case k.Disabled:
		return true, nil
	}
	if err := r.cfg.Upstream.Disable(ctx, a.UpstreamID); err != nil && !errors.Is(err, keyadmin.ErrNotFound) {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		log.Warn("a retired key was enabled again by an enable the upstream carried out late; disabling it failed, will retry", "err", err)
		return false, nil
	}
	// Live again while the disable was out: enabled again.
	if live, err := r.isLive(ctx, apiKey, a.UpstreamID); err != nil || live {
		if err == nil {
			err = r.cfg.Upstream.Enable(ctx, a.UpstreamID)
		}
		return false, err
	}
	rep.Redisabled++
	log.Warn("a retired key was enabled again by an enable the upstream carried out late; disabled it again")
	if _, err := r.archive.UpdateOne(ctx, bson.M{"_id": a.ID}, bson.M{"$max": bson.M{FieldRedisabledAt: now.UTC()}}); err != nil {
		return false, fmt.Errorf("retire %s: record the disable: %w", a.ID, err)
	}
	return true, nil
}
