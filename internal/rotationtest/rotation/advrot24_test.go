package rotation_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/spendchecker/spendchecker/internal/fixture"
	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation"
)

// putBackKey001 restores key-001 by hand as the archive holds it (the
// document as it was before its rotation) and binds it anew, as an
// operator reinstating the key does.
func putBackKey001(t *testing.T, db *mongo.Database, orig bson.Raw) {
	t.Helper()
	bg := context.Background()
	if _, err := db.Collection(testPool.KeysCollection).InsertOne(bg, orig); err != nil {
		t.Fatalf("put key-001 back: %v", err)
	}
	b := fixture.BindingDoc(testPool, "key-001", 7, time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))
	b[rotation.FieldID] = "bind-key-001-putback"
	if _, err := db.Collection(testPool.BindingsCollection).InsertOne(bg, b); err != nil {
		t.Fatalf("bind key-001 again: %v", err)
	}
}

// checkPutBackKept asserts that key-001, put back by hand after its
// rotation was done, is live with its new binding, and that no binding
// names a deleted key.
func checkPutBackKept(t *testing.T, db *mongo.Database) {
	t.Helper()
	bg := context.Background()
	if n := count(t, db, testPool.KeysCollection, bson.M{"_id": "key-001"}); n != 1 {
		t.Errorf("key-001, put back by hand after its rotation was done, is gone (%d live)", n)
	}
	var b bson.M
	if err := db.Collection(testPool.BindingsCollection).FindOne(bg, bson.M{rotation.FieldID: "bind-key-001-putback"}).Decode(&b); err != nil {
		t.Fatal(err)
	}
	if b[testPool.BindingKeyField] != "key-001" {
		t.Errorf("the binding made for key-001 put back was moved to %v", b[testPool.BindingKeyField])
	}
	cur, err := db.Collection(testPool.BindingsCollection).Find(bg, bson.M{})
	if err != nil {
		t.Fatal(err)
	}
	var all []bson.M
	if err := cur.All(bg, &all); err != nil {
		t.Fatal(err)
	}
	for _, b := range all {
		if n := count(t, db, testPool.KeysCollection, bson.M{"_id": b[testPool.BindingKeyField]}); n != 1 {
			t.Errorf("binding %v names %v, not a live key", b[rotation.FieldID], b[testPool.BindingKeyField])
		}
	}
	if n := count(t, db, rotation.JournalCollection, bson.M{"state": bson.M{"$ne": "done"}}); n != 0 {
		t.Errorf("%d journal entries not done", n)
	}
	if n, done := count(t, db, testPool.HistoryCollection, bson.M{}), count(t, db, rotation.JournalCollection, bson.M{}); n != done {
		t.Errorf("%d history records for %d rotations", n, done)
	}
	probs, err := newRotator(t, db, rotation.Config{Owner: "verify"}).Verify(bg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range probs {
		// A key put back by hand is named, as it should be; nothing else.
		if p.Kind != "rotated_key_live_again" {
			t.Errorf("verify: %s", p)
		}
	}
}

// The owner of key-001's rotation is paused right after it activated the
// new key (the stamp rode along). Meanwhile a recovery pass completes the
// rotation (the old key deleted, the entry done), optionally the new key is
// rotated onward, and the operator puts key-001 back from the archive and
// binds it. The owner resumes without reading its journal entry again: it
// must neither delete the key put back nor move its binding.
func TestAdvRot24_PausedOwnerAfterActivationSparesKeyPutBack(t *testing.T) {
	bg := context.Background()
	for _, tt := range []struct {
		name    string
		onward  bool
		changed bool // the proxy counts a request on the old key before the activation
	}{
		{"new key still live", false, false},
		{"new key rotated onward", true, false},
		{"old key changed before the activation", false, true},
		{"old key changed, new key rotated onward", true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mdb := mongotest.New(t)
			db := mdb.Database
			seed(t, db, 3, 3, 2)
			orig, err := db.Collection(testPool.KeysCollection).FindOne(bg, bson.M{"_id": "key-001"}).Raw()
			if err != nil {
				t.Fatal(err)
			}
			paused := false
			p := newRotator(t, db, rotation.Config{Owner: "p", AfterStep: func(_ context.Context, _ string, s rotation.Step) error {
				if s == rotation.StepMarkBackup && tt.changed {
					if _, err := db.Collection(testPool.KeysCollection).UpdateOne(bg, bson.M{"_id": "key-001"},
						bson.M{"$inc": bson.M{"requestsCount": 1}}); err != nil {
						t.Fatal(err)
					}
				}
				if s != rotation.StepActivateKey || paused {
					return nil
				}
				paused = true
				if tt.changed {
					// What the recovery pass archives, and the operator puts back.
					if orig, err = db.Collection(testPool.KeysCollection).FindOne(bg, bson.M{"_id": "key-001"}).Raw(); err != nil {
						t.Fatal(err)
					}
					if _, err := orig.LookupErr("retiredBy"); err == nil {
						t.Fatal("the stamp landed on the changed key: the test proves nothing")
					}
				}
				q := newRotator(t, db, rotation.Config{Owner: "q"})
				if _, err := q.Recover(bg); err != nil {
					t.Fatalf("recover while the owner is paused: %v", err)
				}
				if tt.onward {
					nk := newKeyOf(t, db, "key-001")
					if res, err := q.Rotate(bg, nk, "manual"); err != nil || res.Outcome != rotation.Rotated {
						t.Fatalf("rotate %s onward: %+v, %v", nk, res, err)
					}
				}
				putBackKey001(t, db, orig)
				return nil
			}})
			res, err := p.Rotate(bg, "key-001", "manual")
			t.Logf("owner resumed: %+v, %v", res, err)
			if !paused {
				t.Fatal("the owner never reached the activation")
			}
			if _, err := newRotator(t, db, rotation.Config{Owner: "r"}).Recover(bg); err != nil {
				t.Logf("recover: %v", err)
			}
			checkPutBackKept(t, db)
		})
	}
}

