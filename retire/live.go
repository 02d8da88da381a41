package retire

import (
	"context"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/rotation"
)

// isLive reports whether secret is the apiKey of a key, or of a backup not
// yet used (or reserved by a rotation in progress), in any live collection,
// or one of them names upstreamID as its
// upstream id (a copied or mistyped upstreamKeyId: disabling it would cut
// that key).
func (r *Retirer) isLive(ctx context.Context, secret, upstreamID string) (bool, error) {
	for _, l := range r.live {
		f := bson.M{rotation.FieldAPIKey: secret}
		if upstreamID != "" {
			or := bson.A{f, bson.M{rotation.FieldUpstreamKeyID: upstreamID}}
			if mapped := r.mappedTo(upstreamID); len(mapped) > 0 {
				// Named by the pool's upstream-key-ids (a copied line).
				or = append(or, bson.M{"_id": bson.M{"$in": mapped}, rotation.FieldUpstreamKeyID: bson.M{"$in": bson.A{nil, ""}}})
			}
			f = bson.M{"$or": or}
		}
		if l.backups {
			// Unused, or reserved by a rotation that has not marked it
			// used yet (no usedAt): its key is about to go live.
			f = bson.M{"$and": bson.A{f, bson.M{"$or": bson.A{
				bson.M{rotation.FieldIsUsed: bson.M{"$ne": true}}, bson.M{rotation.FieldUsedAt: bson.M{"$exists": false}}}}}}
		}
		n, err := l.c.CountDocuments(ctx, f, options.Count().SetLimit(1))
		if err != nil {
			return false, fmt.Errorf("retire: is the key live in %s: %w", l.c.Name(), err)
		}
		if n > 0 {
			return true, nil
		}
	}
	return false, nil
}

// mappedTo lists the key ids the pool's upstream-key-ids maps to
// upstreamID.
func (r *Retirer) mappedTo(upstreamID string) bson.A {
	var ids bson.A
	for id, up := range r.cfg.IDs {
		if up == upstreamID {
			ids = append(ids, id)
		}
	}
	return ids
}
