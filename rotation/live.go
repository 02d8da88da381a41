package rotation

import (
	"context"
	"errors"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/rotation/history"
)

// liveChain bounds LiveEnd's walk from a rotated key to its live replacement.
const liveChain = 16

// LiveEnd follows a rotated key's replacements through the journal (the
// rotation whose oldKeyId is the previous new key) to the one still in the
// pool, for a caller that swaps keys in memory on *already rotated*. It
// returns "" when the chain ends in a rotation still under way, a key
// deleted by hand, or is longer than liveChain.
func (r *Rotator) LiveEnd(ctx context.Context, keyID string) (string, error) {
	for range liveChain {
		if keyID == "" {
			return "", nil
		}
		n, err := r.keys.CountDocuments(ctx, bson.M{"_id": keyID})
		if err != nil {
			return "", fmt.Errorf("read key %s: %w", keyID, err)
		}
		if n > 0 {
			return keyID, nil
		}
		var next struct {
			NewKeyID string `bson:"newKeyId"`
			State    string `bson:"state"`
		}
		err = r.journal.FindOne(ctx, bson.M{"pool": r.pool.Name, "oldKeyId": keyID},
			options.FindOne().SetSort(bson.D{{Key: "startedAt", Value: -1}})).Decode(&next)
		if errors.Is(err, mongo.ErrNoDocuments) || (err == nil && next.State != stateDone) {
			return "", nil
		}
		if err != nil {
			return "", fmt.Errorf("read journal for %s: %w", keyID, err)
		}
		keyID = next.NewKeyID
	}
	return "", nil
}

func (r *Rotator) historyRecord(e journalEntry, key Key, obs *history.Observation) history.Record {
	rec := history.Record{
		ID:             e.ID,
		Pool:           r.pool.Name,
		KeyID:          e.OldKeyID,
		APIKeyMasked:   e.APIKeyMasked,
		Spend:          key.TotalSpend,
		CheckedAt:      e.StartedAt,
		WasActive:      key.Status == StatusHealthy,
		RotatedAt:      e.StartedAt,
		RotationReason: e.Reason,
		Instance:       r.opts.Owner,
	}
	if obs != nil {
		// A zero spend with no time of reading is no reading (a rotation
		// asked for by hand): the key's last recorded spend stands.
		if obs.Spend != 0 || !obs.CheckedAt.IsZero() {
			rec.Spend = obs.Spend
		}
		rec.Threshold, rec.Budget = obs.Threshold, obs.Budget
		rec.Provider, rec.LeaseEpoch = obs.Provider, obs.LeaseEpoch
		rec.Remaining, rec.Currency = obs.Remaining, obs.Currency
		if !obs.CheckedAt.IsZero() {
			rec.CheckedAt = obs.CheckedAt.UTC()
		}
		if obs.Instance != "" {
			rec.Instance = obs.Instance
		}
	}
	return rec
}
