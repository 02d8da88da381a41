package rotation

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// RecoverReport counts what Recover did.
type RecoverReport struct {
	// Completed rotations found unfinished and now done.
	Completed int
	// Dropped claims whose backup vanished, was used elsewhere or turned out
	// to be a live key before it was used; their keys were never touched and
	// can be rotated again.
	Dropped int
	// Failed rotations that could not be completed this time.
	Failed int
	// Removed keys that a late insert brought back after their rotation had
	// moved on; each is archived before it is deleted.
	Removed int
	// Repaired states the old rotators or a lost update left: backups live
	// as keys marked used, insert marks left on live keys cleared.
	Repaired int
}

// Recover finishes every unfinished rotation of the pool found in the
// journal, removes keys that late inserts brought back, and repairs the
// states that are safe to repair (docs/reliability.md "Reliability"). It is safe to run
// concurrently with rotations and with other recoverers: each step is
// idempotent.
func (r *Rotator) Recover(ctx context.Context) (RecoverReport, error) {
	var rep RecoverReport
	cur, err := r.journal.Find(ctx, bson.M{"pool": r.pool.Name, "state": stateClaimed},
		options.Find().SetSort(bson.D{{Key: "startedAt", Value: 1}}))
	if err != nil {
		return rep, fmt.Errorf("find unfinished rotations: %w", err)
	}
	var entries []journalEntry
	if err := cur.All(ctx, &entries); err != nil {
		return rep, fmt.Errorf("find unfinished rotations: %w", err)
	}
	var errs []error
	for _, e := range entries {
		s := &saga{r: r, e: e}
		err := s.run(ctx, StepInsertKey)
		switch {
		case err == nil:
			rep.Completed++
			r.log.Info("unfinished rotation completed", "key", e.OldKeyID, "rotation", e.ID, "new_key", e.NewKeyID)
		case errors.As(err, new(errRotatedElsewhere)):
			rep.Dropped++
		case errors.Is(err, errClaimMoved):
			// Dropped or claimed again by another executor since it was read.
		case errors.Is(err, ErrBackupVanished), errors.Is(err, errBackupTaken), errors.Is(err, ErrKeyCollision):
			if errors.Is(err, ErrKeyCollision) {
				r.skip(e.BackupID)
			}
			if derr := r.dropClaim(ctx, e); derr != nil {
				rep.Failed++
				errs = append(errs, derr)
				continue
			}
			rep.Dropped++
			r.log.Warn("dropped a claim whose backup cannot be used; the key is unchanged", "key", e.OldKeyID, "rotation", e.ID, "backup", e.BackupID, "err", err)
		default:
			rep.Failed++
			errs = append(errs, err)
			r.log.Warn("could not complete rotation; will retry", "key", e.OldKeyID, "rotation", e.ID, "err", err)
		}
	}
	removed, repaired, err := r.sweepMarked(ctx)
	rep.Removed += removed
	rep.Repaired += repaired
	if err != nil {
		errs = append(errs, err)
	}
	repaired, err = r.settleUndone(ctx)
	rep.Repaired += repaired
	if err != nil {
		errs = append(errs, err)
	}
	if r.repairDue() {
		repaired, err = r.markBackupsLiveAsKeys(ctx)
		rep.Repaired += repaired
		if err != nil {
			errs = append(errs, err)
		}
		repaired, err = r.removeForeignDuplicates(ctx)
		rep.Repaired += repaired
		if err != nil {
			errs = append(errs, err)
		}
	}
	return rep, errors.Join(errs...)
}

// repairEvery spaces out the search for backups live as keys: it reads every
// unused backup and looks their ids up among the keys, too much for every
// cycle of a large pool, and rotations skip such backups meanwhile. A
// process's first recovery pass (and so `spendchecker recover`) always runs it.
const repairEvery = 10 * time.Minute

func (r *Rotator) repairDue() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.opts.Now()
	if !r.lastRepair.IsZero() && now.Sub(r.lastRepair) < repairEvery {
		return false
	}
	r.lastRepair = now
	return true
}

