package rotation

import (
	"context"
	"errors"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// archiveOld stamps the old key document with this rotation, then copies
// it: the one the caller read, else the one in the store now. deleteOld then
// deletes only that stamped document. The stamp precedes the copy, so a copy
// proves the stamp landed: a key found later under the old id with another
// secret and no stamp is another document, the stamped one having left the
// pool (otherSecret), not the old key re-keyed in place.
func (s *saga) archiveOld(ctx context.Context) error {
	if s.stamped {
		return s.r.archiveCopy(ctx, s.e.ID, s.e.ID, s.e.OldKeyID, s.e.Reason, s.e.NewKeyID, without(s.oldKey, retiredField))
	}
	// The stamp did not ride with the activation: the one sent now may come
	// after a pause in which the rotation was completed and the old key put
	// back by hand.
	if err := s.confirmClaim(ctx); err != nil {
		return err
	}
	if s.oldKey != nil && s.isOldKey(s.oldKey) {
		stamped, err := s.stampAndArchive(ctx, s.oldKey)
		if err != nil || stamped {
			return err
		}
	}
	return s.archiveCurrent(ctx)
}

// archiveCurrent reads the old key as it is in the store, stamps it and
// archives it.
func (s *saga) archiveCurrent(ctx context.Context) error {
	for range 8 {
		raw, err := s.r.keys.FindOne(ctx, bson.M{"_id": s.e.OldKeyID}).Raw()
		if errors.Is(err, mongo.ErrNoDocuments) {
			// Deleted already: by this rotation (after its archive), or by
			// someone else's rotation of the same key.
			s.oldKey = nil
			return s.oldKeyGone(ctx)
		}
		if err != nil {
			return err
		}
		s.oldKey = raw
		if k, err := DecodeKey(raw); err != nil || !sameDocument(s.e.ID, s.r.pool.Name, k.ID, k.APIKey) {
			return s.otherSecret(ctx, raw)
		}
		stamped, err := s.stampAndArchive(ctx, raw)
		if err != nil || stamped {
			return err
		}
	}
	return fmt.Errorf("old key %s keeps changing; recovery will retry", s.e.OldKeyID)
}

// stampAndArchive stamps doc with this rotation, unless it carries the
// stamp, and archives it. stamped is false when the store no longer holds
// doc as read (changed or gone): nothing was archived.
func (s *saga) stampAndArchive(ctx context.Context, doc bson.Raw) (stamped bool, err error) {
	// A delete delivered late then cannot take the same document put back
	// by hand from the archive (which holds it unstamped).
	if by, _ := doc.Lookup(retiredField).StringValueOK(); by != s.e.ID {
		filter, err := exactFilter(doc)
		if err != nil {
			return false, err
		}
		res, err := s.r.keys.UpdateOne(ctx, filter, bson.M{"$set": bson.M{retiredField: s.e.ID}})
		if err != nil {
			return false, fmt.Errorf("stamp %s before its archive: %w", s.e.OldKeyID, err)
		}
		if res.MatchedCount == 0 {
			return false, nil
		}
	}
	s.oldKey = doc
	return true, s.r.archiveCopy(ctx, s.e.ID, s.e.ID, s.e.OldKeyID, s.e.Reason, s.e.NewKeyID, without(doc, retiredField))
}

// deleteOld deletes the old key only as stamped and archived; if it changed
// since (the proxy counting requests, an operator's edit), the newer version
// is archived too and the delete tried again. deleted says this call's
// delete counted the old key.
func (s *saga) deleteOld(ctx context.Context) (deleted bool, err error) {
	for range 8 {
		if s.oldKey == nil || !s.isOldKey(s.oldKey) {
			return false, nil
		}
		n, err := s.r.deleteExactly(ctx, s.oldKey, bson.E{Key: retiredField, Value: s.e.ID})
		if err != nil || n == 1 {
			return n == 1, err
		}
		// Changed or gone since the archive, or put back by hand after
		// another executor completed the rotation: archive what is there
		// now, if the claim is still this executor's.
		s.stamped = false
		if err := s.confirmClaim(ctx); err != nil {
			return false, err
		}
		if err := s.archiveCurrent(ctx); err != nil {
			return false, err
		}
	}
	return false, fmt.Errorf("old key %s keeps changing; recovery will retry", s.e.OldKeyID)
}

// deleteOldAndStragglers deletes the old key, then moves the bindings made
// for it while the rotation ran (after moveBindings read them), once it is
// gone: no binding is left on a deleted key. A delete that counted the key
// proves it gone; otherwise a count tells (a key re-keyed in place stays).
func (s *saga) deleteOldAndStragglers(ctx context.Context) error {
	deleted, err := s.deleteOld(ctx)
	if err != nil {
		return err
	}
	if !deleted {
		n, err := s.r.keys.CountDocuments(ctx, bson.M{"_id": s.e.OldKeyID})
		if err != nil || n > 0 {
			return err // still live: a key re-keyed in place stays, and keeps the rest
		}
	}
	return s.r.moveBindings(ctx, s.e.OldKeyID, s.e.NewKeyID)
}
