package rotation_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation"
)

// Our rotation of key-001 (backup-000) has its key insert held in the
// network; the owner gives up. The legacy proxy rotates key-001 onto
// backup-001. A recovery pass finishes ours, finds key-001 gone under it and
// undoes it (journal "undone", backup-000 given back). Then the held insert
// of backup-000 lands. The next recovery pass must remove it: the pool is
// back to 3, backup-000 is not both live and available.
func TestAdv12_LateInsertOfUndoneRotationStaysForever(t *testing.T) {
	bg := context.Background()
	mdb := mongotest.New(t)
	db := mdb.Database
	seed(t, db, 3, 4, 2)
	held := rotateAbandonedAt(t, mdb, firstStep(t, "insert "+testPool.KeysCollection))

	legacyRotate(t, db, "key-001", nil)

	q := newRotator(t, db, rotation.Config{Owner: "q"})
	rep, err := q.Recover(bg)
	t.Logf("recover: %+v, %v", rep, err)
	if n := count(t, db, rotation.JournalCollection, bson.M{"state": "undone"}); n != 1 {
		t.Fatalf("%d undone rotations, want our rotation undone: the test proves nothing", n)
	}
	if _, err := held.Deliver(bg); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db, testPool.KeysCollection, bson.M{"_id": "backup-000"}); n != 1 {
		t.Fatalf("the late insert did not bring backup-000 in (%d): the test proves nothing", n)
	}
	// Until the next pass removes it, verify names it (fix12).
	if probs, err := q.Verify(bg); err != nil || !hasKind(probs, "late_insert") {
		t.Errorf("verify does not name the late insert of an undone rotation: %v, %v", probs, err)
	}
	// The next recovery passes (a fresh process and the same one).
	for _, r := range []*rotation.Rotator{newRotator(t, db, rotation.Config{Owner: "next"}), q} {
		rep, err := r.Recover(bg)
		t.Logf("recover after late delivery: %+v, %v", rep, err)
	}
	if n := count(t, db, testPool.KeysCollection, bson.M{}); n != 3 {
		t.Errorf("pool size %d after recovery, want 3 (the late insert of an undone rotation is still live)", n)
	}
	if n := count(t, db, testPool.KeysCollection, bson.M{"_id": "backup-000"}); n != 0 {
		t.Errorf("backup-000, inserted late by an undone rotation, is still live")
	}
	coexistInvariants(t, db)
}

// The legacy proxy reads key-001, then ours rotates it onto backup-000 and
// stops after writing its history record (crash before "done"). The legacy
// sequence goes on: claims backup-001, deletes nothing (key-001 is gone),
// inserts backup-001. Recovery resumes ours, finds key-001 gone with a
// foreign replacement live and undoes ours - but ours already wrote its
// history record. History must match what stands: no record of a rotation
// the journal calls undone (verify: stray_history).
func TestAdv12_UndoAfterHistoryLeavesStrayHistory(t *testing.T) {
	bg := context.Background()
	db := mongotest.New(t).Database
	seed(t, db, 3, 4, 2)
	crashed := newRotator(t, db, rotation.Config{Owner: "crashed", AfterStep: func(_ context.Context, _ string, s rotation.Step) error {
		if s == rotation.StepHistory {
			return errCrash
		}
		return nil
	}})
	legacyRotate(t, db, "key-001", func(step int) {
		if step == 1 {
			if _, err := crashed.Rotate(bg, "key-001", "manual"); !errors.Is(err, errCrash) {
				t.Fatalf("rotate: %v, want the simulated crash", err)
			}
		}
	})
	rep, err := newRotator(t, db, rotation.Config{Owner: "q"}).Recover(bg)
	t.Logf("recover: %+v, %v", rep, err)
	rep, err = newRotator(t, db, rotation.Config{Owner: "q2"}).Recover(bg)
	t.Logf("recover again: %+v, %v", rep, err)
	undone := count(t, db, rotation.JournalCollection, bson.M{"state": "undone"})
	done := count(t, db, rotation.JournalCollection, bson.M{"state": "done"})
	hist := count(t, db, testPool.HistoryCollection, bson.M{})
	t.Logf("journal: %d done, %d undone; %d history records", done, undone, hist)
	if hist != done {
		t.Errorf("%d history records for %d rotations that stand (%d undone)", hist, done, undone)
	}
	coexistInvariants(t, db)
}

