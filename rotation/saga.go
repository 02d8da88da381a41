package rotation

import (
	"context"
	"errors"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// saga runs the steps after the claim. Every step is idempotent and safe to
// run concurrently with the same step of another executor (the owner and a
// recoverer), so a crash at any instant is completed by running it again.
//
// Order (a deliberate variation; see docs/design.md, "Decisions"): the new key is inserted
// before the backup is marked used, so a backup marked used is always live
// as a key, even if the proxy later deletes used backups; insert precedes
// delete, so the pool never shrinks. The new key carries pendingField until
// its backup is marked used, so an insert that lands late is recognisable.
type saga struct {
	r *Rotator
	e journalEntry
	// oldKey is the old key document as the caller read it; the archive
	// reads it again, since what is deleted is what is archived.
	oldKey bson.Raw
	// backupSecret is empty on recovery: insertKey reads the backup then.
	backupSecret string
	// backupCarried are the backup's carriedFields, copied onto the key it
	// becomes.
	backupCarried bson.D
	// stamped says activateKey stamped oldKey (as read) retiredBy this
	// rotation.
	stamped bool
	// bindingIDs are the old key's bindings, read before the journal entry
	// is read for the activation (bindingsRead): the move names only those,
	// so an executor paused after that read cannot take a binding made
	// since for the old key put back by hand.
	bindingIDs   []any
	bindingsRead bool
	// depth counts predecessors being completed, to stop a corrupt journal
	// from recursing forever.
	depth int
	// claimRead is the journal entry the owner read with its backup check,
	// after the reservation: it stands for the read before the insert.
	claimRead   []journalEntry
	claimReadOK bool
	// answerBefore, when set, stops run with errAnswer once the checks
	// before that step passed; run from that step again to finish, without
	// repeating them (checked).
	answerBefore Step
	checked      Step
	// backupMarked says this executor's backup mark matched the backup:
	// only then may it answer early. A mark that matched nothing (the
	// backup deleted or taken while reserved) leaves the claim open to a
	// recoverer's drop, which removes the key as a late insert.
	backupMarked bool
}

// errAnswer stops the saga at the early answer: the new key is live, its
// backup marked and the claim still this rotation's (early.go).
var errAnswer = errors.New("the rotation can be answered; the rest runs on")

func (s *saga) run(ctx context.Context, from Step) error {
	steps := map[Step]func(context.Context) error{
		StepInsertKey:    s.insertKey,
		StepMarkBackup:   s.markBackupReadBindings,
		StepActivateKey:  s.activateKey,
		StepMoveBindings: s.moveBindings,
		StepArchive:      s.archiveOld,
		StepDeleteOld:    s.deleteOldAndStragglers,
		StepHistory:      s.writeHistory,
		StepDone:         s.markDone,
	}
	started := false
	for _, st := range Steps {
		if st == from {
			started = true
		}
		if !started || steps[st] == nil {
			continue
		}
		// The journal entry is read again before the insert and after the
		// backup is marked, before the mark on the new key is cleared: the
		// claim may have moved on while this executor was paused, and the
		// read after the insert is what keeps a resumed executor from
		// re-inserting a key rotated onward since and clearing its mark.
		// Every other step is harmless when late (docs/design.md "How a
		// rotation works" lists why, command by command).
		if st != s.checked {
			finished, err := s.checkBefore(ctx, st)
			if err != nil {
				return fmt.Errorf("rotation %s step %s: %w", s.e.ID, st, err)
			}
			if finished {
				return nil
			}
			if st == s.answerBefore && s.backupMarked {
				s.checked = st
				return errAnswer
			}
		}
		s.checked = 0
		if err := steps[st](ctx); err != nil {
			if errors.Is(err, errFinished) {
				return nil
			}
			return fmt.Errorf("rotation %s step %s: %w", s.e.ID, st, err)
		}
		if err := s.r.after(ctx, s.e.ID, st); err != nil {
			return err
		}
	}
	return nil
}

// checkBefore runs the reads before step st: the journal entry before the
// insert (taken from the owner's backup check when it has it), and before
// the activation the old key's bindings (unless read with the backup mark)
// and the journal entry again with the unfinished arrivals.
func (s *saga) checkBefore(ctx context.Context, st Step) (finished bool, err error) {
	switch st {
	case StepInsertKey:
		if s.claimReadOK {
			s.claimReadOK = false
			return s.judgeClaim(ctx, s.claimRead)
		}
		return s.stillClaimed(ctx, false)
	case StepActivateKey:
		if !s.bindingsRead {
			ids, err := s.r.bindingIDs(ctx, s.e.OldKeyID)
			if err != nil {
				return false, err
			}
			s.bindingIDs, s.bindingsRead = ids, true
		}
		return s.stillClaimed(ctx, true)
	}
	return false, nil
}

// errClaimMoved means the journal entry this executor works for was
// dropped, claimed again with another backup or undone while it was paused:
// it writes nothing more, and recovery removes what a step in flight left.
var errClaimMoved = errors.New("the rotation's claim moved on; this executor stopped")

// errFinished stops a step that found its claim completed by another
// executor: the saga ends as completed, writing nothing more.
var errFinished = errors.New("the rotation was completed by another executor")

// confirmClaim reads the journal entry again before a write that takes the
// old key as it is in the store now (a stamp, a delete): after a pause, that
// may be the key put back by hand once another executor completed the
// rotation. It is sent only off the uncontended path.
func (s *saga) confirmClaim(ctx context.Context) error {
	finished, err := s.stillClaimed(ctx, false)
	if err == nil && finished {
		return errFinished
	}
	return err
}

// stillClaimed reads the journal entry again. finished says another
// executor completed this very claim; an entry undone since answers
// errRotatedElsewhere; one dropped or claimed again with another backup
// answers errClaimMoved. With arrivals, the same find also fetches the
// unfinished rotations that brought the old key in (settleArrival), which
// are completed before this one goes on.
func (s *saga) stillClaimed(ctx context.Context, arrivals bool) (finished bool, err error) {
	filter := bson.M{"_id": s.e.ID}
	if arrivals && s.mayHaveArrival() {
		if s.depth >= maxChain {
			return false, fmt.Errorf("more than %d unfinished rotations chained before %s", maxChain, s.e.OldKeyID)
		}
		filter = bson.M{"$or": bson.A{filter, bson.M{"pool": s.r.pool.Name, "newKeyId": s.e.OldKeyID, "state": stateClaimed}}}
	}
	c, err := s.r.journal.Find(ctx, filter)
	if err != nil {
		return false, fmt.Errorf("read journal %s: %w", s.e.ID, err)
	}
	var all []journalEntry
	if err := c.All(ctx, &all); err != nil {
		return false, fmt.Errorf("read journal %s: %w", s.e.ID, err)
	}
	return s.judgeClaim(ctx, all)
}

// judgeClaim tells, from the journal entries read, whether this executor
// goes on (stillClaimed).
func (s *saga) judgeClaim(ctx context.Context, all []journalEntry) (finished bool, err error) {
	var cur *journalEntry
	var prev []journalEntry
	for i := range all {
		if all[i].ID == s.e.ID {
			cur = &all[i]
		} else {
			prev = append(prev, all[i])
		}
	}
	switch {
	case cur == nil:
		return false, errClaimMoved
	case cur.State == stateUndone && cur.UndoneBackupID == s.e.BackupID:
		return false, errRotatedElsewhere{newKeyID: cur.SupersededBy}
	case cur.BackupID != s.e.BackupID:
		return false, errClaimMoved
	case cur.State == stateDone:
		return true, nil
	}
	return false, s.settleArrival(ctx, prev)
}

// ours reports whether a key document is provably this rotation's insert:
// it names the old key as replaced and carries this rotation's mark, or,
// once activated, this rotation's start as its creation time. A document
// another writer put there (another secret, another replacedKey, another
// rotation's mark) is never taken for the new key (docs/design.md "Rotation
// guarantees"). The secret is not compared: a recoverer may have inserted
// the key with the backup's secret as re-keyed after the owner read it, and
// that insert is still this rotation's.
func (s *saga) ours(k Key) bool {
	if k.ReplacedKey != s.e.OldKeyID {
		return false
	}
	if k.Pending != "" {
		return k.Pending == s.e.ID
	}
	return k.CreatedAt.Equal(s.e.StartedAt.UTC())
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
		{Key: FieldAPIKey, Value: s.backupSecret},
		{Key: FieldStatus, Value: StatusHealthy},
		{Key: FieldTokensUsed, Value: int64(0)},
		{Key: FieldRequestsCount, Value: int64(0)},
		{Key: FieldTotalSpend, Value: 0.0},
		{Key: FieldCreatedAt, Value: s.e.StartedAt},
		{Key: FieldReplacedKey, Value: s.e.OldKeyID},
		{Key: pendingField, Value: s.e.ID},
	}
	newKey = append(newKey, s.backupCarried...)
	_, err := r.keys.InsertOne(ctx, newKey)
	if err == nil || !mongo.IsDuplicateKeyError(err) {
		return err
	}
	// Inserted before (by us or a concurrent executor) — unless the id holds
	// another key.
	got, err := r.keys.FindOne(ctx, bson.M{"_id": s.e.NewKeyID}).Raw()
	if errors.Is(err, mongo.ErrNoDocuments) {
		return fmt.Errorf("new key %s: duplicate on insert but not found", s.e.NewKeyID)
	}
	if err != nil {
		return err
	}
	if k, err := DecodeKey(got); err != nil || !s.ours(k) {
		return fmt.Errorf("%w: %s", ErrKeyCollision, s.e.NewKeyID)
	}
	return nil
}

