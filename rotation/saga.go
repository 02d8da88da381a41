package rotation

import (
	"context"
	"errors"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// saga runs the steps after the claim. Every step is idempotent and safe to
// run concurrently with the same step of another executor (the owner and a
// recoverer), so a crash at any instant is completed by running it again.
//
// Order (a deliberate variation on DESIGN.md's): the new key is inserted
// before the backup is marked used, so a backup marked used is always live
// as a key, even if the proxy later deletes used backups; insert precedes
// delete, so the pool never shrinks.
type saga struct {
	r *Rotator
	e journalEntry
	// oldKey is the old key document, read lazily on recovery.
	oldKey bson.Raw
	// backupSecret is empty on recovery: insertKey reads the backup then.
	backupSecret string
	// depth counts predecessors being completed, to stop a corrupt journal
	// from recursing forever.
	depth int
}

func (s *saga) run(ctx context.Context, from Step) error {
	steps := map[Step]func(context.Context) error{
		StepInsertKey:    s.insertKey,
		StepMarkBackup:   s.markBackup,
		StepMoveBindings: s.moveBindings,
		StepArchive:      s.archiveOld,
		StepDeleteOld:    s.deleteOld,
		StepHistory:      s.writeHistory,
		StepDone:         s.markDone,
	}
	for _, st := range Steps {
		if st < from {
			continue
		}
		if err := steps[st](ctx); err != nil {
			return fmt.Errorf("rotation %s step %s: %w", s.e.ID, st, err)
		}
		if err := s.r.after(ctx, s.e.ID, st); err != nil {
			return err
		}
	}
	return nil
}

func (s *saga) insertKey(ctx context.Context) error {
	r := s.r
	if s.backupSecret == "" {
		done, err := s.recoverInsertKey(ctx)
		if err != nil || done {
			return err
		}
	}
	newKey := bson.D{
		{Key: "_id", Value: s.e.NewKeyID},
		{Key: "apiKey", Value: s.backupSecret},
		{Key: "status", Value: "healthy"},
		{Key: "tokensUsed", Value: int64(0)},
		{Key: "requestsCount", Value: int64(0)},
		{Key: "totalSpend", Value: 0.0},
		{Key: "createdAt", Value: s.e.StartedAt},
		{Key: "replacedKey", Value: s.e.OldKeyID},
	}
	_, err := r.keys.InsertOne(ctx, newKey)
	if err == nil || !mongo.IsDuplicateKeyError(err) {
		return err
	}
	// Inserted before (by us or a concurrent executor) — unless the id holds
	// a different key.
	got, err := r.keys.FindOne(ctx, bson.M{"_id": s.e.NewKeyID}).Raw()
	if errors.Is(err, mongo.ErrNoDocuments) {
		return fmt.Errorf("new key %s: duplicate on insert but not found", s.e.NewKeyID)
	}
	if err != nil {
		return err
	}
	if secret, _ := got.Lookup("apiKey").StringValueOK(); secret != s.backupSecret {
		return fmt.Errorf("%w: %s", ErrKeyCollision, s.e.NewKeyID)
	}
	return nil
}

// recoverInsertKey decides, for a resumed saga, whether the new key still has
// to be inserted; if so it loads the backup's secret. It never re-inserts a
// key that went live and was since rotated away.
func (s *saga) recoverInsertKey(ctx context.Context) (done bool, err error) {
	r := s.r
	n, err := r.keys.CountDocuments(ctx, bson.M{"_id": s.e.NewKeyID})
	if err != nil {
		return false, err
	}
	if n > 0 {
		return true, nil
	}
	raw, err := r.backups.FindOne(ctx, bson.M{"_id": s.e.BackupID}).Raw()
	if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
		return false, err
	}
	if err == nil {
		// Marked used for this key: it was inserted (the mark follows the
		// insert) and has since left the pool.
		used, _ := raw.Lookup("isUsed").BooleanOK()
		usedFor, _ := raw.Lookup("usedFor").StringValueOK()
		if used && usedFor == s.e.OldKeyID {
			return true, nil
		}
	}
	rotatedSince, err := r.journal.CountDocuments(ctx, bson.M{"pool": r.pool.Name, "oldKeyId": s.e.NewKeyID})
	if err != nil {
		return false, err
	}
	if rotatedSince > 0 {
		return true, nil
	}
	if raw == nil {
		return false, ErrBackupVanished
	}
	secret, ok := raw.Lookup("apiKey").StringValueOK()
	if !ok || secret == "" {
		return false, fmt.Errorf("backup %s has no apiKey", s.e.BackupID)
	}
	s.backupSecret = secret
	return false, nil
}

