package rotation

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// errRotatedElsewhere means the old key was rotated by someone else (the
// proxy's own rotator) under this rotation, which undid its own insert.
type errRotatedElsewhere struct{ newKeyID string }

func (e errRotatedElsewhere) Error() string {
	return "old key was rotated by someone else onto " + e.newKeyID + "; this rotation was undone"
}

// stateUndone marks a rotation undone because the old key was rotated by
// someone else under it.
const stateUndone = "undone"

// undoneBackupField names, in an undone journal entry, the backup it gave
// back; its backupId then holds releasedBackupID, unique per rotation.
const undoneBackupField = "undoneBackupId"

func releasedBackupID(rotationID string) string { return "undone/" + rotationID }

// oldKeyGone handles an old key found missing. Usually this rotation deleted
// it. But the proxy's own rotator may have rotated it under us: then a
// foreign replacement (a backup used for the old key by someone else) is
// live, and this rotation undoes its own insert and gives its backup back,
// so the pool keeps its size (docs/design.md "Rotation guarantees").
func (s *saga) oldKeyGone(ctx context.Context) error {
	if s.e.ForwardOnly {
		// Its key may have been answered: it stays. Without the legacy
		// rotator the old key left by this rotation's own delete; were a
		// foreign replacement live all the same, recovery removes it if
		// unbound, and verify names it.
		return nil
	}
	heir, err := s.foreignHeir(ctx)
	if err != nil || heir == "" {
		return err
	}
	return s.undo(ctx, heir)
}

// foreignHeir returns the live key someone else's rotation of the old key
// brought in (or its live successor), or "": when set, this rotation undoes
// itself once it finds the old key gone.
func (s *saga) foreignHeir(ctx context.Context) (string, error) {
	r := s.r
	// Foreign: not reserved by any rotation of ours (an earlier one of a key
	// put back by hand carries its claimedBy; one from before claimedBy
	// existed is in the journal).
	cur, err := r.backups.Find(ctx, bson.M{FieldUsedFor: s.e.OldKeyID, FieldIsUsed: true,
		"_id": bson.M{"$ne": s.e.BackupID}, claimField: bson.M{"$exists": false}},
		options.Find().SetProjection(bson.M{"_id": 1}))
	if err != nil {
		return "", fmt.Errorf("look for another replacement of %s: %w", s.e.OldKeyID, err)
	}
	var ids []string
	for cur.Next(ctx) {
		if id, ok := cur.Current.Lookup("_id").StringValueOK(); ok {
			ids = append(ids, id)
		}
	}
	if err := cur.Err(); err != nil {
		return "", err
	}
	for _, id := range ids {
		if slices.Contains(s.e.Prior, id) {
			continue // replaced an earlier copy of the old key
		}
		ours, err := r.journal.CountDocuments(ctx, bson.M{"pool": r.pool.Name, "oldKeyId": s.e.OldKeyID, "newKeyId": id})
		if err != nil {
			return "", err
		}
		if ours > 0 {
			continue
		}
		heir, err := r.liveHeir(ctx, id, 0)
		if err != nil || heir != "" {
			return heir, err
		}
	}
	return "", nil
}

// liveHeir returns id if it is a live key, else the live key it was
// rotated onto (by anyone, any number of times), else "": a foreign
// replacement may have been rotated onward before ours looked.
func (r *Rotator) liveHeir(ctx context.Context, id string, depth int) (string, error) {
	n, err := r.keys.CountDocuments(ctx, bson.M{"_id": id})
	if err != nil {
		return "", err
	}
	if n > 0 {
		return id, nil
	}
	if depth >= maxChain {
		return "", nil
	}
	cur, err := r.backups.Find(ctx, bson.M{FieldUsedFor: id, FieldIsUsed: true}, options.Find().SetProjection(bson.M{"_id": 1}))
	if err != nil {
		return "", fmt.Errorf("look for the replacement of %s: %w", id, err)
	}
	var next []string
	for cur.Next(ctx) {
		if nid, ok := cur.Current.Lookup("_id").StringValueOK(); ok && nid != id {
			next = append(next, nid)
		}
	}
	if err := cur.Err(); err != nil {
		return "", err
	}
	for _, nid := range next {
		heir, err := r.liveHeir(ctx, nid, depth+1)
		if err != nil || heir != "" {
			return heir, err
		}
	}
	return "", nil
}