// markBackupReadBindings marks the backup used and, in the same round trip,
// reads the old key's bindings: both only have to precede the journal read
// before the activation, not each other.
func (s *saga) markBackupReadBindings(ctx context.Context) error {
	var ids []any
	err := together(ctx, s.markBackup, func(ctx context.Context) (err error) {
		ids, err = s.r.bindingIDs(ctx, s.e.OldKeyID)
		return err
	})
	if err != nil {
		return err
	}
	s.bindingIDs, s.bindingsRead = ids, true
	return nil
}

func (s *saga) markBackup(ctx context.Context) error {
	// The same values on every retry: usedAt is the rotation's start. Only
	// while reserved by this rotation (or by none, as claims of earlier
	// versions left it): a late mark cannot take a backup given back and
	// reserved since by another rotation.
	res, err := s.r.backups.UpdateOne(ctx, bson.M{"_id": s.e.BackupID, "$or": bson.A{
		bson.M{claimField: s.e.ID}, bson.M{claimField: bson.M{"$exists": false}},
	}}, bson.M{"$set": bson.M{
		FieldIsUsed:    true,
		FieldActivated: true,
		FieldUsedFor:   s.e.OldKeyID,
		FieldUsedAt:    s.e.StartedAt,
		claimField:     s.e.ID,
	}})
	if err != nil {
		return err
	}
	s.backupMarked = res.MatchedCount == 1
	return nil
}