func (s *saga) markBackup(ctx context.Context) error {
	// The same values on every retry: usedAt is the rotation's start.
	_, err := s.r.backups.UpdateOne(ctx, bson.M{"_id": s.e.BackupID}, bson.M{"$set": bson.M{
		"isUsed":    true,
		"activated": true,
		"usedFor":   s.e.OldKeyID,
		"usedAt":    s.e.StartedAt,
	}})
	return err
}

// settleArrival completes an unfinished rotation that brought the old key
// in. Its bindings must land on the old key before they move on: resumed
// after this rotation, it would move them onto a deleted key. Only a key a
// rotation inserted (it carries replacedKey) can have one, and its claim was
// written before the key existed, so this read cannot miss it.
func (s *saga) settleArrival(ctx context.Context) error {
	if s.oldKey != nil {
		if _, err := s.oldKey.LookupErr("replacedKey"); err != nil {
			return nil
		}
	}
	if s.depth >= maxChain {
		return fmt.Errorf("more than %d unfinished rotations chained before %s", maxChain, s.e.OldKeyID)
	}
	cur, err := s.r.journal.Find(ctx, bson.M{"pool": s.r.pool.Name, "newKeyId": s.e.OldKeyID, "state": stateClaimed})
	if err != nil {
		return fmt.Errorf("find rotation that brought %s in: %w", s.e.OldKeyID, err)
	}
	var prev []journalEntry
	if err := cur.All(ctx, &prev); err != nil {
		return fmt.Errorf("find rotation that brought %s in: %w", s.e.OldKeyID, err)
	}
	for _, e := range prev {
		p := &saga{r: s.r, e: e, depth: s.depth + 1}
		if err := p.run(ctx, StepInsertKey); err != nil {
			if errors.Is(err, ErrBackupVanished) {
				// Not this rotation's backup: its own claim must not be dropped.
				return fmt.Errorf("complete rotation that brought %s in: %v", s.e.OldKeyID, err)
			}
			return fmt.Errorf("complete rotation that brought %s in: %w", s.e.OldKeyID, err)
		}
		s.r.log.Info("unfinished rotation completed", "key", e.OldKeyID, "rotation", e.ID, "new_key", e.NewKeyID)
	}
	return nil
}

const maxChain = 64

func (s *saga) moveBindings(ctx context.Context) error {
	if err := s.settleArrival(ctx); err != nil {
		return err
	}
	f := s.r.pool.BindingKeyField
	_, err := s.r.bindings.UpdateMany(ctx, bson.M{f: s.e.OldKeyID}, bson.M{"$set": bson.M{
		f:           s.e.NewKeyID,
		"updatedAt": s.r.opts.Now().UTC(),
	}})
	return err
}

func (s *saga) archiveOld(ctx context.Context) error {
	r := s.r
	if s.oldKey == nil {
		raw, err := r.keys.FindOne(ctx, bson.M{"_id": s.e.OldKeyID}).Raw()
		if errors.Is(err, mongo.ErrNoDocuments) {
			// Deleted already, which happens only after its archive.
			return nil
		}
		if err != nil {
			return err
		}
		s.oldKey = raw
	}
	_, err := r.archive.InsertOne(ctx, bson.D{
		{Key: "_id", Value: s.e.ID},
		{Key: "sourceCollection", Value: r.pool.KeysCollection},
		{Key: "sourceId", Value: s.e.OldKeyID},
		{Key: "reason", Value: s.e.Reason},
		{Key: "deletedBy", Value: "spendchecker/rotation:" + r.opts.Owner},
		{Key: "deletedAt", Value: r.opts.Now().UTC()},
		{Key: "document", Value: s.oldKey},
		{Key: "metadata", Value: bson.D{
			{Key: "replacementKeyId", Value: s.e.NewKeyID},
			{Key: "rotationId", Value: s.e.ID},
			{Key: "pool", Value: r.pool.Name},
		}},
	})
	if mongo.IsDuplicateKeyError(err) {
		return nil
	}
	return err
}

func (s *saga) deleteOld(ctx context.Context) error {
	// DeletedCount 0 on a retry is fine: the archive holds the document.
	_, err := s.r.keys.DeleteOne(ctx, bson.M{"_id": s.e.OldKeyID})
	return err
}

func (s *saga) writeHistory(ctx context.Context) error {
	rec := s.e.History
	rec.ID, rec.NewKeyID = s.e.ID, s.e.NewKeyID
	_, err := s.r.history.InsertOne(ctx, rec)
	if mongo.IsDuplicateKeyError(err) {
		return nil
	}
	return err
}

func (s *saga) markDone(ctx context.Context) error {
	_, err := s.r.journal.UpdateOne(ctx, bson.M{"_id": s.e.ID}, bson.M{"$set": bson.M{
		"state":      stateDone,
		"finishedAt": s.r.opts.Now().UTC(),
	}})
	return err
}