// sweepMarked settles every key still carrying an insert mark.
func (r *Rotator) sweepMarked(ctx context.Context) (removed, repaired int, err error) {
	// $type rather than $exists: an index on the field serves it.
	cur, err := r.keys.Find(ctx, bson.M{pendingField: bson.M{"$type": "string"}})
	if err != nil {
		return 0, 0, fmt.Errorf("find marked keys: %w", err)
	}
	var docs []bson.Raw
	if err := cur.All(ctx, &docs); err != nil {
		return 0, 0, fmt.Errorf("find marked keys: %w", err)
	}
	var errs []error
	for _, raw := range docs {
		did, err := r.sweepKey(ctx, raw)
		switch {
		case err != nil:
			errs = append(errs, err)
		case did == sweptRemoved:
			removed++
		case did == sweptCleared:
			repaired++
		}
	}
	return removed, repaired, errors.Join(errs...)
}

const (
	sweptRemoved = "removed"
	sweptCleared = "cleared"
)

// lateInsertReason is the archive reason of a key removed because a late
// insert brought it back.
const lateInsertReason = "late_insert"

// sweepKey settles one key carrying an insert mark. While its rotation is
// unfinished and names it, the saga settles it. A key whose rotation is done
// and that was not rotated away since is the live key, its mark left by a
// lost update: the mark is cleared. Any other marked key was inserted after
// its rotation had moved on (a late insert): it is archived and removed.
func (r *Rotator) sweepKey(ctx context.Context, raw bson.Raw) (string, error) {
	k, err := DecodeKey(raw)
	if err != nil || k.Pending == "" {
		return "", nil
	}
	var e journalEntry
	err = r.journal.FindOne(ctx, bson.M{"_id": k.Pending}).Decode(&e)
	if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
		return "", fmt.Errorf("read rotation %s: %w", k.Pending, err)
	}
	if err == nil && e.NewKeyID == k.ID && e.OldKeyID == k.ReplacedKey && e.State != stateUndone {
		if e.State != stateDone {
			return "", nil
		}
		away, err := r.journal.CountDocuments(ctx, bson.M{"_id": RotationID(r.pool.Name, k.ID, k.APIKey)})
		if err != nil {
			return "", fmt.Errorf("read journal for %s: %w", k.ID, err)
		}
		if away == 0 {
			_, err := r.keys.UpdateOne(ctx, bson.M{"_id": k.ID, pendingField: k.Pending}, bson.M{"$unset": bson.M{pendingField: ""}})
			if err != nil {
				return "", fmt.Errorf("clear mark on %s: %w", k.ID, err)
			}
			return sweptCleared, nil
		}
	}
	if err := r.archiveCopy(ctx, k.Pending+"/late/"+k.ID, k.Pending, k.ID, lateInsertReason, "", raw); err != nil {
		return "", fmt.Errorf("archive late insert %s: %w", k.ID, err)
	}
	n, err := r.deleteExactly(ctx, raw)
	if err != nil {
		return "", fmt.Errorf("remove late insert %s: %w", k.ID, err)
	}
	if n == 0 {
		return "", nil // changed or gone since: the next pass looks again
	}
	r.log.Warn("removed a key a late insert brought back after its rotation moved on; archived", "key", k.ID, "rotation", k.Pending)
	return sweptRemoved, nil
}

