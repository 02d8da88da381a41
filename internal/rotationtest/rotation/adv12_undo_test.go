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

// undoPending leaves ours crashed after activating its key while the legacy
// proxy rotated key-001 whole: the next recovery pass undoes ours.
func undoPending(t *testing.T, db *mongo.Database) {
	t.Helper()
	r := newRotator(t, db, rotation.Config{Owner: "crashed", AfterStep: func(_ context.Context, _ string, s rotation.Step) error {
		if s == rotation.StepActivateKey {
			legacyRotate(t, db, "key-001", nil)
			return errCrash
		}
		return nil
	}})
	_, _ = r.Rotate(context.Background(), "key-001", "manual")
}

// The k-th command of a recovery pass that undoes ours is held; the
// recoverer gives up; another recovers, then the legacy key is rotated
// onward by ours; then the held command lands. After the next recovery pass
// the pool has its size, every used backup is live and verify is silent.
// Held: the recoverer's mark of our backup (same values on every retry, so
// "harmless" says the README); it lands after the undo gave the backup
// back, and the backup is burnt: marked used for key-001, no key, for good.
func TestAdv12_HeldCommandOfUndoingRecovery(t *testing.T) {
	bg := context.Background()
	var steps []string
	{
		mdb := mongotest.New(t)
		seed(t, mdb.Database, 3, 5, 2)
		undoPending(t, mdb.Database)
		proxy := mdb.Proxy(t)
		r := newRotator(t, mdb.NewClient(t, options.Client().ApplyURI(proxy.URI())).Database(mdb.Name), rotation.Config{})
		proxy.ResetCommands()
		if _, err := r.Recover(bg); err != nil {
			t.Fatal(err)
		}
		steps = proxy.Commands()
	}
	t.Logf("%d commands: %v", len(steps), steps)
	// Every k was tried (adv12); only the late mark of the backup breaks a
	// guarantee, so only it is kept here.
	for k := range steps {
		if steps[k] != "update "+testPool.BackupsCollection {
			continue
		}
		t.Run(fmt.Sprintf("%02d %s", k+1, steps[k]), func(t *testing.T) {
			mdb := mongotest.New(t)
			db := mdb.Database
			seed(t, db, 3, 5, 2)
			undoPending(t, db)
			proxy := mdb.Proxy(t)
			p := newRotator(t, mdb.NewClient(t, options.Client().ApplyURI(proxy.URI())).Database(mdb.Name), rotation.Config{Owner: "p"})
			held := proxy.HoldCommand(k + 1)
			ctx, cancel := context.WithCancel(bg)
			defer cancel()
			done := make(chan error, 1)
			go func() { _, err := p.Recover(ctx); done <- err }()
			select {
			case <-held.Arrived():
				cancel()
			case err := <-done:
				t.Fatalf("recover ended without command %d: %v", k+1, err)
			}
			<-done
			q := newRotator(t, db, rotation.Config{Owner: "q"})
			if _, err := q.Recover(bg); err != nil {
				t.Logf("q recover: %v", err)
			}
			// The legacy key is rotated onward by ours.
			var c struct {
				ID string `bson:"_id"`
			}
			if err := db.Collection(testPool.KeysCollection).FindOne(bg, bson.M{"replacedKey": "key-001", "pendingRotation": bson.M{"$exists": false}, "createdAt": bson.M{"$exists": true}}, options.FindOne().SetSort(bson.D{{Key: "_id", Value: -1}})).Decode(&c); err != nil {
				t.Fatal(err)
			}
			if res, err := q.Rotate(bg, c.ID, "unauthorized"); err != nil {
				t.Fatalf("rotate %s onward: %+v %v", c.ID, res, err)
			}
			if _, err := held.Deliver(bg); err != nil {
				t.Fatal(err)
			}
			if _, err := newRotator(t, db, rotation.Config{Owner: "next"}).Recover(bg); err != nil {
				t.Errorf("recover after late delivery: %v", err)
			}
			if n := count(t, db, testPool.KeysCollection, bson.M{}); n != 3 {
				t.Errorf("pool size %d, want 3", n)
			}
			if n := count(t, db, testPool.BindingsCollection, bson.M{}); n != 6 {
				t.Errorf("%d bindings, want 6", n)
			}
			cur, err := db.Collection(testPool.BackupsCollection).Find(bg, bson.M{"isUsed": true})
			if err != nil {
				t.Fatal(err)
			}
			for cur.Next(bg) {
				id := cur.Current.Lookup("_id").StringValue()
				if count(t, db, testPool.KeysCollection, bson.M{"_id": id}) == 0 && count(t, db, rotation.JournalCollection, bson.M{"oldKeyId": id}) == 0 {
					t.Errorf("used backup %s is no live key and was never rotated away", id)
				}
			}
			probs, err := newRotator(t, db, rotation.Config{}).Verify(bg)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range probs {
				t.Errorf("verify: %s", p)
			}
		})
		break
	}
}
