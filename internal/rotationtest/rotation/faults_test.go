package rotation_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation"
	"github.com/spendchecker/spendchecker/rotation/history"
)

// Faults at the store boundary: the k-th command of a rotation is cut off
// before it reaches the store (it never runs) or after it ran (its reply is
// lost, as on a timeout), for every k. Whatever Rotate reports, a Recover
// afterwards completes the rotation: one rotation, every invariant intact.
func TestStoreFaultsDuringRotation(t *testing.T) {
	if testing.Short() {
		t.Skip("a fresh store for each fault at each command")
	}
	ctx := context.Background()
	// The commands of a clean rotation, to know how many steps to cut.
	var steps []string
	{
		mdb := mongotest.New(t)
		seed(t, mdb.Database, 3, 2, 2)
		proxy := mdb.Proxy(t)
		r := newRotator(t, mdb.NewClient(t, options.Client().ApplyURI(proxy.URI())).Database(mdb.Name), rotation.Config{})
		proxy.ResetCommands()
		if res, err := r.Rotate(ctx, "key-001", "proactive_threshold_9.99", rotation.WithObservation(history.Observation{Spend: 9.99, Threshold: 9.95})); err != nil || res.Outcome != rotation.Rotated {
			t.Fatalf("clean rotation: %v %v", res, err)
		}
		steps = proxy.Commands()
		t.Logf("a rotation sends %d data commands: %v", len(steps), steps)
		if len(steps) < 8 {
			t.Fatalf("only %d commands seen: the proxy does not see the rotation", len(steps))
		}
	}
	for k := range steps {
		for _, when := range []mongotest.Fault{mongotest.Before, mongotest.After} {
			t.Run(fmt.Sprintf("%02d %s %s", k+1, when, steps[k]), func(t *testing.T) {
				mdb := mongotest.New(t)
				seed(t, mdb.Database, 3, 2, 2)
				proxy := mdb.Proxy(t)
				client := mdb.NewClient(t, options.Client().ApplyURI(proxy.URI()).SetTimeout(time.Minute))
				r := newRotator(t, client.Database(mdb.Name), rotation.Config{})
				proxy.FailCommand(k+1, when)
				res, err := r.Rotate(ctx, "key-001", "proactive_threshold_9.99", rotation.WithObservation(history.Observation{Spend: 9.99, Threshold: 9.95}))
				t.Logf("rotate: %v, err %v", res.Outcome, err)
				claimed := count(t, mdb.Database, rotation.JournalCollection, bson.M{}) > 0
				if !claimed {
					// Nothing may be written before the claim.
					if n := count(t, mdb.Database, testPool.BackupsCollection, bson.M{"isUsed": true}); n != 0 {
						t.Errorf("%d backups marked used without a claim", n)
					}
				}
				if err == nil && res.Outcome != rotation.Rotated && res.Outcome != rotation.InProgress {
					t.Errorf("outcome %v after a fault, want rotated, in progress or an error", res.Outcome)
				}
				// Recovery, then the key's next check rotating it, as the next
				// cycle does: a fault before anything was written leaves the
				// key to that rotation; any later one, to the recovery.
				again := newRotator(t, mdb.Database, rotation.Config{Owner: "next-cycle"})
				if _, err := again.Recover(ctx); err != nil {
					t.Fatalf("recover: %v", err)
				}
				res2, err := again.Rotate(ctx, "key-001", "proactive_threshold_9.99", rotation.WithObservation(history.Observation{Spend: 9.99, Threshold: 9.95}))
				if err != nil {
					t.Fatalf("next rotation: %v", err)
				}
				want := rotation.AlreadyRotated
				if !claimed {
					want = rotation.Rotated
				}
				if res2.Outcome != want {
					t.Errorf("next rotation: %v, want %v (claimed before: %v)", res2.Outcome, want, claimed)
				}
				checkInvariants(t, mdb.Database, 3)
				if n := count(t, mdb.Database, rotation.JournalCollection, bson.M{"oldKeyId": "key-001", "state": "done"}); n != 1 {
					t.Errorf("key-001 rotated %d times, want once", n)
				}
				if n := count(t, mdb.Database, testPool.KeysCollection, bson.M{"_id": "key-001"}); n != 0 {
					t.Errorf("key-001 still in the pool")
				}
			})
		}
	}
}