// markBackupsLiveAsKeys marks used the unused backups that are already live
// as keys with their own secret (the old rotators left such backups): they
// can never be claimed, and counting them as available hides a shortage.
func (r *Rotator) markBackupsLiveAsKeys(ctx context.Context) (int, error) {
	live, err := r.backupsLiveAsKeys(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, b := range live {
		if !b.sameSecret {
			continue // an id collision: which one is right is the operator's call
		}
		_, err := r.backups.UpdateOne(ctx, bson.M{"_id": b.id, FieldAPIKey: b.secret, FieldIsUsed: bson.M{"$ne": true}}, bson.M{"$set": bson.M{
			FieldIsUsed:    true,
			FieldActivated: true,
			FieldUsedFor:   b.replacedKey,
			FieldUsedAt:    r.opts.Now().UTC(),
		}})
		if err != nil {
			return n, fmt.Errorf("mark backup %s used: %w", b.id, err)
		}
		n++
		r.log.Warn("marked used a backup already live as a key", "backup", b.id)
	}
	return n, nil
}

type liveBackup struct {
	id, secret, replacedKey string
	sameSecret              bool
}

// backupsLiveAsKeys lists the unused backups whose _id is a live key.
func (r *Rotator) backupsLiveAsKeys(ctx context.Context) ([]liveBackup, error) {
	cur, err := r.backups.Find(ctx, bson.M{FieldIsUsed: bson.M{"$ne": true}, "_id": bson.M{"$type": "string"}},
		options.Find().SetProjection(bson.M{"_id": 1, FieldAPIKey: 1}))
	if err != nil {
		return nil, fmt.Errorf("list unused backups: %w", err)
	}
	secrets := map[string]string{}
	var ids []string
	for cur.Next(ctx) {
		id, _ := cur.Current.Lookup("_id").StringValueOK()
		secrets[id], _ = cur.Current.Lookup(FieldAPIKey).StringValueOK()
		ids = append(ids, id)
	}
	if err := cur.Err(); err != nil {
		return nil, fmt.Errorf("list unused backups: %w", err)
	}
	var out []liveBackup
	for len(ids) > 0 {
		batch := ids[:min(len(ids), 500)]
		ids = ids[len(batch):]
		kc, err := r.keys.Find(ctx, bson.M{"_id": bson.M{"$in": batch}}, options.Find().SetProjection(bson.M{"_id": 1, FieldAPIKey: 1, FieldReplacedKey: 1}))
		if err != nil {
			return nil, fmt.Errorf("find keys with backup ids: %w", err)
		}
		for kc.Next(ctx) {
			id, _ := kc.Current.Lookup("_id").StringValueOK()
			secret, _ := kc.Current.Lookup(FieldAPIKey).StringValueOK()
			rk, _ := kc.Current.Lookup(FieldReplacedKey).StringValueOK()
			out = append(out, liveBackup{id: id, secret: secrets[id], replacedKey: rk, sameSecret: secret == secrets[id] && secret != ""})
		}
		if err := kc.Err(); err != nil {
			return nil, fmt.Errorf("find keys with backup ids: %w", err)
		}
	}
	return out, nil
}

// Journal indexes. The unique index on backups is per pool: two pools may
// hold backups with the same _id. legacyBackupIndex, the global one of
// earlier versions, is dropped once the per-pool one exists.
const (
	journalBackupIndex = "pool_1_backupId_1_unique"
	legacyBackupIndex  = "backupId_unique"
)

// replacement is a used backup and whether it is live as a key.
type replacement struct {
	id, claimedBy string
	live          bool
	bindings      int64
}

// replacementsOf groups the used backups by the key they replaced, with
// which of them are live keys: an old key with two live replacements is the
// state a foreign rotator racing ours leaves (docs/design.md "Rotation guarantees").
func (r *Rotator) replacementsOf(ctx context.Context) (map[string][]replacement, error) {
	cur, err := r.backups.Find(ctx, bson.M{FieldIsUsed: true, FieldActivated: true, FieldUsedFor: bson.M{"$type": "string"}},
		options.Find().SetProjection(bson.M{"_id": 1, FieldUsedFor: 1, claimField: 1}))
	if err != nil {
		return nil, fmt.Errorf("list used backups: %w", err)
	}
	out := map[string][]replacement{}
	var ids []string
	for cur.Next(ctx) {
		id, ok := cur.Current.Lookup("_id").StringValueOK()
		if !ok {
			continue
		}
		old, _ := cur.Current.Lookup(FieldUsedFor).StringValueOK()
		by, _ := cur.Current.Lookup(claimField).StringValueOK()
		out[old] = append(out[old], replacement{id: id, claimedBy: by})
		ids = append(ids, id)
	}
	if err := cur.Err(); err != nil {
		return nil, fmt.Errorf("list used backups: %w", err)
	}
	live := map[string]bool{}
	for len(ids) > 0 {
		batch := ids[:min(len(ids), 500)]
		ids = ids[len(batch):]
		kc, err := r.keys.Find(ctx, bson.M{"_id": bson.M{"$in": batch}}, options.Find().SetProjection(bson.M{"_id": 1}))
		if err != nil {
			return nil, fmt.Errorf("find replacement keys: %w", err)
		}
		for kc.Next(ctx) {
			id, _ := kc.Current.Lookup("_id").StringValueOK()
			live[id] = true
		}
		if err := kc.Err(); err != nil {
			return nil, err
		}
	}
	for old, reps := range out {
		for i := range reps {
			reps[i].live = live[reps[i].id]
		}
		out[old] = reps
	}
	return out, nil
}

// removeForeignDuplicates settles an old key that ended with two live
// replacements because the proxy's own rotator rotated it while ours did
// (it read the key before ours deleted it): the foreign replacement that no
// binding points at is archived, deleted and its backup given back, so the
// pool keeps its size. Anything else is left to verify and the operator.
func (r *Rotator) removeForeignDuplicates(ctx context.Context) (int, error) {
	groups, err := r.replacementsOf(ctx)
	if err != nil {
		return 0, err
	}
	f := r.pool.BindingKeyField
	n := 0
	for old, reps := range groups {
		var live []replacement
		for _, rp := range reps {
			if rp.live {
				live = append(live, rp)
			}
		}
		if len(live) < 2 {
			continue
		}
		if alive, err := r.keys.CountDocuments(ctx, bson.M{"_id": old}); err != nil || alive > 0 {
			continue
		}
		// While a rotation of ours of old is unfinished it may still undo
		// itself onto the foreign one: removing that one too would leave
		// old with no replacement. The saga settles it; a later pass here.
		if open, err := r.journal.CountDocuments(ctx, bson.M{"pool": r.pool.Name, "oldKeyId": old, "state": stateClaimed}); err != nil || open > 0 {
			if err != nil {
				return n, err
			}
			continue
		}
		keep := false
		for i := range live {
			c, err := r.bindings.CountDocuments(ctx, bson.M{f: live[i].id})
			if err != nil {
				return n, err
			}
			live[i].bindings = c
			if c > 0 || live[i].claimedBy != "" {
				keep = true
			}
		}
		if !keep {
			continue
		}
		for _, rp := range live {
			if rp.claimedBy != "" || rp.bindings > 0 {
				continue
			}
			// One from before claimedBy existed is ours if the journal has
			// it; one that replaced an earlier copy of old (put back by hand
			// since) is no duplicate.
			if ours, err := r.journal.CountDocuments(ctx, bson.M{"pool": r.pool.Name, "oldKeyId": old, "$or": bson.A{
				bson.M{"newKeyId": rp.id}, bson.M{"priorReplacements": rp.id},
			}}); err != nil || ours > 0 {
				if err != nil {
					return n, err
				}
				continue
			}
			raw, err := r.keys.FindOne(ctx, bson.M{"_id": rp.id}).Raw()
			if errors.Is(err, mongo.ErrNoDocuments) {
				continue
			}
			if err != nil {
				return n, err
			}
			if err := r.archiveCopy(ctx, "dup/"+old+"/"+rp.id, "", rp.id, "duplicate_replacement", "", raw); err != nil {
				return n, err
			}
			if d, err := r.deleteExactly(ctx, raw); err != nil || d == 0 {
				if err != nil {
					return n, err
				}
				continue
			}
			if _, err := r.backups.UpdateOne(ctx, bson.M{"_id": rp.id, FieldUsedFor: old},
				bson.M{"$set": bson.M{FieldIsUsed: false, FieldActivated: false}, "$unset": bson.M{FieldUsedFor: "", FieldUsedAt: ""}}); err != nil {
				return n, err
			}
			n++
			r.log.Warn("removed a second, unbound replacement of a key rotated twice (by ours and a foreign rotator); archived, backup given back", "key", old, "removed", rp.id)
		}
	}
	return n, nil
}