// undo takes this rotation back after someone else rotated the old key onto
// other: the bindings that followed our key go to theirs, our key is
// archived and deleted, our backup given back, the old key's archived
// copies marked undone, the journal entry marked undone. Every step is idempotent; a crash in between is redone by
// recovery, which finds the old key gone again.
func (s *saga) undo(ctx context.Context, other string) error {
	r := s.r
	f := r.pool.BindingKeyField
	if _, err := r.bindings.UpdateMany(ctx, bson.M{f: s.e.NewKeyID}, bson.M{"$set": bson.M{
		f: other, "updatedAt": r.opts.Now().UTC(),
	}}); err != nil {
		return fmt.Errorf("undo: move bindings to %s: %w", other, err)
	}
	raw, err := r.keys.FindOne(ctx, bson.M{"_id": s.e.NewKeyID}).Raw()
	if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
		return err
	}
	if raw != nil {
		if k, err := DecodeKey(raw); err == nil && s.ours(k) {
			if err := r.archiveCopy(ctx, s.e.ID+"/undone/"+k.ID, s.e.ID, k.ID, "rotation_undone", other, raw); err != nil {
				return err
			}
			if n, err := r.deleteExactly(ctx, raw); err != nil || n == 0 {
				return fmt.Errorf("undo: delete %s (changed: %v): %w", k.ID, n == 0, err)
			}
		}
	}
	if _, err := r.backups.UpdateOne(ctx, bson.M{"_id": s.e.BackupID, claimField: s.e.ID, FieldUsedFor: s.e.OldKeyID},
		bson.M{"$set": bson.M{FieldIsUsed: false, FieldActivated: false}, "$unset": bson.M{FieldUsedFor: "", FieldUsedAt: "", claimField: ""}}); err != nil {
		return fmt.Errorf("undo: give back backup %s: %w", s.e.BackupID, err)
	}
	// A history record a resumed step wrote stands for nothing now, nor
	// does an archived copy of the old key stand for a deletion.
	if _, err := r.history.DeleteOne(ctx, bson.M{"_id": s.e.ID}); err != nil {
		return fmt.Errorf("undo: remove history %s: %w", s.e.ID, err)
	}
	if _, err := r.markArchiveUndone(ctx, []journalEntry{s.e}); err != nil {
		return fmt.Errorf("undo: %w", err)
	}
	// The entry stops holding the backup in the unique (pool, backupId)
	// index, or the backup given back could never be claimed again; the
	// backup stays named in undoneBackupId, the outcome in state and
	// supersededBy. A late markDone (filtered on the backupId) then matches
	// nothing.
	if _, err := r.journal.UpdateOne(ctx, bson.M{"_id": s.e.ID, "backupId": s.e.BackupID}, bson.M{"$set": bson.M{
		"state": stateUndone, "supersededBy": other, "finishedAt": r.opts.Now().UTC(),
		"backupId": releasedBackupID(s.e.ID), undoneBackupField: s.e.BackupID,
	}}); err != nil {
		return fmt.Errorf("undo: mark journal: %w", err)
	}
	r.log.Warn("old key was rotated by someone else under this rotation; undone, backup given back", "key", s.e.OldKeyID, "rotation", s.e.ID, "new_key", other)
	return errRotatedElsewhere{newKeyID: other}
}

