package rotation_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation"
)

const recreatedSecret = "sk-live-recreated-under-same-id-0001"

// recreateKey001 puts a new key under key-001's id, with a secret of its
// own, as an operator reusing the id does once the old key is gone.
func recreateKey001(t *testing.T, db *mongo.Database) {
	t.Helper()
	if _, err := db.Collection(testPool.KeysCollection).InsertOne(context.Background(), bson.M{
		"_id": "key-001", "apiKey": recreatedSecret, "status": "healthy",
		"createdAt": time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC),
	}); err != nil {
		t.Fatalf("recreate key-001: %v", err)
	}
}

// checkRealDeletion asserts what a rotation that deleted key-001 leaves,
// whatever happened under the same id since: the rotation is done, its
// replacement live, and the deleted document has exactly one archived copy,
// not marked undone (the copy retire disables upstream).
func checkRealDeletion(t *testing.T, db *mongo.Database) {
	t.Helper()
	bg := context.Background()
	var e struct {
		ID       string `bson:"_id"`
		State    string `bson:"state"`
		NewKeyID string `bson:"newKeyId"`
	}
	if err := db.Collection(rotation.JournalCollection).FindOne(bg, bson.M{"oldKeyId": "key-001"}).Decode(&e); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db, rotation.JournalCollection, bson.M{"oldKeyId": "key-001"}); n != 1 {
		t.Errorf("%d rotations of key-001, want 1", n)
	}
	if e.State != "done" {
		t.Errorf("rotation %s of key-001, which deleted it, is %s, want done", e.ID, e.State)
	}
	if n := count(t, db, testPool.KeysCollection, bson.M{"_id": e.NewKeyID}); n != 1 {
		t.Errorf("the replacement %s of the deleted key-001 is not live", e.NewKeyID)
	}
	if n := count(t, db, testPool.KeysCollection, bson.M{"_id": "key-001", "apiKey": recreatedSecret}); n != 1 {
		t.Error("the key recreated under key-001 is gone")
	}
	unmarked := count(t, db, rotation.ArchiveCollection, bson.M{"sourceId": "key-001", "metadata.rotationId": e.ID,
		"document.apiKey": "sk-live-key-secret-000001", rotation.FieldArchiveUndoneAt: bson.M{"$exists": false}})
	if unmarked != 1 {
		t.Errorf("%d unmarked archived copies of the deleted key-001, want 1 (marked undone: %d)", unmarked,
			count(t, db, rotation.ArchiveCollection, bson.M{"sourceId": "key-001", rotation.FieldArchiveUndoneAt: bson.M{"$exists": true}}))
	}
	if n := count(t, db, testPool.KeysCollection, bson.M{}); n != 4 {
		t.Errorf("pool size %d, want 4 (3 and the recreated key)", n)
	}
	if n := count(t, db, testPool.HistoryCollection, bson.M{}); n != 1 {
		t.Errorf("%d history records, want 1", n)
	}
	probs, err := newRotator(t, db, rotation.Config{Owner: "verify"}).Verify(bg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range probs {
		t.Errorf("verify: %s", p)
	}
}

// A rotation deleted key-001 and stopped before it finished (killed, its
// delete's reply lost, or simply still running while a recovery pass
// runs); the operator then put a new key, with a new secret, under the
// same id. Recovery must not take that key for the old one re-keyed in
// place: the old document is gone, so the rotation did retire it. Undoing
// it would delete the live replacement and mark the only archived copy of
// a deleted key undone, so retire never disables it upstream.
func TestAdvrot23_KeyRecreatedAfterRealDeleteIsNoUndo(t *testing.T) {
	bg := context.Background()
	for _, tt := range []struct {
		name string
		run  func(t *testing.T, mdb *mongotest.DB)
	}{
		{"killed after its delete", func(t *testing.T, mdb *mongotest.DB) {
			r := newRotator(t, mdb.Database, rotation.Config{Owner: "p", AfterStep: func(_ context.Context, _ string, s rotation.Step) error {
				if s == rotation.StepDeleteOld {
					return errCrash
				}
				return nil
			}})
			if _, err := r.Rotate(bg, "key-001", "manual"); !errors.Is(err, errCrash) {
				t.Fatalf("rotate: %v, want simulated crash", err)
			}
			recreateKey001(t, mdb.Database)
			if _, err := newRotator(t, mdb.Database, rotation.Config{Owner: "q"}).Recover(bg); err != nil {
				t.Logf("recover: %v", err)
			}
		}},
		{"delete's reply lost", func(t *testing.T, mdb *mongotest.DB) {
			k := lastStep(t, "delete "+testPool.KeysCollection)
			proxy := mdb.Proxy(t)
			p := newRotator(t, mdb.NewClient(t, options.Client().ApplyURI(proxy.URI())).Database(mdb.Name), rotation.Config{Owner: "p"})
			proxy.FailCommand(k+1, mongotest.After)
			if _, err := p.Rotate(bg, "key-001", "manual"); err == nil {
				t.Fatal("rotate succeeded though its delete's reply was cut")
			}
			if n := count(t, mdb.Database, testPool.KeysCollection, bson.M{"_id": "key-001"}); n != 0 {
				t.Fatalf("key-001 still live after the cut delete: the test proves nothing")
			}
			recreateKey001(t, mdb.Database)
			if _, err := newRotator(t, mdb.Database, rotation.Config{Owner: "q"}).Recover(bg); err != nil {
				t.Logf("recover: %v", err)
			}
		}},
		{"recovery pass while the owner finishes", func(t *testing.T, mdb *mongotest.DB) {
			db := mdb.Database
			once := false
			r := newRotator(t, db, rotation.Config{Owner: "p", AfterStep: func(_ context.Context, _ string, s rotation.Step) error {
				if s == rotation.StepDeleteOld && !once {
					once = true
					recreateKey001(t, db)
					if _, err := newRotator(t, db, rotation.Config{Owner: "q"}).Recover(bg); err != nil {
						t.Logf("recover: %v", err)
					}
				}
				return nil
			}})
			res, err := r.Rotate(bg, "key-001", "manual")
			t.Logf("owner: %+v, %v", res, err)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mdb := mongotest.New(t)
			seed(t, mdb.Database, 3, 3, 2)
			tt.run(t, mdb)
			if _, err := newRotator(t, mdb.Database, rotation.Config{Owner: "next"}).Recover(bg); err != nil {
				t.Errorf("recover: %v", err)
			}
			checkRealDeletion(t, mdb.Database)
		})
	}
}

