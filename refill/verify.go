package refill

import (
	"context"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// UnsettledAfter: a slot still unsettled this long after its request is
// named by Verify.
const UnsettledAfter = time.Hour

// Verify names the slots left unsettled (refill_slot_unsettled): their
// key may exist upstream without being a backup or disabled.
func (r *Refiller) Verify(ctx context.Context) ([]string, error) {
	cur, err := r.journal.Find(ctx, bson.M{"pool": r.cfg.Pool.Name, "kind": kindSlot, "state": statePending,
		"requestedAt": bson.M{"$lte": r.cfg.Now().UTC().Add(-UnsettledAfter)}}, options.Find().SetLimit(100))
	if err != nil {
		return nil, fmt.Errorf("refill: find unsettled slots: %w", err)
	}
	var slots []slot
	if err := cur.All(ctx, &slots); err != nil {
		return nil, fmt.Errorf("refill: find unsettled slots: %w", err)
	}
	var probs []string
	for _, s := range slots {
		p := fmt.Sprintf("refill_slot_unsettled: slot %s (key %s upstream) requested at %s is not settled", s.ID, s.Name, s.RequestedAt.UTC().Format(time.RFC3339))
		if s.LastError != "" {
			p += ": " + s.LastError
		}
		probs = append(probs, p)
	}
	return probs, nil
}
