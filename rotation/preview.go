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
// would be claimed under RotationID: NewKeyID names the first in claim
// order that a claim would not let go. Another rotator acting in between
// can make the real call answer otherwise, as it can between two real
// calls.
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
			return r.previewClaim(ctx, keyID, res)
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

// previewClaim names the backup a claim would take, or answers NoBackup. It
// passes over, in claim order, the backups a claim passes over: held in the
// journal by another claim (its journal insert fails), left aside by this
// rotator, live as a key under their own id (ErrKeyCollision), or holding a
// secret that was live under that id and rotated away (usable).
func (r *Rotator) previewClaim(ctx context.Context, keyID string, res Result) (Result, error) {
	cur, err := r.backups.Find(ctx, bson.M{
		FieldIsUsed: bson.M{"$ne": true},
		"_id":       bson.M{"$type": "string", "$ne": ""},
		FieldAPIKey: bson.M{"$type": "string", "$ne": ""},
	}, options.Find().SetSort(bson.D{{Key: FieldCreatedAt, Value: 1}, {Key: "_id", Value: 1}}).
		SetProjection(bson.M{"_id": 1, FieldAPIKey: 1}))
	if err != nil {
		return res, fmt.Errorf("find backups: %w", err)
	}
	defer cur.Close(ctx)
	now := r.opts.Now()
	for cur.Next(ctx) {
		id := cur.Current.Lookup("_id").StringValue()
		secret := cur.Current.Lookup(FieldAPIKey).StringValue()
		r.mu.Lock()
		until, skipped := r.skipped[id]
		r.mu.Unlock()
		if skipped && !now.After(until) {
			continue
		}
		passed, err := r.claimPassesOver(ctx, keyID, res.RotationID, id, secret)
		if err != nil {
			return res, err
		}
		if !passed {
			res.Outcome, res.NewKeyID = Rotated, id
			return res, nil
		}
	}
	if err := cur.Err(); err != nil {
		return res, fmt.Errorf("find backups: %w", err)
	}
	res.Outcome = NoBackup
	return res, nil
}

// claimPassesOver reports whether a claim of backup id for rotation
// rotationID of keyID would let it go without writing its key.
func (r *Rotator) claimPassesOver(ctx context.Context, keyID, rotationID, id, secret string) (bool, error) {
	held, err := r.journal.CountDocuments(ctx, bson.M{"pool": r.pool.Name, "backupId": id})
	if err != nil {
		return false, fmt.Errorf("read journal for backup %s: %w", id, err)
	}
	if held > 0 {
		return true, nil
	}
	away, err := r.journal.CountDocuments(ctx, bson.M{"_id": RotationID(r.pool.Name, id, secret)})
	if err != nil {
		return false, fmt.Errorf("read journal for backup %s: %w", id, err)
	}
	if away > 0 {
		return true, nil
	}
	raw, err := r.keys.FindOne(ctx, bson.M{"_id": id}).Raw()
	if errors.Is(err, mongo.ErrNoDocuments) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read key %s: %w", id, err)
	}
	// A key there is this rotation's own insert only if it carries its mark.
	k, err := DecodeKey(raw)
	return err != nil || k.ReplacedKey != keyID || k.Pending != rotationID, nil
}