// The proxy's own rotator rotates key-001 away right after ours archived
// it; ours then finds the key gone and undoes itself. Each command from
// ours' delete on is held in the network, its sender gives up, another
// process recovers, then the held command lands. After the next recovery
// pass the key that left the pool has exactly one archived copy standing
// for its deletion (the proxy's), ours is marked undone, and the pool,
// bindings and backups hold.
func TestAdvrot23_HeldCommandOfUndoAfterLegacyRotation(t *testing.T) {
	bg := context.Background()
	rotateUnderLegacy := func(t *testing.T, mdb *mongotest.DB) rotation.Config {
		ran := false
		return rotation.Config{Owner: "p", AfterStep: func(_ context.Context, _ string, s rotation.Step) error {
			if s == rotation.StepArchive && !ran {
				ran = true
				legacyRotate(t, mdb.Database, "key-001", nil)
			}
			return nil
		}}
	}
	var steps []string
	{
		mdb := mongotest.New(t)
		seed(t, mdb.Database, 3, 4, 2)
		proxy := mdb.Proxy(t)
		r := newRotator(t, mdb.NewClient(t, options.Client().ApplyURI(proxy.URI())).Database(mdb.Name), rotateUnderLegacy(t, mdb))
		proxy.ResetCommands()
		res, err := r.Rotate(bg, "key-001", "manual")
		if err != nil || res.Outcome != rotation.AlreadyRotated {
			t.Fatalf("clean run: %+v, %v; want already rotated (undone)", res, err)
		}
		steps = proxy.Commands()
	}
	first := -1
	for i, s := range steps {
		if s == "delete "+testPool.KeysCollection {
			first = i
			break
		}
	}
	if first < 0 {
		t.Fatalf("no delete of the old key in %v", steps)
	}
	for k := first; k < len(steps); k++ {
		if testing.Short() && k != first {
			break // the delete itself held stands for the rest under -short
		}
		t.Run(fmt.Sprintf("%02d %s", k+1, steps[k]), func(t *testing.T) {
			mdb := mongotest.New(t)
			db := mdb.Database
			seed(t, db, 3, 4, 2)
			proxy := mdb.Proxy(t)
			p := newRotator(t, mdb.NewClient(t, options.Client().ApplyURI(proxy.URI())).Database(mdb.Name), rotateUnderLegacy(t, mdb))
			held := proxy.HoldCommand(k + 1)
			ctx, cancel := context.WithCancel(bg)
			done := make(chan error, 1)
			go func() {
				_, err := p.Rotate(ctx, "key-001", "manual")
				done <- err
			}()
			select {
			case <-held.Arrived():
				cancel()
			case err := <-done:
				cancel()
				t.Fatalf("rotate ended without command %d: %v", k+1, err)
			}
			<-done
			if _, err := newRotator(t, db, rotation.Config{Owner: "q"}).Recover(bg); err != nil {
				t.Logf("q recover: %v", err)
			}
			if _, err := held.Deliver(bg); err != nil {
				t.Fatal(err)
			}
			if _, err := newRotator(t, db, rotation.Config{Owner: "next"}).Recover(bg); err != nil {
				t.Errorf("recover after late delivery: %v", err)
			}
			coexistInvariants(t, db)
			if n := count(t, db, rotation.ArchiveCollection, bson.M{"sourceId": "key-001", rotation.FieldArchiveUndoneAt: bson.M{"$exists": false}}); n != 1 {
				t.Errorf("%d archived copies of key-001 stand for its deletion, want 1 (the proxy's)", n)
			}
			if n := count(t, db, rotation.ArchiveCollection, bson.M{"sourceId": "key-001", "metadata.rotationId": bson.M{"$exists": true},
				rotation.FieldArchiveUndoneAt: bson.M{"$exists": false}}); n != 0 {
				t.Errorf("%d copies our undone rotation archived of key-001 are not marked undone", n)
			}
		})
	}
}
