package rotation_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation"
)

// Preview answers what Rotate then answers, and writes nothing.
func TestPreviewAnswersAsRotate(t *testing.T) {
	bg := context.Background()
	rotate := func(t *testing.T, db *mongo.Database, key string) rotation.Result {
		t.Helper()
		res, err := newRotator(t, db, rotation.Config{}).Rotate(bg, key, "manual")
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	for _, tt := range []struct {
		name    string
		backups int
		prepare func(t *testing.T, db *mongo.Database)
		key     string
		want    rotation.Outcome
	}{
		{"would rotate", 2, nil, "key-001", rotation.Rotated},
		{"not found", 2, nil, "nope", rotation.NotFound},
		{"no backup", 0, nil, "key-001", rotation.NoBackup},
		{"malformed backups only", 0, func(t *testing.T, db *mongo.Database) {
			if _, err := db.Collection(testPool.BackupsCollection).InsertMany(bg, []any{
				bson.M{"_id": 7, "apiKey": "sk-live-malformed-id-0000", "isUsed": false},
				bson.M{"_id": "no-secret", "isUsed": false},
			}); err != nil {
				t.Fatal(err)
			}
		}, "key-001", rotation.NoBackup},
		{"in progress", 2, crashAfterClaim, "key-001", rotation.InProgress},
		{"already rotated", 2, func(t *testing.T, db *mongo.Database) { rotate(t, db, "key-001") }, "key-001", rotation.AlreadyRotated},
		{"put back by hand", 2, func(t *testing.T, db *mongo.Database) {
			rotate(t, db, "key-001")
			var arch struct {
				Document bson.Raw `bson:"document"`
			}
			if err := db.Collection(rotation.ArchiveCollection).FindOne(bg, bson.M{"sourceId": "key-001"}).Decode(&arch); err != nil {
				t.Fatal(err)
			}
			if _, err := db.Collection(testPool.KeysCollection).InsertOne(bg, arch.Document); err != nil {
				t.Fatal(err)
			}
		}, "key-001", rotation.Rotated},
	} {
		t.Run(tt.name, func(t *testing.T) {
			db := mongotest.New(t).Database
			seed(t, db, 3, tt.backups, 1)
			if tt.prepare != nil {
				tt.prepare(t, db)
			}
			before := dump(t, db)
			got, err := newRotator(t, db, rotation.Config{Owner: "preview"}).Preview(bg, tt.key)
			if err != nil {
				t.Fatal(err)
			}
			if after := dump(t, db); after != before {
				t.Fatalf("Preview wrote:\nbefore %s\nafter  %s", before, after)
			}
			if got.Outcome != tt.want {
				t.Errorf("Preview = %+v, want %s", got, tt.want)
			}
			real, err := newRotator(t, db, rotation.Config{}).Rotate(bg, tt.key, "manual")
			if err != nil {
				t.Fatal(err)
			}
			if real.Outcome != got.Outcome || real.RotationID != got.RotationID || real.NewKeyID != got.NewKeyID {
				t.Errorf("Preview = %+v, Rotate = %+v", got, real)
			}
		})
	}
}

// dump is every collection of db with its documents, in _id order.
func dump(t *testing.T, db *mongo.Database) string {
	t.Helper()
	ctx := context.Background()
	names, err := db.ListCollectionNames(ctx, bson.M{})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		cur, err := db.Collection(n).Find(ctx, bson.M{})
		if err != nil {
			t.Fatal(err)
		}
		var docs []bson.Raw
		if err := cur.All(ctx, &docs); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s: %v; ", n, docs)
	}
	return b.String()
}