// isOldKey reports whether doc is the document this rotation retires: the
// same id and secret. A secret replaced in place makes it another key, which
// the rotation leaves alone (otherSecret).
func (s *saga) isOldKey(doc bson.Raw) bool {
	k, err := DecodeKey(doc)
	if err != nil {
		return false
	}
	return sameDocument(s.e.ID, s.r.pool.Name, k.ID, k.APIKey)
}

// otherSecret handles a document under the old id that holds another
// secret. If it carries this rotation's stamp, or the old key was never
// stamped (no copy archived), it is the old key re-keyed in place: this
// rotation retired nothing and undoes itself (bindings back, our key out,
// backup given back), so the pool keeps its size. Otherwise the stamped old
// key left the pool (this rotation's delete, its reply lost, or a crash
// after it) and another key was put under its id since: the rotation goes
// on as for an old key gone, and that key stays.
func (s *saga) otherSecret(ctx context.Context, doc bson.Raw) error {
	r := s.r
	if by, _ := doc.Lookup(retiredField).StringValueOK(); by != s.e.ID {
		n, err := r.archive.CountDocuments(ctx, oldKeyCopies(r.pool, s.e))
		if err != nil {
			return fmt.Errorf("read archived copies of %s: %w", s.e.OldKeyID, err)
		}
		if n > 0 {
			r.log.Warn("old key was archived and has left the pool; another key with the same id stays live", "key", s.e.OldKeyID, "rotation", s.e.ID)
			s.oldKey = nil
			return s.oldKeyGone(ctx)
		}
	}
	if s.e.ForwardOnly {
		// The new key may have been answered: it stays, and so does the
		// re-keyed key, a different key; the pool is one larger and the
		// rotation completes, having retired the old secret.
		r.log.Warn("old key's secret was replaced in place; leaving it live beside the new key (forward-only rotation)", "key", s.e.OldKeyID, "rotation", s.e.ID, "new_key", s.e.NewKeyID)
		s.oldKey = nil
		return nil
	}
	r.log.Warn("old key's secret was replaced in place; leaving it live and undoing this rotation", "key", s.e.OldKeyID, "rotation", s.e.ID)
	return s.undo(ctx, s.e.OldKeyID)
}

// oldKeyCopies matches the copies of e's old key that e archived: the entry
// under the rotation id and those of later versions (rotation id + "/" +
// digest). The copies of keys an undo or a recovery deleted (our new key, a
// late insert) name another sourceId.
func oldKeyCopies(p Pool, e journalEntry) bson.M {
	// '0' sorts after '/': the range holds the rotation id and its
	// "<id>/..." entries, by the _id index.
	return bson.M{"_id": bson.M{"$gte": e.ID, "$lt": e.ID + "0"}, "sourceCollection": p.KeysCollection,
		"sourceId": e.OldKeyID, "metadata.rotationId": e.ID}
}

// FieldArchiveUndoneAt, on an archive document, marks a copy of an undone
// rotation's old key: the rotation archived the key but deleted nothing
// (its secret was replaced in place, or someone else rotated it away). The
// copy is kept, since it may be the only one, but records no deletion:
// nothing acts on it as on a deleted key.
const FieldArchiveUndoneAt = "undoneAt"

// markArchiveUndone marks the copies of the old key that undone rotations
// archived: the entry under the rotation id and those of later versions
// (rotation id + "/" + digest). The copies of keys an undo or a recovery
// did delete (our new key, a late insert) name another sourceId and stay.
// Idempotent: an entry is marked once, and a copy archived late (a
// command delivered after the undo) is marked by the next recovery pass.
func (r *Rotator) markArchiveUndone(ctx context.Context, entries []journalEntry) (int, error) {
	if len(entries) == 0 {
		return 0, nil
	}
	or := make(bson.A, 0, len(entries))
	for _, e := range entries {
		or = append(or, oldKeyCopies(r.pool, e))
	}
	res, err := r.archive.UpdateMany(ctx, bson.M{"$or": or, FieldArchiveUndoneAt: bson.M{"$exists": false}},
		bson.M{"$set": bson.M{FieldArchiveUndoneAt: r.opts.Now().UTC()}})
	if err != nil {
		return 0, fmt.Errorf("mark the archived copies of undone rotations: %w", err)
	}
	return int(res.ModifiedCount), nil
}

