package rotation

import (
	"context"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// usedFor lists the backups marked used for keyID (earlierReplacements).
func (r *Rotator) usedFor(ctx context.Context, keyID string) ([]string, error) {
	cur, err := r.backups.Find(ctx, bson.M{FieldUsedFor: keyID, FieldIsUsed: true}, options.Find().SetProjection(bson.M{"_id": 1}))
	if err != nil {
		return nil, fmt.Errorf("find replacements of %s: %w", keyID, err)
	}
	var ids []string
	for cur.Next(ctx) {
		if id, ok := cur.Current.Lookup("_id").StringValueOK(); ok {
			ids = append(ids, id)
		}
	}
	if err := cur.Err(); err != nil {
		return nil, fmt.Errorf("find replacements of %s: %w", keyID, err)
	}
	return ids, nil
}

// earlierReplacements lists the live keys some rotation (any rotator's)
// brought in for an earlier copy of keyID, among ids (usedFor). They are
// read before the key is confirmed live: every rotator deletes the old key
// before it inserts the new one, so a replacement live before the key was
// seen live again replaced a copy put back since, not the key this call
// rotates.
func (r *Rotator) earlierReplacements(ctx context.Context, keyID, secret string, ids []string) ([]string, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	kc, err := r.keys.Find(ctx, bson.M{"_id": bson.M{"$in": ids}}, options.Find().SetProjection(bson.M{"_id": 1}))
	if err != nil {
		return nil, fmt.Errorf("find replacements of %s: %w", keyID, err)
	}
	var live []string
	for kc.Next(ctx) {
		if id, ok := kc.Current.Lookup("_id").StringValueOK(); ok && id != keyID {
			live = append(live, id)
		}
	}
	if err := kc.Err(); err != nil || len(live) == 0 {
		return nil, err
	}
	// A separate, later read: one find over several ids is no snapshot.
	n, err := r.keys.CountDocuments(ctx, bson.M{"_id": keyID, FieldAPIKey: secret})
	if err != nil {
		return nil, fmt.Errorf("read key %s: %w", keyID, err)
	}
	if n == 0 {
		return nil, nil // gone (or re-keyed) since: nothing proven earlier
	}
	return live, nil
}
