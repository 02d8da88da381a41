package mongoidx_test

import (
	"context"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation/mongoidx"
)

// Adversarial (issue 13 case 7, "list existing indexes, create missing"):
// indexes are matched by name only. An index with the right name but
// without the unique option — recreated by hand, restored from a dump with
// its options lost, made by a tool — counts as present, and Ensure returns
// success. The rotator's correctness rests only on unique-index inserts
// (the journal's pool_1_backupId_1_unique: one backup per rotation), so
// two rotations can then claim the same backup, and start-up says nothing.
// (Creating it regardless, MongoDB would refuse the conflicting spec.)
// Ensure must fail (or repair it), never report a non-unique index as the
// unique one it needs.
func TestAdv13_NonUniqueIndexWithTheRightNameCountsAsUnique(t *testing.T) {
	ctx := context.Background()
	coll := mongotest.New(t).Database.Collection("journal")
	keys := bson.D{{Key: "pool", Value: 1}, {Key: "backupId", Value: 1}}
	if _, err := coll.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: keys, Options: options.Index().SetName("pool_1_backupId_1_unique")}); err != nil {
		t.Fatal(err)
	}
	err := mongoidx.Ensure(ctx, coll, mongoidx.Index{Name: "pool_1_backupId_1_unique", Keys: keys, Unique: true})
	if err != nil {
		return // refused loudly: fine
	}
	_, err1 := coll.InsertOne(ctx, bson.M{"pool": "p", "backupId": "b1", "oldKeyId": "k1"})
	_, err2 := coll.InsertOne(ctx, bson.M{"pool": "p", "backupId": "b1", "oldKeyId": "k2"})
	if err1 == nil && err2 == nil {
		t.Fatal("Ensure reported the unique index present, yet two journal entries claim backup b1")
	}
}
