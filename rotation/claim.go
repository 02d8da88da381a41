package rotation

import (
	"context"
	"errors"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

type backupDoc struct {
	ID     string
	APIKey string
	// Carried are the backup's carriedFields, for the key it becomes.
	Carried bson.D
	// claimRead is the journal entry read with the check of the backup's
	// secret (usable), after the reservation: the saga's read before the
	// insert.
	claimRead []journalEntry
}

// claim inserts the journal entry with the first backup nobody else holds,
// then reads that backup again: the secret that goes live is the one in the
// store after the claim, and a backup deleted or used outside the journal
// since it was cached is let go. It returns nil (and no error) when the
// rotation is already claimed or no backup is left; claimLost tells which.
func (r *Rotator) claim(ctx context.Context, e *journalEntry) (*backupDoc, error) {
	tried := map[string]bool{}
	for {
		cands, err := r.candidates(ctx, tried)
		if err != nil {
			return nil, err
		}
		if len(cands) == 0 {
			return nil, nil
		}
		for _, b := range cands {
			tried[b.ID] = true
			e.BackupID, e.NewKeyID = b.ID, b.ID
			e.History.NewKeyID = b.ID
			_, err := r.journal.InsertOne(ctx, e)
			if err == nil {
				r.forget(b.ID)
				got, err := r.claimedBackup(ctx, *e)
				if err != nil {
					return nil, err
				}
				if got != nil {
					return got, nil
				}
				continue
			}
			if !mongo.IsDuplicateKeyError(err) {
				return nil, fmt.Errorf("claim backup %s: %w", b.ID, err)
			}
			r.forget(b.ID)
			// A duplicate is on _id (the rotation is someone else's) or on
			// backupId (that backup is taken): only a read tells which.
			n, err := r.journal.CountDocuments(ctx, bson.M{"_id": e.ID})
			if err != nil {
				return nil, fmt.Errorf("read journal %s: %w", e.ID, err)
			}
			if n > 0 {
				return nil, nil
			}
		}
	}
}

// claimField names, in a backup, the rotation that reserved it.
const claimField = "claimedBy"

// reserve hides the claimed backup from the proxy's own rotators, whose claim
// is findOneAndUpdate({isUsed: false}): it sets isUsed, usedFor and the
// rotation id, but no usedAt, so the proxy's clean-up of used backups (by
// usedAt) cannot delete it before its key is live (docs/design.md "Rotation
// guarantees"). The journal insert decided the claim; this
// only tells the legacy claimers, so a lost race here is harmless: the
// backup is then let go. It returns the backup as it is now, or why it
// cannot be used.
func (r *Rotator) reserve(ctx context.Context, e journalEntry) (bson.Raw, string, error) {
	raw, err := r.backups.FindOneAndUpdate(ctx, bson.M{"_id": e.BackupID, FieldIsUsed: bson.M{"$ne": true}},
		bson.M{"$set": bson.M{FieldIsUsed: true, FieldUsedFor: e.OldKeyID, claimField: e.ID}},
		options.FindOneAndUpdate().SetReturnDocument(options.After)).Raw()
	if err == nil {
		return raw, "", nil
	}
	if !errors.Is(err, mongo.ErrNoDocuments) {
		return nil, "", fmt.Errorf("reserve backup %s: %w", e.BackupID, err)
	}
	raw, err = r.backups.FindOne(ctx, bson.M{"_id": e.BackupID}).Raw()
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, "deleted", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("read backup %s: %w", e.BackupID, err)
	}
	by, _ := raw.Lookup(claimField).StringValueOK()
	usedFor, _ := raw.Lookup(FieldUsedFor).StringValueOK()
	if by == e.ID && usedFor == e.OldKeyID {
		return raw, "", nil // reserved by another executor of this rotation
	}
	return raw, "used for another key", nil
}

// unreserve gives a reserved backup back, unless someone else used it since.
func (r *Rotator) unreserve(ctx context.Context, e journalEntry) error {
	_, err := r.backups.UpdateOne(ctx, bson.M{"_id": e.BackupID, claimField: e.ID, FieldUsedFor: e.OldKeyID, FieldActivated: bson.M{"$ne": true}},
		bson.M{"$set": bson.M{FieldIsUsed: false}, "$unset": bson.M{FieldUsedFor: "", claimField: ""}})
	if err != nil {
		return fmt.Errorf("give back backup %s: %w", e.BackupID, err)
	}
	return nil
}

