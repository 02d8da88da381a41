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
)

// Verify's bounds: a retirement is overdue OverdueAfter past its grace;
// the upstream is asked about the keys recorded disabled in the last
// recheckWithin, at most recheckMax of them.
const (
	OverdueAfter  = 10 * time.Minute
	recheckWithin = 7 * 24 * time.Hour
	recheckMax    = 100
	verifyScanMax = 5000
)

// Verify names, from the journal and the archive, the rotations whose old
// key is overdue for retirement (retire_overdue), and, asking the upstream
// with lookup (which changes nothing), the keys recorded disabled lately
// that the upstream shows enabled (retired_key_enabled). lookup nil skips
// the upstream.
func (r *Retirer) Verify(ctx context.Context, lookup func(ctx context.Context, id string) (keyadmin.Key, error)) ([]string, error) {
	var probs []string
	since, err := r.since(ctx)
	if err != nil {
		return nil, err
	}
	now := r.cfg.Now()
	cur, err := r.journal.Find(ctx, bson.M{"pool": r.cfg.Pool.Name, "state": journalDone,
		"finishedAt": bson.M{"$gte": since, "$lte": now.Add(-r.cfg.Grace - OverdueAfter)}},
		options.Find().SetSort(bson.D{{Key: "finishedAt", Value: 1}}).SetLimit(verifyScanMax).
			SetProjection(bson.M{"_id": 1, "oldKeyId": 1, "state": 1, "finishedAt": 1}))
	if err != nil {
		return nil, fmt.Errorf("retire: read done rotations: %w", err)
	}
	var entries []rotationEntry
	if err := cur.All(ctx, &entries); err != nil {
		return nil, fmt.Errorf("retire: read done rotations: %w", err)
	}
	for start := 0; start < len(entries); start += 500 {
		batch := entries[start:min(start+500, len(entries))]
		docs, err := r.archived(ctx, batch)
		if err != nil {
			return nil, err
		}
		for _, e := range batch {
			a, ok := docs[e.ID]
			if !ok || a.Outcome != "" || (a.NotBefore != nil && now.Before(a.NotBefore.Add(OverdueAfter))) {
				continue
			}
			p := fmt.Sprintf("retire_overdue: key %s (rotation %s, done %s) is not disabled upstream yet", e.OldKeyID, e.ID, e.FinishedAt.UTC().Format(time.RFC3339))
			if a.Attempts > 0 {
				p += fmt.Sprintf(" (%d attempts)", a.Attempts)
			}
			probs = append(probs, p)
		}
	}
	if lookup == nil {
		return probs, nil
	}
	cur, err = r.archive.Find(ctx, bson.M{"metadata.pool": r.cfg.Pool.Name, FieldOutcome: OutcomeDisabled,
		FieldRetiredAt: bson.M{"$gte": now.Add(-recheckWithin)}, FieldDeletedAt: bson.M{"$exists": false}},
		options.Find().SetSort(bson.D{{Key: FieldRetiredAt, Value: -1}}).SetLimit(recheckMax))
	if err != nil {
		return nil, fmt.Errorf("retire: read retired keys: %w", err)
	}
	var docs []archived
	if err := cur.All(ctx, &docs); err != nil {
		return nil, fmt.Errorf("retire: read retired keys: %w", err)
	}
	for _, a := range docs {
		k, err := lookup(ctx, a.UpstreamID)
		key, _ := rotation.DecodeKey(a.Document)
		switch {
		case errors.Is(err, keyadmin.ErrNotFound):
		case err != nil:
			probs = append(probs, fmt.Sprintf("retired_keys_unverified: the upstream could not be asked about key %s (rotation %s): %v", key.ID, a.ID, err))
			return probs, nil
		case !k.Disabled:
			probs = append(probs, fmt.Sprintf("retired_key_enabled: key %s (rotation %s) was disabled upstream at %s but the upstream shows it enabled",
				key.ID, a.ID, a.RetiredAt.UTC().Format(time.RFC3339)))
		}
	}
	return probs, nil
}