// activateKey removes the insert mark from the new key: from now on a copy
// of it (archived, restored by hand) is no longer taken for a late insert.
// The old key, as the caller read it, is stamped retiredBy in the same
// command (two updates of the keys collection, one round trip); archiveOld
// then copies it without reading it again.
func (s *saga) activateKey(ctx context.Context) error {
	activate := mongo.NewUpdateOneModel().SetFilter(bson.M{"_id": s.e.NewKeyID, pendingField: s.e.ID}).
		SetUpdate(bson.M{"$unset": bson.M{pendingField: ""}})
	if s.oldKey == nil || !s.isOldKey(s.oldKey) || s.stampedBy(s.oldKey) {
		_, err := s.r.keys.UpdateOne(ctx, activate.Filter, activate.Update)
		return err
	}
	filter, err := exactFilter(s.oldKey)
	if err != nil {
		return err
	}
	stamp := mongo.NewUpdateOneModel().SetFilter(filter).SetUpdate(bson.M{"$set": bson.M{retiredField: s.e.ID}})
	res, err := s.r.keys.BulkWrite(ctx, []mongo.WriteModel{activate, stamp}, options.BulkWrite().SetOrdered(true))
	if err != nil {
		return fmt.Errorf("activate %s and stamp %s: %w", s.e.NewKeyID, s.e.OldKeyID, err)
	}
	// Both matched: the stamp landed on the document read. Fewer (the key
	// changed, or another executor activated first): archiveOld reads the
	// old key as it is now and stamps it if it must.
	s.stamped = res.MatchedCount == 2
	return nil
}

// stampedBy reports whether doc already carries this rotation's stamp.
func (s *saga) stampedBy(doc bson.Raw) bool {
	by, _ := doc.Lookup(retiredField).StringValueOK()
	return by == s.e.ID
}

// mayHaveArrival says whether the old key may have been brought in by a
// rotation still unfinished: only a key a rotation inserted carries
// replacedKey (unknown when the key was not read).
func (s *saga) mayHaveArrival() bool {
	if s.oldKey == nil {
		return true
	}
	_, err := s.oldKey.LookupErr(FieldReplacedKey)
	return err == nil
}

// settleArrival completes the unfinished rotations that brought the old key
// in (prev, read with the journal entry). Their bindings must land on the
// old key before they move on: resumed after this rotation, one would move
// them onto a deleted key. Its claim was written before the key existed, so
// the read cannot miss it.
func (s *saga) settleArrival(ctx context.Context, prev []journalEntry) error {
	for _, e := range prev {
		p := &saga{r: s.r, e: e, depth: s.depth + 1}
		if err := p.run(ctx, StepInsertKey); err != nil {
			// Not this rotation's failure: its own claim must not be dropped.
			return fmt.Errorf("complete rotation that brought %s in: %v", s.e.OldKeyID, err)
		}
		s.r.log.Info("unfinished rotation completed", "key", e.OldKeyID, "rotation", e.ID, "new_key", e.NewKeyID)
	}
	if len(prev) > 0 {
		// Completing it changed the old key (its mark cleared): archiveOld
		// reads it as it is now. Its bindings landed on the old key after
		// they were read: they are read again.
		s.oldKey = nil
		s.bindingsRead = false
	}
	return nil
}

const maxChain = 64

func (s *saga) moveBindings(ctx context.Context) error {
	if !s.bindingsRead {
		return s.r.moveBindings(ctx, s.e.OldKeyID, s.e.NewKeyID)
	}
	return s.r.moveBindingIDs(ctx, s.bindingIDs, s.e.OldKeyID, s.e.NewKeyID)
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

// markDone closes the journal entry. It names the backup, so it matches
// nothing once the claim moved on (undone, dropped, claimed again); then the
// entry is read to tell the caller what happened instead.
func (s *saga) markDone(ctx context.Context) error {
	res, err := s.r.journal.UpdateOne(ctx, bson.M{"_id": s.e.ID, "backupId": s.e.BackupID}, bson.M{"$set": bson.M{
		"state":      stateDone,
		"finishedAt": s.r.opts.Now().UTC(),
	}})
	if err != nil || res.MatchedCount == 1 {
		return err
	}
	_, err = s.stillClaimed(ctx, false)
	return err
}