// usable checks a reserved backup's secret: present, and not a secret that
// was live under this id and rotated away (the old rotators left such
// backups unmarked), which must not come back. The same find reads the
// rotation's own journal entry (entries, empty if it is gone): for the
// owner that is the read before the insert, after the reservation, so a
// pause after the reservation is still caught.
func (r *Rotator) usable(ctx context.Context, e journalEntry, raw bson.Raw) (secret, why string, entries []journalEntry, err error) {
	secret, _ = raw.Lookup(FieldAPIKey).StringValueOK()
	if secret == "" {
		return "", "malformed", nil, nil
	}
	away := RotationID(r.pool.Name, e.BackupID, secret)
	cur, err := r.journal.Find(ctx, bson.M{"_id": bson.M{"$in": bson.A{away, e.ID}}})
	if err != nil {
		return "", "", nil, fmt.Errorf("read journal for backup %s: %w", e.BackupID, err)
	}
	var raws []bson.Raw
	if err := cur.All(ctx, &raws); err != nil {
		return "", "", nil, fmt.Errorf("read journal for backup %s: %w", e.BackupID, err)
	}
	rotatedAway := false
	for _, doc := range raws {
		id, _ := doc.Lookup("_id").StringValueOK()
		if id == away {
			rotatedAway = true
		}
		if id == e.ID {
			var cur journalEntry
			if err := bson.Unmarshal(doc, &cur); err != nil {
				return "", "", nil, fmt.Errorf("read journal %s: %w", e.ID, err)
			}
			entries = append(entries, cur)
		}
	}
	if rotatedAway {
		r.skip(e.BackupID)
		return "", "its secret was live under this id and rotated away", entries, nil
	}
	return secret, "", entries, nil
}

// claimedBackup reserves the backup just claimed and reads it. It returns
// nil, having dropped the claim, when the backup is gone, used for another
// key or unusable.
func (r *Rotator) claimedBackup(ctx context.Context, e journalEntry) (*backupDoc, error) {
	raw, why, err := r.reserve(ctx, e)
	if err != nil {
		return nil, err
	}
	var secret string
	var entries []journalEntry
	if why == "" {
		if secret, why, entries, err = r.usable(ctx, e, raw); err != nil {
			return nil, err
		}
	}
	if why == "" {
		return &backupDoc{ID: e.BackupID, APIKey: secret, Carried: carried(raw), claimRead: entries}, nil
	}
	r.log.Info("claimed backup changed since it was listed; trying another", "backup", e.BackupID, "why", why)
	return nil, r.dropClaim(ctx, e)
}

// candidates returns backups that looked unused, from the cache when it has
// any not yet tried.
func (r *Rotator) candidates(ctx context.Context, tried map[string]bool) ([]backupDoc, error) {
	now := r.opts.Now()
	r.mu.Lock()
	for id, until := range r.skipped {
		if now.After(until) {
			delete(r.skipped, id)
		} else {
			tried[id] = true
		}
	}
	var out []backupDoc
	for _, b := range r.cached {
		if !tried[b.ID] {
			out = append(out, b)
		}
	}
	r.mu.Unlock()
	if len(out) > 0 {
		return out, nil
	}
	// Excluded: backups this claim already tried, and malformed ones by
	// their raw _id (which may not be a string), so a run of malformed
	// documents ahead in claim order cannot hide good backups behind them.
	exclude := make([]any, 0, len(tried))
	for id := range tried {
		exclude = append(exclude, id)
	}
	for {
		filter := bson.M{FieldIsUsed: bson.M{"$ne": true}}
		if len(exclude) > 0 {
			filter["_id"] = bson.M{"$nin": exclude}
		}
		cur, err := r.backups.Find(ctx, filter, options.Find().
			SetSort(bson.D{{Key: FieldCreatedAt, Value: 1}, {Key: "_id", Value: 1}}).
			SetLimit(int64(r.opts.Candidates)).
			SetProjection(bson.M{"_id": 1, FieldAPIKey: 1}))
		if err != nil {
			return nil, fmt.Errorf("find backups: %w", err)
		}
		var raws []bson.Raw
		if err := cur.All(ctx, &raws); err != nil {
			return nil, fmt.Errorf("find backups: %w", err)
		}
		for _, raw := range raws {
			id, ok := raw.Lookup("_id").StringValueOK()
			secret, ok2 := raw.Lookup(FieldAPIKey).StringValueOK()
			if !ok || !ok2 || id == "" || secret == "" {
				r.log.Warn("skipping malformed backup document (needs string _id and apiKey)", "backup", raw.Lookup("_id").String())
				exclude = append(exclude, raw.Lookup("_id"))
				continue
			}
			out = append(out, backupDoc{ID: id, APIKey: secret})
		}
		if len(out) > 0 || len(raws) == 0 {
			break
		}
	}
	r.mu.Lock()
	r.cached = append([]backupDoc(nil), out...)
	r.mu.Unlock()
	return out, nil
}

// skip leaves a backup aside for a while: its id is a live key.
func (r *Rotator) skip(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.skipped[id] = r.opts.Now().Add(skipFor)
}

func (r *Rotator) forget(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, b := range r.cached {
		if b.ID == id {
			r.cached = append(r.cached[:i], r.cached[i+1:]...)
			return
		}
	}
}

// BackupsAvailable counts the backups not marked used that a rotation can
// take: malformed ones (no string _id or apiKey) are not counted, so the
// backups-left alert sees what is really usable.
func (r *Rotator) BackupsAvailable(ctx context.Context) (int64, error) {
	n, err := r.backups.CountDocuments(ctx, bson.M{
		FieldIsUsed: bson.M{"$ne": true},
		"_id":       bson.M{"$type": "string", "$ne": ""},
		FieldAPIKey: bson.M{"$type": "string", "$ne": ""},
	})
	if err != nil {
		return 0, fmt.Errorf("count backups: %w", err)
	}
	return n, nil
}