// Ours rotates key-001 onto backup-000; later the proxy's own rotator
// (still running during the migration) rotates backup-000 away onto
// backup-001 on a 401. The pool is healthy: 3 keys, bindings on live keys,
// every used backup live or archived. Verify must stay silent.
func TestAdv12_VerifyFalseAlarmAfterLegacyRotatesOurKey(t *testing.T) {
	bg := context.Background()
	db := mongotest.New(t).Database
	seed(t, db, 3, 4, 2)
	r := newRotator(t, db, rotation.Config{})
	res, err := r.Rotate(bg, "key-001", "manual")
	if err != nil || res.Outcome != rotation.Rotated {
		t.Fatalf("rotate: %+v, %v", res, err)
	}
	legacyRotate(t, db, res.NewKeyID, nil)
	if n := count(t, db, testPool.KeysCollection, bson.M{"_id": res.NewKeyID}); n != 0 {
		t.Fatalf("legacy did not rotate %s away: the test proves nothing", res.NewKeyID)
	}
	if _, err := r.Recover(bg); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db, testPool.KeysCollection, bson.M{}); n != 3 {
		t.Fatalf("pool size %d, want 3", n)
	}
	probs, err := r.Verify(bg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range probs {
		t.Errorf("verify on a healthy pool: %s", p)
	}
}