// settleUndone repairs what late steps of undone rotations left: a history
// record written after (or while) the undo ran, a copy of the old key
// archived after it (or by a version before undos marked them), a backup marked used or
// reserved again for the undone rotation after it was given back, and an
// undone entry of an earlier version still holding its backup in the
// unique (pool, backupId) index. Their late key inserts carry the insert
// mark and are removed by sweepMarked, which runs first.
func (r *Rotator) settleUndone(ctx context.Context) (int, error) {
	cur, err := r.journal.Find(ctx, bson.M{"pool": r.pool.Name, "state": stateUndone})
	if err != nil {
		return 0, fmt.Errorf("find undone rotations: %w", err)
	}
	var entries []journalEntry
	if err := cur.All(ctx, &entries); err != nil {
		return 0, fmt.Errorf("find undone rotations: %w", err)
	}
	if len(entries) == 0 {
		return 0, nil
	}
	n := 0
	ids := make([]string, 0, len(entries))
	byID := map[string]journalEntry{}
	for _, e := range entries {
		ids = append(ids, e.ID)
		byID[e.ID] = e
		if e.BackupID != releasedBackupID(e.ID) {
			res, err := r.journal.UpdateOne(ctx, bson.M{"_id": e.ID, "backupId": e.BackupID, "state": stateUndone},
				bson.M{"$set": bson.M{"backupId": releasedBackupID(e.ID), undoneBackupField: e.BackupID}})
			if err != nil {
				return n, fmt.Errorf("release backup of undone rotation %s: %w", e.ID, err)
			}
			n += int(res.ModifiedCount)
		}
	}
	res, err := r.history.DeleteMany(ctx, bson.M{"_id": bson.M{"$in": ids}})
	if err != nil {
		return n, fmt.Errorf("remove history of undone rotations: %w", err)
	}
	n += int(res.DeletedCount)
	marked, err := r.markArchiveUndone(ctx, entries)
	n += marked
	if err != nil {
		return n, err
	}
	bc, err := r.backups.Find(ctx, bson.M{claimField: bson.M{"$in": ids}}, options.Find().SetProjection(bson.M{"_id": 1, claimField: 1, FieldUsedFor: 1}))
	if err != nil {
		return n, fmt.Errorf("find backups of undone rotations: %w", err)
	}
	var backups []bson.Raw
	if err := bc.All(ctx, &backups); err != nil {
		return n, fmt.Errorf("find backups of undone rotations: %w", err)
	}
	for _, b := range backups {
		id, ok := b.Lookup("_id").StringValueOK()
		by, _ := b.Lookup(claimField).StringValueOK()
		e := byID[by]
		if !ok {
			continue
		}
		if live, err := r.keys.CountDocuments(ctx, bson.M{"_id": id}); err != nil || live > 0 {
			if err != nil {
				return n, err
			}
			continue // a live key: not ours to give back; verify names it
		}
		res, err := r.backups.UpdateOne(ctx, bson.M{"_id": id, claimField: by, FieldUsedFor: e.OldKeyID},
			bson.M{"$set": bson.M{FieldIsUsed: false, FieldActivated: false}, "$unset": bson.M{FieldUsedFor: "", FieldUsedAt: "", claimField: ""}})
		if err != nil {
			return n, fmt.Errorf("give back backup %s of undone rotation %s: %w", id, by, err)
		}
		if res.ModifiedCount > 0 {
			n++
			r.log.Warn("gave back a backup a late step of an undone rotation marked used", "backup", id, "rotation", by)
		}
	}
	return n, nil
}
