package rotation_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation"
	"github.com/spendchecker/spendchecker/rotation/history"
)

// The key a backup becomes carries the backup's optional upstreamKeyId
// (docs/providers.md, "Batch reports"), on a clean rotation and on one whose insert
// was cut off and finished by recovery; a backup without one gives a key
// without one.
func TestRotatedInKeyCarriesUpstreamKeyID(t *testing.T) {
	ctx := context.Background()
	obs := rotation.WithObservation(history.Observation{Spend: 9.99, Threshold: 9.95})
	for _, tt := range []struct {
		name    string
		upID    bool
		cutKeys bool // cut the insert into the keys collection; recover
	}{
		{"clean", true, false},
		{"recovered", true, true},
		{"none", false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mdb := mongotest.New(t)
			seed(t, mdb.Database, 1, 2, 0)
			backups := mdb.Database.Collection(testPool.BackupsCollection)
			if tt.upID {
				var all []bson.M
				cur, err := backups.Find(ctx, bson.M{})
				if err != nil || cur.All(ctx, &all) != nil {
					t.Fatal(err)
				}
				for _, b := range all {
					if _, err := backups.UpdateByID(ctx, b["_id"], bson.M{"$set": bson.M{"upstreamKeyId": "hash-" + b["_id"].(string)}}); err != nil {
						t.Fatal(err)
					}
				}
			}
			db := mdb.Database
			if tt.cutKeys {
				// Find the insert's place among a clean rotation's commands.
				probe := mongotest.New(t)
				seed(t, probe.Database, 1, 2, 0)
				pp := probe.Proxy(t)
				pr := newRotator(t, probe.NewClient(t, options.Client().ApplyURI(pp.URI())).Database(probe.Name), rotation.Config{})
				pp.ResetCommands()
				if _, err := pr.Rotate(ctx, "key-000", "proactive_threshold_9.99", obs); err != nil {
					t.Fatal(err)
				}
				at := 0
				for i, c := range pp.Commands() {
					if strings.Contains(c, "insert") && strings.Contains(c, testPool.KeysCollection) {
						at = i + 1
						break
					}
				}
				if at == 0 {
					t.Fatalf("no insert into %s in %v", testPool.KeysCollection, pp.Commands())
				}
				proxy := mdb.Proxy(t)
				proxy.FailCommand(at, mongotest.Before)
				db = mdb.NewClient(t, options.Client().ApplyURI(proxy.URI()).SetTimeout(time.Minute)).Database(mdb.Name)
			}
			r := newRotator(t, db, rotation.Config{})
			res, err := r.Rotate(ctx, "key-000", "proactive_threshold_9.99", obs)
			if tt.cutKeys {
				if err == nil && res.Outcome == rotation.Rotated {
					t.Fatal("the cut insert did not cut the rotation")
				}
				if _, err := newRotator(t, mdb.Database, rotation.Config{Owner: "next-cycle"}).Recover(ctx); err != nil {
					t.Fatalf("recover: %v", err)
				}
			} else if err != nil || res.Outcome != rotation.Rotated {
				t.Fatalf("rotate: %v %v", res, err)
			}
			var k bson.M
			if err := mdb.Database.Collection(testPool.KeysCollection).FindOne(ctx, bson.M{"replacedKey": "key-000"}).Decode(&k); err != nil {
				t.Fatal(err)
			}
			var b bson.M
			if err := backups.FindOne(ctx, bson.M{"usedFor": "key-000"}).Decode(&b); err != nil {
				t.Fatal(err)
			}
			if k["upstreamKeyId"] != b["upstreamKeyId"] {
				t.Fatalf("new key %v has upstreamKeyId %v; its backup %v has %v", k["_id"], k["upstreamKeyId"], b["_id"], b["upstreamKeyId"])
			}
		})
	}
}