// P claims key-001's rotation (backup-000, secret read) and is paused right
// after the claim (GC, SIGSTOP). Meanwhile an operator deletes backup-000 by
// hand; a recovery pass drops the claim (backup vanished, key untouched);
// Q rotates key-001 again (same rotation id, backup-001) to the end. Then P
// resumes with the secret it read: it inserts backup-000 as a key, activates
// it and reports "rotated". key-001 now has two live replacements and no
// recovery pass ever removes the second one.
func TestAdv12_PausedOwnerResumesAfterClaimDroppedAndRedone(t *testing.T) {
	bg := context.Background()
	db := mongotest.New(t).Database
	seed(t, db, 3, 4, 2)
	paused := false
	p := newRotator(t, db, rotation.Config{Owner: "p", AfterStep: func(_ context.Context, _ string, s rotation.Step) error {
		if s != rotation.StepClaim || paused {
			return nil
		}
		paused = true
		// While P is paused:
		if _, err := db.Collection(testPool.BackupsCollection).DeleteOne(bg, bson.M{"_id": "backup-000"}); err != nil {
			t.Fatal(err)
		}
		rep, err := newRotator(t, db, rotation.Config{Owner: "rec"}).Recover(bg)
		t.Logf("recover while P is paused: %+v, %v", rep, err)
		res, err := newRotator(t, db, rotation.Config{Owner: "q"}).Rotate(bg, "key-001", "manual")
		if err != nil || res.Outcome != rotation.Rotated {
			t.Fatalf("q rotate: %+v, %v", res, err)
		}
		t.Logf("q: %+v", res)
		return nil // P resumes
	}})
	res, err := p.Rotate(bg, "key-001", "manual")
	t.Logf("p after resuming: %+v, %v", res, err)
	for _, owner := range []string{"next", "next2"} {
		rep, err := newRotator(t, db, rotation.Config{Owner: owner}).Recover(bg)
		t.Logf("recover: %+v, %v", rep, err)
	}
	if n := count(t, db, testPool.KeysCollection, bson.M{}); n != 3 {
		t.Errorf("pool size %d after recovery, want 3", n)
	}
	if n := count(t, db, testPool.KeysCollection, bson.M{"replacedKey": "key-001"}); n != 1 {
		t.Errorf("key-001 has %d live replacements, want 1", n)
	}
	if n := count(t, db, testPool.KeysCollection, bson.M{"_id": "backup-000"}); n != 0 {
		t.Errorf("backup-000 (deleted by hand, claim dropped) went live anyway")
	}
	probs, err := newRotator(t, db, rotation.Config{}).Verify(bg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("verify: %v", probs)
	if n := count(t, db, testPool.KeysCollection, bson.M{}); n != 3 && len(probs) == 0 {
		t.Errorf("verify is silent on a pool of %d keys where 3 are due", n)
	}
}

// Generation 0 of key-001's rotation has its delete of key-001 held in the
// network; its owner gives up and a recovery pass finishes the rotation.
// The operator restores key-001 from the archive (same id and secret, a
// supported path: it can be rotated again). Then the held delete of the
// earlier generation lands and deletes the restored key - with no copy of
// this deletion and no record of it. Nothing brings it back: the restored
// key is lost.
func TestAdv12_LateDeleteOfEarlierGenerationRemovesRestoredKey(t *testing.T) {
	bg := context.Background()
	mdb := mongotest.New(t)
	db := mdb.Database
	seed(t, db, 3, 4, 2)
	held := rotateAbandonedAt(t, mdb, firstStep(t, "delete "+testPool.KeysCollection))
	q := newRotator(t, db, rotation.Config{Owner: "q"})
	if rep, err := q.Recover(bg); err != nil || rep.Completed != 1 {
		t.Fatalf("recover: %+v, %v", rep, err)
	}
	var arch struct {
		Document bson.Raw `bson:"document"`
	}
	if err := db.Collection(rotation.ArchiveCollection).FindOne(bg, bson.M{"sourceId": "key-001"}).Decode(&arch); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Collection(testPool.KeysCollection).InsertOne(bg, arch.Document); err != nil {
		t.Fatal(err)
	}
	reply, err := held.Deliver(bg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("late delete: %s", reply)
	if _, err := newRotator(t, db, rotation.Config{Owner: "next"}).Recover(bg); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db, testPool.KeysCollection, bson.M{"_id": "key-001"}); n != 1 {
		t.Errorf("the restored key-001 is gone after a late delete of its earlier rotation")
	}
	if n := count(t, db, testPool.KeysCollection, bson.M{}); n != 4 {
		t.Errorf("pool size %d, want 4 (3 + the restored key)", n)
	}
	res, err := q.Rotate(bg, "key-001", "manual")
	t.Logf("rotate the restored key: %+v, %v", res, err)
}

// Ours rotates key-001 onto backup-000 and is paused after moving the
// bindings (GC, VM freeze). Meanwhile the legacy proxy rotates key-001 onto
// backup-001 and, on the next 401, rotates backup-001 onto backup-002. Ours
// resumes: key-001 is gone, but the foreign replacement it looks for
// (backup-001) is no longer live, so it neither undoes nor notices; it
// reports "rotated". key-001 has two live descendants (backup-000 and
// backup-002): the pool is one too big for ever, and verify is silent.
func TestAdv12_ForeignReplacementRotatedOnwardBeforeOursResumes(t *testing.T) {
	bg := context.Background()
	db := mongotest.New(t).Database
	seed(t, db, 3, 4, 2)
	ran := false
	r := newRotator(t, db, rotation.Config{AfterStep: func(_ context.Context, _ string, s rotation.Step) error {
		if s == rotation.StepMoveBindings && !ran {
			ran = true
			legacyRotate(t, db, "key-001", nil)
			legacyRotate(t, db, "backup-001", nil)
		}
		return nil
	}})
	res, err := r.Rotate(bg, "key-001", "manual")
	t.Logf("ours: %+v, %v", res, err)
	if !ran {
		t.Fatal("the legacy rotations never ran")
	}
	for _, owner := range []string{"next", "next2"} {
		rep, err := newRotator(t, db, rotation.Config{Owner: owner}).Recover(bg)
		t.Logf("recover: %+v, %v", rep, err)
	}
	var keys []bson.M
	cur, err := db.Collection(testPool.KeysCollection).Find(bg, bson.M{})
	if err != nil {
		t.Fatal(err)
	}
	if err := cur.All(bg, &keys); err != nil {
		t.Fatal(err)
	}
	if len(keys) != 3 {
		ids := []any{}
		for _, k := range keys {
			ids = append(ids, k["_id"])
		}
		t.Errorf("pool size %d after recovery, want 3: %v", len(keys), ids)
	}
	if n := count(t, db, testPool.BindingsCollection, bson.M{}); n != 6 {
		t.Errorf("%d bindings, want 6", n)
	}
	probs, err := newRotator(t, db, rotation.Config{}).Verify(bg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("verify: %v", probs)
	if n := count(t, db, testPool.KeysCollection, bson.M{}); n != 3 && len(probs) == 0 {
		t.Errorf("verify is silent on a pool of %d keys where 3 are due", n)
	}
}

// The legacy proxy rotated key-001 onto backup-000 (a pool whose keys carry
// no bindings yet). The operator puts key-001 back from the archive (a
// supported path) and ours rotates it onto backup-001. A recovery pass then
// takes backup-000 (a live key from an earlier, finished rotation) for a
// foreign duplicate of ours, deletes it and hands its secret back to the
// backups: the pool that had 4 keys before our rotation has 3 after it.
func TestAdv12_RecoverRemovesLegitKeyAfterRestoreAndRotate(t *testing.T) {
	bg := context.Background()
	db := mongotest.New(t).Database
	seed(t, db, 3, 4, 0)
	legacyRotate(t, db, "key-001", nil)
	var arch struct {
		Document bson.Raw `bson:"document"`
	}
	if err := db.Collection(rotation.ArchiveCollection).FindOne(bg, bson.M{"sourceId": "key-001"}).Decode(&arch); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Collection(testPool.KeysCollection).InsertOne(bg, arch.Document); err != nil {
		t.Fatal(err)
	}
	before := count(t, db, testPool.KeysCollection, bson.M{})
	r := newRotator(t, db, rotation.Config{})
	res, err := r.Rotate(bg, "key-001", "manual")
	if err != nil || res.Outcome != rotation.Rotated {
		t.Fatalf("rotate the restored key: %+v, %v", res, err)
	}
	rep, err := newRotator(t, db, rotation.Config{Owner: "rec"}).Recover(bg)
	t.Logf("recover: %+v, %v", rep, err)
	if n := count(t, db, testPool.KeysCollection, bson.M{}); n != before {
		t.Errorf("pool size %d after our rotation and recovery, want %d as before it", n, before)
	}
	if n := count(t, db, testPool.KeysCollection, bson.M{"_id": "backup-000"}); n != 1 {
		t.Errorf("recovery removed backup-000, a live key from an earlier finished rotation")
	}
}

// The legacy proxy rotated key-001 onto backup-000 earlier; the operator put
// key-001 back from the archive. Ours rotates it onto backup-001 and crashes
// right after deleting key-001. Recovery resumes ours, finds key-001 gone and
// backup-000 (used for key-001 by someone else, live) and takes it for a
// foreign rotation under ours: it undoes ours, deleting backup-001. But it
// was ours that retired key-001; backup-000 replaced an earlier copy. The
// pool loses a key (4 before our rotation, 3 after), and the restored key's
// rotation has no history record.
func TestAdv12_UndoAfterRestoreLosesKey(t *testing.T) {
	bg := context.Background()
	db := mongotest.New(t).Database
	seed(t, db, 3, 4, 1)
	legacyRotate(t, db, "key-001", nil)
	var arch struct {
		Document bson.Raw `bson:"document"`
	}
	if err := db.Collection(rotation.ArchiveCollection).FindOne(bg, bson.M{"sourceId": "key-001"}).Decode(&arch); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Collection(testPool.KeysCollection).InsertOne(bg, arch.Document); err != nil {
		t.Fatal(err)
	}
	before := count(t, db, testPool.KeysCollection, bson.M{})
	crashed := newRotator(t, db, rotation.Config{Owner: "crashed", AfterStep: func(_ context.Context, _ string, s rotation.Step) error {
		if s == rotation.StepDeleteOld {
			return errCrash
		}
		return nil
	}})
	if _, err := crashed.Rotate(bg, "key-001", "manual"); !errors.Is(err, errCrash) {
		t.Fatalf("rotate: %v, want the simulated crash", err)
	}
	rep, err := newRotator(t, db, rotation.Config{Owner: "rec"}).Recover(bg)
	t.Logf("recover: %+v, %v", rep, err)
	if n := count(t, db, testPool.KeysCollection, bson.M{}); n != before {
		t.Errorf("pool size %d after our rotation and recovery, want %d as before it", n, before)
	}
	if n := count(t, db, rotation.JournalCollection, bson.M{"state": "undone"}); n != 0 {
		t.Errorf("ours was undone although ours retired key-001")
	}
	if n := count(t, db, testPool.HistoryCollection, bson.M{}); n != 1 {
		t.Errorf("%d history records, want 1 for the rotation of the restored key", n)
	}
}

// P claims key-001's rotation (backup-000) and is paused right after the
// claim (GC, SIGSTOP). Q recovers the rotation (inserts backup-000, ...,
// done) and rotates backup-000 onward (backup-001). P resumes and runs its
// remaining steps: its insert brings backup-000 back with P's mark, and its
// very next step removes the mark, so the key looks put back by hand and no
// recovery pass ever removes it. No command was held: the process was only
// paused, which the fault model names.
func TestAdv12_PausedOwnerResumesAfterKeyRotatedOnward(t *testing.T) {
	bg := context.Background()
	db := mongotest.New(t).Database
	seed(t, db, 3, 4, 2)
	paused := false
	var b string
	p := newRotator(t, db, rotation.Config{Owner: "p", AfterStep: func(_ context.Context, _ string, s rotation.Step) error {
		if s != rotation.StepClaim || paused {
			return nil
		}
		paused = true
		q := newRotator(t, db, rotation.Config{Owner: "q"})
		if rep, err := q.Recover(bg); err != nil || rep.Completed != 1 {
			t.Fatalf("q recover: %+v, %v", rep, err)
		}
		b = newKeyOf(t, db, "key-001")
		if res, err := q.Rotate(bg, b, "unauthorized"); err != nil || res.Outcome != rotation.Rotated {
			t.Fatalf("q rotate %s onward: %+v, %v", b, res, err)
		}
		return nil // P resumes
	}})
	res, err := p.Rotate(bg, "key-001", "manual")
	t.Logf("p after resuming: %+v, %v", res, err)
	for _, owner := range []string{"next", "next2"} {
		rep, err := newRotator(t, db, rotation.Config{Owner: owner}).Recover(bg)
		t.Logf("recover: %+v, %v", rep, err)
	}
	if n := count(t, db, testPool.KeysCollection, bson.M{"_id": b}); n != 0 {
		t.Errorf("%s, rotated away, is live again after recovery", b)
	}
	checkInvariants(t, db, 3)
}

// Generation 0 of key-001's rotation has its re-pointing of bindings
// (key-001 -> backup-000) held in the network; its owner gives up, a
// recovery pass finishes it and backup-000 is rotated onward. The operator
// restores key-001 and binds a proxy to it. Then the held update lands: the
// restored key's binding moves onto backup-000, which is no live key. No
// recovery pass repairs it: the binding dangles for good.
func TestAdv12_LateBindingsUpdateMovesRestoredKeysBindingOntoDeletedKey(t *testing.T) {
	bg := context.Background()
	mdb := mongotest.New(t)
	db := mdb.Database
	seed(t, db, 3, 4, 2)
	held := rotateAbandonedAt(t, mdb, firstStep(t, "update "+testPool.BindingsCollection))
	q := newRotator(t, db, rotation.Config{Owner: "q"})
	if rep, err := q.Recover(bg); err != nil || rep.Completed != 1 {
		t.Fatalf("recover: %+v, %v", rep, err)
	}
	b := newKeyOf(t, db, "key-001")
	if res, err := q.Rotate(bg, b, "unauthorized"); err != nil || res.Outcome != rotation.Rotated {
		t.Fatalf("rotate %s onward: %+v, %v", b, res, err)
	}
	var arch struct {
		Document bson.Raw `bson:"document"`
	}
	if err := db.Collection(rotation.ArchiveCollection).FindOne(bg, bson.M{"sourceId": "key-001"}).Decode(&arch); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Collection(testPool.KeysCollection).InsertOne(bg, arch.Document); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Collection(testPool.BindingsCollection).InsertOne(bg, bson.M{
		"_id": "bind-restored", "proxyId": "proxy-9", testPool.BindingKeyField: "key-001", "isActive": true,
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := held.Deliver(bg); err != nil {
		t.Fatal(err)
	}
	if _, err := newRotator(t, db, rotation.Config{Owner: "next"}).Recover(bg); err != nil {
		t.Fatal(err)
	}
	var bind bson.M
	if err := db.Collection(testPool.BindingsCollection).FindOne(bg, bson.M{"_id": "bind-restored"}).Decode(&bind); err != nil {
		t.Fatal(err)
	}
	on, _ := bind[testPool.BindingKeyField].(string)
	if count(t, db, testPool.KeysCollection, bson.M{"_id": on}) != 1 {
		t.Errorf("the restored key's binding points at %s, which is no live key", on)
	}
	if on != "key-001" {
		t.Errorf("the restored key's binding was moved to %s by a late command of an earlier rotation", on)
	}
}

// Ours rotation of key-001 is undone because the legacy proxy rotated the
// key under it. Later the operator puts key-001 back from the archive (same
// id and secret) and it must be rotated again (issue 12 case 7). Rotate
// answers "already rotated" for ever: the undone generation is taken for
// the key's rotation, and the next generation is never tried.
func TestAdv12_RestoredKeyAfterUndoneRotationCannotBeRotated(t *testing.T) {
	bg := context.Background()
	db := mongotest.New(t).Database
	seed(t, db, 3, 4, 2)
	ran := false
	r := newRotator(t, db, rotation.Config{AfterStep: func(_ context.Context, _ string, s rotation.Step) error {
		if s == rotation.StepActivateKey && !ran {
			ran = true
			legacyRotate(t, db, "key-001", nil)
		}
		return nil
	}})
	res, err := r.Rotate(bg, "key-001", "manual")
	t.Logf("ours: %+v, %v", res, err)
	if n := count(t, db, rotation.JournalCollection, bson.M{"state": "undone"}); n != 1 {
		t.Fatalf("ours was not undone (%d): the test proves nothing", n)
	}
	var arch struct {
		Document bson.Raw `bson:"document"`
	}
	if err := db.Collection(rotation.ArchiveCollection).FindOne(bg, bson.M{"sourceId": "key-001"}).Decode(&arch); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Collection(testPool.KeysCollection).InsertOne(bg, arch.Document); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		res, err = newRotator(t, db, rotation.Config{Owner: fmt.Sprint("again", i)}).Rotate(bg, "key-001", "manual")
		t.Logf("rotate the restored key: %+v, %v", res, err)
	}
	if n := count(t, db, testPool.KeysCollection, bson.M{"_id": "key-001"}); n != 0 {
		t.Errorf("the restored key-001 can never be rotated away (last answer %s)", res.Outcome)
	}
}

// The legacy proxy reads key-001; ours deletes it; the legacy sequence goes
// on and inserts its replacement (backup-001). While our owner is between
// its delete and its history record, a concurrent recoverer finishing the
// same rotation finds key-001 gone with a foreign replacement live and
// undoes ours (deletes backup-000, gives it back, journal "undone"). Then
// the owner goes on: its history record and its "done" mark land on the
// undone rotation. The journal says done with a new key that is gone and a
// backup that is free again; history records a rotation that was undone.
func TestAdv12_OwnerMarksDoneAfterConcurrentUndo(t *testing.T) {
	bg := context.Background()
	db := mongotest.New(t).Database
	seed(t, db, 3, 4, 2)
	read := make(chan struct{})
	release := make(chan struct{})
	legacyDone := make(chan struct{})
	go func() {
		defer close(legacyDone)
		legacyRotate(t, db, "key-001", func(step int) {
			if step == 1 {
				close(read)
				<-release
			}
		})
	}()
	<-read
	hooked := false
	p := newRotator(t, db, rotation.Config{Owner: "p", AfterStep: func(_ context.Context, _ string, s rotation.Step) error {
		if s == rotation.StepDeleteOld && !hooked {
			hooked = true
			close(release)
			<-legacyDone
			rep, err := newRotator(t, db, rotation.Config{Owner: "x"}).Recover(bg)
			t.Logf("concurrent recoverer: %+v, %v", rep, err)
		}
		return nil
	}})
	res, err := p.Rotate(bg, "key-001", "manual")
	t.Logf("owner: %+v, %v", res, err)
	if !hooked {
		t.Fatal("owner never reached its delete")
	}
	rep, err := newRotator(t, db, rotation.Config{Owner: "next"}).Recover(bg)
	t.Logf("recover: %+v, %v", rep, err)
	var e struct {
		State    string `bson:"state"`
		NewKeyID string `bson:"newKeyId"`
	}
	if err := db.Collection(rotation.JournalCollection).FindOne(bg, bson.M{"oldKeyId": "key-001"}).Decode(&e); err != nil {
		t.Fatal(err)
	}
	t.Logf("journal: %+v", e)
	if e.State == "done" && count(t, db, testPool.KeysCollection, bson.M{"_id": e.NewKeyID}) == 0 {
		t.Errorf("journal says done onto %s, which was undone and is no key", e.NewKeyID)
	}
	done := count(t, db, rotation.JournalCollection, bson.M{"state": "done"})
	if n := count(t, db, testPool.HistoryCollection, bson.M{}); n != done {
		t.Errorf("%d history records for %d rotations that stand", n, done)
	}
	if res.Outcome == rotation.Rotated && count(t, db, testPool.KeysCollection, bson.M{"_id": res.NewKeyID}) == 0 {
		t.Errorf("owner answered rotated onto %s, which is no key", res.NewKeyID)
	}
	// A backup given back is free, yet the journal's unique (pool, backupId)
	// still holds it for the "done" rotation: counted available, never
	// claimable.
	if n := count(t, db, testPool.BackupsCollection, bson.M{"_id": e.NewKeyID, "isUsed": false}); n == 1 && e.State == "done" {
		t.Errorf("backup %s is free but held by a done rotation in the journal: it can never be claimed", e.NewKeyID)
	}
	coexistInvariants(t, db)
}

// After an undo, our backup is given back (isUsed false, counted available
// by BackupsAvailable), but the undone journal entry still holds it in the
// unique (pool, backupId) index: no rotation can ever claim it. With two
// backups, ours claims backup-000 and the legacy proxy takes backup-001
// under it; ours is undone. The pool has one backup left, yet rotating
// key-000 answers "no backup".
func TestAdv12_BackupGivenBackByUndoCanNeverBeClaimed(t *testing.T) {
	bg := context.Background()
	db := mongotest.New(t).Database
	seed(t, db, 3, 2, 2)
	ran := false
	r := newRotator(t, db, rotation.Config{AfterStep: func(_ context.Context, _ string, s rotation.Step) error {
		if s == rotation.StepActivateKey && !ran {
			ran = true
			legacyRotate(t, db, "key-001", nil)
		}
		return nil
	}})
	res, err := r.Rotate(bg, "key-001", "manual")
	t.Logf("ours: %+v, %v", res, err)
	if n := count(t, db, rotation.JournalCollection, bson.M{"state": "undone"}); n != 1 {
		t.Fatalf("ours was not undone (%d): the test proves nothing", n)
	}
	q := newRotator(t, db, rotation.Config{Owner: "q"})
	avail, err := q.BackupsAvailable(bg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("backups available: %d", avail)
	res, err = q.Rotate(bg, "key-000", "manual")
	t.Logf("rotate key-000: %+v, %v", res, err)
	if avail > 0 && res.Outcome != rotation.Rotated {
		t.Errorf("%d backup(s) available, yet rotating key-000 answers %s: the backup the undo gave back can never be claimed", avail, res.Outcome)
	}
}

// The checker read key-000 at cycle start; the operator then replaced its
// secret in place. Rotate with the stale document claims a backup, inserts
// it and moves key-000's bindings onto it, then (rightly) leaves the key
// with the new secret alone. Nothing retired, yet a backup is consumed: the
// pool grows by one for good, and the bindings left the operator's key.
func TestAdv12_StaleDocumentAfterSecretReplacedGrowsPool(t *testing.T) {
	bg := context.Background()
	db := mongotest.New(t).Database
	seed(t, db, 2, 2, 1)
	keys := db.Collection(testPool.KeysCollection)
	stale, err := keys.FindOne(bg, bson.M{"_id": "key-000"}).Raw()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.UpdateOne(bg, bson.M{"_id": "key-000"}, bson.M{"$set": bson.M{"apiKey": "sk-live-replaced-in-place-0000"}}); err != nil {
		t.Fatal(err)
	}
	r := newRotator(t, db, rotation.Config{})
	res, err := r.Rotate(bg, "key-000", "manual", rotation.WithKeyDocument(stale))
	t.Logf("rotate: %+v, %v", res, err)
	if _, err := r.Recover(bg); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db, testPool.KeysCollection, bson.M{}); n != 2 {
		t.Errorf("pool size %d, want 2", n)
	}
	if n := count(t, db, testPool.KeysCollection, bson.M{"_id": "key-000"}); n == 1 {
		if b := count(t, db, testPool.BindingsCollection, bson.M{testPool.BindingKeyField: "key-000"}); b != 1 {
			t.Errorf("key-000 (new secret) is live but its binding was moved away (%d left)", b)
		}
		if u := count(t, db, testPool.BackupsCollection, bson.M{"isUsed": true}); u != 0 {
			t.Errorf("%d backup(s) consumed by a rotation that retired nothing", u)
		}
	}
}
