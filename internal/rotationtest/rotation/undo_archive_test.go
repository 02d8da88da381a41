package rotation_test

import (
	"context"
	"fmt"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation"
)

// rekeyUnder replaces key-000's secret in place and returns the document
// as it was before: a caller that read it then rotates a secret that is
// gone, and the rotation undoes itself.
func rekeyUnder(t *testing.T, db *mongo.Database) bson.Raw {
	t.Helper()
	keys := db.Collection(testPool.KeysCollection)
	stale, err := keys.FindOne(context.Background(), bson.M{"_id": "key-000"}).Raw()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.UpdateOne(context.Background(), bson.M{"_id": "key-000"}, bson.M{"$set": bson.M{"apiKey": "sk-live-replaced-in-place-0000"}}); err != nil {
		t.Fatal(err)
	}
	return stale
}

// checkUndoneArchive asserts that no archive entry of the rotations of
// old records a deletion: an undone rotation deleted nothing, so each
// copy of the old key it archived is marked undone.
func checkUndoneArchive(t *testing.T, db *mongo.Database, old string) {
	t.Helper()
	bg := context.Background()
	if n := count(t, db, rotation.JournalCollection, bson.M{"oldKeyId": old, "state": "undone"}); n != 1 {
		t.Fatalf("%d undone rotations of %s, want 1", n, old)
	}
	cur, err := db.Collection(rotation.ArchiveCollection).Find(bg, bson.M{"sourceId": old, "metadata.rotationId": bson.M{"$exists": true}})
	if err != nil {
		t.Fatal(err)
	}
	var entries []bson.Raw
	if err := cur.All(bg, &entries); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if _, ok := e.Lookup("undoneAt").TimeOK(); !ok {
			t.Errorf("archive entry %s records the deletion of %s by a rotation that was undone: %s", e.Lookup("_id"), old, e)
		}
	}
}

// A rotation that undoes itself leaves no archive entry saying it deleted
// the old key: whether the old key's secret was replaced in place under it
// or the proxy's own rotator rotated the key away under it.
func TestUndoneRotationLeavesNoDeletionInTheArchive(t *testing.T) {
	bg := context.Background()
	for _, tt := range []struct {
		name   string
		old    string
		rotate func(t *testing.T, db *mongo.Database)
		keys   int64
	}{
		{"secret replaced in place", "key-000", func(t *testing.T, db *mongo.Database) {
			stale := rekeyUnder(t, db)
			res, err := newRotator(t, db, rotation.Config{}).Rotate(bg, "key-000", "manual", rotation.WithKeyDocument(stale))
			t.Logf("rotate: %+v, %v", res, err)
		}, 3},
		{"rotated by the proxy after our archive", "key-001", func(t *testing.T, db *mongo.Database) {
			r := newRotator(t, db, rotation.Config{AfterStep: func(_ context.Context, _ string, s rotation.Step) error {
				if s == rotation.StepArchive {
					legacyRotate(t, db, "key-001", nil)
				}
				return nil
			}})
			res, err := r.Rotate(bg, "key-001", "manual")
			if err != nil || res.Outcome != rotation.AlreadyRotated {
				t.Fatalf("rotate: %+v, %v; want already rotated (undone)", res, err)
			}
		}, 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			db := mongotest.New(t).Database
			seed(t, db, 3, 3, 1)
			tt.rotate(t, db)
			if _, err := newRotator(t, db, rotation.Config{}).Recover(bg); err != nil {
				t.Fatal(err)
			}
			checkUndoneArchive(t, db, tt.old)
			if n := count(t, db, testPool.KeysCollection, bson.M{}); n != tt.keys {
				t.Errorf("pool size %d, want %d", n, tt.keys)
			}
			probs, err := newRotator(t, db, rotation.Config{}).Verify(bg)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range probs {
				t.Errorf("verify: %s", p)
			}
		})
	}
}

// The undo itself is cut short at each of its commands (held in the
// network, its sender gives up); another process recovers, then the held
// command lands. After the next recovery pass no archive entry records
// the deletion, and the pool has its size.
func TestUndoneArchiveSurvivesInterruptedUndo(t *testing.T) {
	bg := context.Background()
	var steps []string
	{
		mdb := mongotest.New(t)
		seed(t, mdb.Database, 3, 3, 1)
		stale := rekeyUnder(t, mdb.Database)
		proxy := mdb.Proxy(t)
		r := newRotator(t, mdb.NewClient(t, options.Client().ApplyURI(proxy.URI())).Database(mdb.Name), rotation.Config{})
		proxy.ResetCommands()
		_, _ = r.Rotate(bg, "key-000", "manual", rotation.WithKeyDocument(stale))
		steps = proxy.Commands()
	}
	first := -1
	for i, s := range steps {
		if s == "insert "+rotation.ArchiveCollection {
			first = i
			break
		}
	}
	if first < 0 {
		t.Fatalf("no archive insert in %v", steps)
	}
	for k := first; k < len(steps); k++ {
		t.Run(fmt.Sprintf("%02d %s", k+1, steps[k]), func(t *testing.T) {
			mdb := mongotest.New(t)
			db := mdb.Database
			seed(t, db, 3, 3, 1)
			stale := rekeyUnder(t, db)
			proxy := mdb.Proxy(t)
			p := newRotator(t, mdb.NewClient(t, options.Client().ApplyURI(proxy.URI())).Database(mdb.Name), rotation.Config{Owner: "p"})
			held := proxy.HoldCommand(k + 1)
			ctx, cancel := context.WithCancel(bg)
			done := make(chan error, 1)
			go func() {
				_, err := p.Rotate(ctx, "key-000", "manual", rotation.WithKeyDocument(stale))
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
			checkUndoneArchive(t, db, "key-000")
			if n := count(t, db, testPool.KeysCollection, bson.M{}); n != 3 {
				t.Errorf("pool size %d, want 3", n)
			}
			if n := count(t, db, testPool.KeysCollection, bson.M{"_id": "key-000", "apiKey": "sk-live-replaced-in-place-0000"}); n != 1 {
				t.Error("the key with its new secret is gone")
			}
		})
	}
}
