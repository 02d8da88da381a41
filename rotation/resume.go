package rotation

import (
	"context"
	"errors"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// recoverInsertKey decides, for a resumed saga, whether the new key still has
// to be inserted; if so it loads the backup's secret. It never re-inserts a
// key that went live and was since rotated away, and never takes a key that
// is not provably this rotation's for the new key.
func (s *saga) recoverInsertKey(ctx context.Context) (done bool, err error) {
	r := s.r
	got, err := r.keys.FindOne(ctx, bson.M{"_id": s.e.NewKeyID}).Raw()
	if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
		return false, err
	}
	if got != nil {
		if k, err := DecodeKey(got); err == nil && s.ours(k) {
			return true, nil
		}
		return false, fmt.Errorf("%w: %s", ErrKeyCollision, s.e.NewKeyID)
	}
	raw, err := r.backups.FindOne(ctx, bson.M{"_id": s.e.BackupID}).Raw()
	if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
		return false, err
	}
	if raw == nil {
		// The proxy deletes used backups hours after use: the key may have
		// gone live and left since. Its archive tells.
		left, err := s.insertedAndLeft(ctx)
		if err != nil || left {
			return left, err
		}
		return s.insertedMeanwhile(ctx, ErrBackupVanished)
	}
	activated, _ := raw.Lookup(FieldActivated).BooleanOK()
	usedFor, _ := raw.Lookup(FieldUsedFor).StringValueOK()
	by, hasBy := raw.Lookup(claimField).StringValueOK()
	usedAt, _ := raw.Lookup(FieldUsedAt).TimeOK()
	if activated && usedFor == s.e.OldKeyID && (by == s.e.ID || (!hasBy && usedAt.Equal(s.e.StartedAt))) {
		// Marked used by this rotation: it was inserted (the mark follows
		// the insert) and has since left the pool.
		return true, nil
	}
	raw, why, err := r.reserve(ctx, s.e)
	if err != nil {
		return false, err
	}
	switch why {
	case "":
	case "deleted":
		return s.insertedMeanwhile(ctx, ErrBackupVanished)
	default:
		return s.insertedMeanwhile(ctx, errBackupTaken)
	}
	secret, why, _, err := r.usable(ctx, s.e, raw)
	if err != nil {
		return false, err
	}
	if why != "" {
		left, err := s.insertedAndLeft(ctx)
		if err != nil || left {
			return left, err
		}
		return s.insertedMeanwhile(ctx, fmt.Errorf("%w: backup %s: %s", ErrKeyCollision, s.e.BackupID, why))
	}
	s.backupSecret = secret
	s.backupCarried = carried(raw)
	return false, nil
}

// insertedMeanwhile reads the new key again before a resumed saga gives
// up with cause, after which the claim is dropped. The key read first may
// predate a pause in which another executor inserted it, marked the backup
// used (which the proxy's clean-up may then delete) and answered early:
// the claim of a key that is live must never be dropped, or the key is
// removed as a late insert (a rotation answered early must never lose its
// key).
func (s *saga) insertedMeanwhile(ctx context.Context, cause error) (done bool, err error) {
	again, err := s.r.keys.FindOne(ctx, bson.M{"_id": s.e.NewKeyID}).Raw()
	if errors.Is(err, mongo.ErrNoDocuments) {
		return false, cause
	}
	if err != nil {
		return false, err
	}
	if k, err := DecodeKey(again); err == nil && s.ours(k) {
		return true, nil
	}
	return false, cause
}

// insertedAndLeft reports whether this rotation's key went live and was
// rotated away since: an archived copy of the new key names the old key as
// replaced and this rotation's start as its creation.
func (s *saga) insertedAndLeft(ctx context.Context) (bool, error) {
	cur, err := s.r.archive.Find(ctx, bson.M{"sourceCollection": s.r.pool.KeysCollection, "sourceId": s.e.NewKeyID})
	if err != nil {
		return false, err
	}
	var docs []struct {
		Document bson.Raw `bson:"document"`
	}
	if err := cur.All(ctx, &docs); err != nil {
		return false, err
	}
	for _, d := range docs {
		if k, err := DecodeKey(d.Document); err == nil && k.Pending == "" && s.ours(k) {
			return true, nil
		}
	}
	return false, nil
}
