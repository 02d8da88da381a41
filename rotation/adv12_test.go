package rotation_test

import (
	"context"
	"errors"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

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
	proxy := mdb.Proxy(t)
	p := newRotator(t, mdb.NewClient(t, options.Client().ApplyURI(proxy.URI())).Database(mdb.Name), rotation.Options{Owner: "p"})
	steps := commandsOf(t, heldRuns[0])
	k := -1
	for i, s := range steps {
		if s == "insert "+testPool.KeysCollection {
			k = i
			break
		}
	}
	if k < 0 {
		t.Fatalf("no key insert in %v", steps)
	}
	held := proxy.HoldCommand(k + 1)
	ctx, cancel := context.WithCancel(bg)
	done := make(chan error, 1)
	go func() {
		_, err := p.Rotate(ctx, "key-001", "manual")
		done <- err
	}()
	<-held.Arrived()
	cancel()
	<-done

	legacyRotate(t, db, "key-001", nil)

	q := newRotator(t, db, rotation.Options{Owner: "q"})
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
	// The next recovery passes (a fresh process and the same one).
	for _, r := range []*rotation.Rotator{newRotator(t, db, rotation.Options{Owner: "next"}), q} {
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
	crashed := newRotator(t, db, rotation.Options{Owner: "crashed", AfterStep: func(_ context.Context, _ string, s rotation.Step) error {
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
	rep, err := newRotator(t, db, rotation.Options{Owner: "q"}).Recover(bg)
	t.Logf("recover: %+v, %v", rep, err)
	rep, err = newRotator(t, db, rotation.Options{Owner: "q2"}).Recover(bg)
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
	r := newRotator(t, db, rotation.Options{})
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
