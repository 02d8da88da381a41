package rotation_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation"
)

// TestRotateRoundTrips bounds the store commands of one uncontended
// rotation: every one is a round trip the proxy's waiting request pays.
// The list is logged, so a change shows which command came or went.
func TestRotateRoundTrips(t *testing.T) {
	cases := []struct {
		name string
		// replaced: the key was itself brought in by a rotation (the steady
		// state), so its rotation also looks for an unfinished arrival.
		replaced, warm, withDoc bool
		max                     int
	}{
		{name: "cold", max: 18},
		{name: "cold-replaced", replaced: true, max: 18},
		{name: "warm", warm: true, max: 17},
		{name: "warm-replaced", warm: true, replaced: true, max: 17},
		{name: "checker", warm: true, withDoc: true, max: 16},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			mdb := mongotest.New(t)
			var mu sync.Mutex
			var cmds []string
			c := mdb.NewClient(t, options.Client().SetMonitor(&event.CommandMonitor{
				Started: func(_ context.Context, e *event.CommandStartedEvent) {
					coll, _ := e.Command.Lookup(e.CommandName).StringValueOK()
					mu.Lock()
					defer mu.Unlock()
					cmds = append(cmds, e.CommandName+" "+coll)
				},
			}))
			db := c.Database(mdb.Name)
			seed(t, mdb.Database, 3, 3, 2)
			r := newRotator(t, db, rotation.Config{})
			if tc.warm {
				// A first rotation fills the rotator's cache of backups.
				if res, err := r.Rotate(ctx, "key-002", "manual"); err != nil || res.Outcome != rotation.Rotated {
					t.Fatalf("first rotation: %+v %v", res, err)
				}
			}
			if tc.replaced {
				if _, err := mdb.Database.Collection(testPool.KeysCollection).UpdateOne(ctx,
					bson.M{"_id": "key-000"}, bson.M{"$set": bson.M{"replacedKey": "gen0"}}); err != nil {
					t.Fatal(err)
				}
			}
			var opts []rotation.RotateOption
			if tc.withDoc {
				doc, err := mdb.Database.Collection(testPool.KeysCollection).FindOne(ctx, bson.M{"_id": "key-000"}).Raw()
				if err != nil {
					t.Fatal(err)
				}
				opts = append(opts, rotation.WithKeyDocument(doc))
			}
			mu.Lock()
			cmds = nil
			mu.Unlock()
			res, err := r.Rotate(ctx, "key-000", "manual", opts...)
			if err != nil || res.Outcome != rotation.Rotated {
				t.Fatalf("rotate: %+v %v", res, err)
			}
			mu.Lock()
			got := append([]string(nil), cmds...)
			mu.Unlock()
			if len(got) > tc.max {
				t.Errorf("%d round trips, want at most %d:\n%s", len(got), tc.max, strings.Join(got, "\n"))
			} else {
				t.Logf("%d round trips:\n%s", len(got), strings.Join(got, "\n"))
			}
			checkInvariants(t, mdb.Database, 3)
		})
	}
}
