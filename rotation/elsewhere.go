package rotation

import (
	"context"
	"errors"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// missingKey tells an already rotated key from one that never existed.
func (r *Rotator) missingKey(ctx context.Context, keyID string) (Result, error) {
	res := Result{OldKeyID: keyID, Outcome: NotFound}
	var e journalEntry
	err := r.journal.FindOne(ctx, bson.M{"pool": r.pool.Name, "oldKeyId": keyID},
		options.FindOne().SetSort(bson.D{{Key: "startedAt", Value: -1}})).Decode(&e)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("read journal for %s: %w", keyID, err)
	}
	return r.entryResult(ctx, e), nil
}

// claimLost reports the rotation someone else claimed first. When that
// rotation is done but the key is live again with the same secret, the key
// came back: a late insert is removed (and the rotation reported done); a
// key put back by hand is rotated again under the next generation.
func (r *Rotator) claimLost(ctx context.Context, res Result) (Result, bool, error) {
	var e journalEntry
	err := r.journal.FindOne(ctx, bson.M{"_id": res.RotationID}).Decode(&e)
	if errors.Is(err, mongo.ErrNoDocuments) {
		// No backup left: none is named, not even one let go on the way.
		res.Outcome, res.NewKeyID = NoBackup, ""
		return res, false, nil
	}
	if err != nil {
		return res, false, fmt.Errorf("read journal %s: %w", res.RotationID, err)
	}
	if e.State != stateDone && e.State != stateUndone {
		return r.entryResult(ctx, e), false, nil
	}
	raw, err := r.keys.FindOne(ctx, bson.M{"_id": e.OldKeyID}).Raw()
	if errors.Is(err, mongo.ErrNoDocuments) {
		return r.entryResult(ctx, e), false, nil
	}
	if err != nil {
		return res, false, fmt.Errorf("read key %s: %w", e.OldKeyID, err)
	}
	k, err := DecodeKey(raw)
	if err != nil || !sameDocument(e.ID, r.pool.Name, k.ID, k.APIKey) {
		return r.entryResult(ctx, e), false, nil
	}
	if k.Pending != "" {
		if _, err := r.sweepKey(ctx, raw); err != nil {
			return res, false, err
		}
		return r.entryResult(ctx, e), false, nil
	}
	return res, true, nil
}

// entryResult is what a journal entry tells a caller that did not rotate.
// A rotation under way names its new key only once that key is in the
// pool as its insert, so the caller can swap to it at once; before, or when
// the read fails, it names none (the caller waits or fails over).
func (r *Rotator) entryResult(ctx context.Context, e journalEntry) Result {
	res := Result{OldKeyID: e.OldKeyID, RotationID: e.ID, NewKeyID: e.NewKeyID, Outcome: InProgress}
	switch e.State {
	case stateDone:
		res.Outcome = AlreadyRotated
		return res
	case stateUndone:
		res.Outcome, res.NewKeyID = AlreadyRotated, e.SupersededBy
		return res
	}
	res.NewKeyID = ""
	if e.NewKeyID == "" {
		return res
	}
	raw, err := r.keys.FindOne(ctx, bson.M{"_id": e.NewKeyID}).Raw()
	if err != nil {
		return res
	}
	s := &saga{r: r, e: e}
	if k, err := DecodeKey(raw); err != nil || !s.ours(k) {
		return res
	}
	// The old key's secret replaced in place, or the old key rotated away
	// by someone else (the legacy rotator), under this rotation: it will
	// undo itself and remove this key.
	if e.ForwardOnly {
		return Result{OldKeyID: e.OldKeyID, RotationID: e.ID, NewKeyID: e.NewKeyID, Outcome: InProgress} // never undone
	}
	old, err := r.keys.FindOne(ctx, bson.M{"_id": e.OldKeyID}).Raw()
	switch {
	case errors.Is(err, mongo.ErrNoDocuments):
		if heir, err := s.foreignHeir(ctx); err != nil || heir != "" {
			return res
		}
	case err != nil:
		return res
	default:
		if k, err := DecodeKey(old); err != nil || !sameDocument(e.ID, r.pool.Name, k.ID, k.APIKey) {
			return res
		}
	}
	res.NewKeyID = e.NewKeyID
	return res
}
