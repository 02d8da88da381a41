package rotation

import (
	"context"
	"errors"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Preview says what Rotate would answer now, writing nothing: it reads the
// key, the journal and the backups as Rotate does. Rotated means a backup
// would be claimed (NewKeyID names the first in claim order) under
// RotationID. Another rotator acting in between can make the real call
// answer otherwise, as it can between two real calls.
func (r *Rotator) Preview(ctx context.Context, keyID string) (Result, error) {
	res := Result{OldKeyID: keyID}
	doc, err := r.keys.FindOne(ctx, bson.M{"_id": keyID}).Raw()
	if errors.Is(err, mongo.ErrNoDocuments) {
		return r.missingKey(ctx, keyID)
	}
	if err != nil {
		return res, fmt.Errorf("read key %s: %w", keyID, err)
	}
	key, err := DecodeKey(doc)
	if err != nil {
		return res, fmt.Errorf("key %s: %w", keyID, err)
	}
	base := RotationID(r.pool.Name, keyID, key.APIKey)
	for gen := range maxGenerations {
		id := generationID(base, gen)
		var e journalEntry
		err := r.journal.FindOne(ctx, bson.M{"_id": id}).Decode(&e)
		if errors.Is(err, mongo.ErrNoDocuments) {
			res.RotationID = id
			return r.previewClaim(ctx, res)
		}
		if err != nil {
			return res, fmt.Errorf("read journal %s: %w", id, err)
		}
		// As claimLost: unfinished, or finished with the key live again
		// by a late insert (recovery removes it), is that rotation's
		// answer; a key put back by hand rotates under the next id.
		if (e.State != stateDone && e.State != stateUndone) || key.Pending != "" {
			return r.entryResult(ctx, e), nil
		}
	}
	return res, fmt.Errorf("key %s: rotated and put back more than %d times", keyID, maxGenerations)
}

// previewClaim names the backup a claim would try first, or answers
// NoBackup.
func (r *Rotator) previewClaim(ctx context.Context, res Result) (Result, error) {
	raw, err := r.backups.FindOne(ctx, bson.M{
		FieldIsUsed: bson.M{"$ne": true},
		"_id":       bson.M{"$type": "string", "$ne": ""},
		FieldAPIKey: bson.M{"$type": "string", "$ne": ""},
	}, options.FindOne().SetSort(bson.D{{Key: FieldCreatedAt, Value: 1}, {Key: "_id", Value: 1}}).
		SetProjection(bson.M{"_id": 1})).Raw()
	if errors.Is(err, mongo.ErrNoDocuments) {
		res.Outcome = NoBackup
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("find backups: %w", err)
	}
	res.Outcome, res.NewKeyID = Rotated, raw.Lookup("_id").StringValue()
	return res, nil
}