// The owner of key-001's rotation is paused right after its activation.
// Meanwhile the proxy's own rotator rotates key-001 (onto backup-001), a
// recovery pass undoes ours (its key deleted, backup-000 given back), and
// key-002 is rotated onto backup-000, which is now key-002's live
// replacement with key-002's bindings. The owner resumes: it must not undo
// its rotation a second time, which would move every binding of the key
// named backup-000 (key-002's now) onto the proxy's replacement of key-001.
func TestAdvRot24_PausedOwnerAfterUndoLeavesReusedBackupsBindings(t *testing.T) {
	bg := context.Background()
	mdb := mongotest.New(t)
	db := mdb.Database
	seed(t, db, 3, 2, 2)
	paused := false
	p := newRotator(t, db, rotation.Config{Owner: "p", AfterStep: func(_ context.Context, _ string, s rotation.Step) error {
		if s != rotation.StepActivateKey || paused {
			return nil
		}
		paused = true
		legacyRotate(t, db, "key-001", nil)
		q := newRotator(t, db, rotation.Config{Owner: "q"})
		if _, err := q.Recover(bg); err != nil {
			t.Fatalf("recover while the owner is paused: %v", err)
		}
		if n := count(t, db, rotation.JournalCollection, bson.M{"oldKeyId": "key-001", "state": "undone"}); n != 1 {
			t.Fatalf("our rotation of key-001 was not undone: the test proves nothing")
		}
		res, err := q.Rotate(bg, "key-002", "manual")
		if err != nil || res.Outcome != rotation.Rotated || res.NewKeyID != "backup-000" {
			t.Fatalf("rotate key-002: %+v, %v; want rotated onto backup-000", res, err)
		}
		return nil
	}})
	res, err := p.Rotate(bg, "key-001", "manual")
	t.Logf("owner resumed: %+v, %v", res, err)
	if !paused {
		t.Fatal("the owner never reached the activation")
	}
	if _, err := newRotator(t, db, rotation.Config{Owner: "r"}).Recover(bg); err != nil {
		t.Logf("recover: %v", err)
	}
	for j := range 2 {
		var b bson.M
		id := fmt.Sprintf("bind-key-002-%d", j)
		if err := db.Collection(testPool.BindingsCollection).FindOne(bg, bson.M{rotation.FieldID: id}).Decode(&b); err != nil {
			t.Fatal(err)
		}
		if b[testPool.BindingKeyField] != "backup-000" {
			t.Errorf("binding %s of key-002 was moved from its replacement backup-000 to %v", id, b[testPool.BindingKeyField])
		}
	}
	if n := count(t, db, testPool.KeysCollection, bson.M{}); n != 3 {
		t.Errorf("pool size %d, want 3", n)
	}
	probs, err := newRotator(t, db, rotation.Config{Owner: "verify"}).Verify(bg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range probs {
		t.Errorf("verify: %s", p)
	}
}

// The activation (with the old key's stamp in the same command) is
// delivered late: after the owner gave up, a recovery pass completed the
// rotation and the operator put key-001 back. The stamp then lands on the
// key put back; nothing may delete it for that, and it can be rotated
// again.
func TestAdvRot24_LateActivationStampsKeyPutBack(t *testing.T) {
	bg := context.Background()
	k := firstStep(t, "update "+testPool.KeysCollection)
	mdb := mongotest.New(t)
	db := mdb.Database
	seed(t, db, 3, 3, 2)
	orig, err := db.Collection(testPool.KeysCollection).FindOne(bg, bson.M{"_id": "key-001"}).Raw()
	if err != nil {
		t.Fatal(err)
	}
	held := rotateAbandonedAt(t, mdb, k)
	if _, err := newRotator(t, db, rotation.Config{Owner: "q"}).Recover(bg); err != nil {
		t.Fatalf("recover: %v", err)
	}
	putBackKey001(t, db, orig)
	if _, err := held.Deliver(bg); err != nil {
		t.Fatalf("deliver the held %s: %v", held.Command, err)
	}
	if n := count(t, db, testPool.KeysCollection, bson.M{"_id": "key-001", "retiredBy": bson.M{"$exists": true}}); n != 1 {
		t.Logf("the late stamp did not land on the key put back")
	}
	r := newRotator(t, db, rotation.Config{Owner: "r"})
	if _, err := r.Recover(bg); err != nil {
		t.Logf("recover: %v", err)
	}
	checkPutBackKept(t, db)
	res, err := r.Rotate(bg, "key-001", "manual")
	if err != nil || res.Outcome != rotation.Rotated {
		t.Fatalf("rotate key-001 put back: %+v, %v", res, err)
	}
	if _, err := r.Recover(bg); err != nil {
		t.Logf("recover: %v", err)
	}
	checkInvariants(t, db, 4)
}
