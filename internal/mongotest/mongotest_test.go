package mongotest_test

import (
	"context"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/internal/mongotest"
)

// The rotator relies on exactly these two behaviours of the store.
func TestStoreHonoursUniqueIndexAndDeleteCount(t *testing.T) {
	ctx := context.Background()
	db := mongotest.New(t)
	c := db.Database.Collection("claims")
	if _, err := c.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: bson.D{{Key: "backupId", Value: 1}}, Options: options.Index().SetUnique(true)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.InsertOne(ctx, bson.M{"_id": "a", "backupId": "b1"}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		doc  bson.M
	}{
		{"duplicate _id", bson.M{"_id": "a", "backupId": "b2"}},
		{"duplicate unique field", bson.M{"_id": "z", "backupId": "b1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.InsertOne(ctx, tt.doc)
			if !mongo.IsDuplicateKeyError(err) {
				t.Fatalf("want duplicate key error, got %v", err)
			}
		})
	}
	for i, want := range []int64{1, 0} {
		res, err := c.DeleteOne(ctx, bson.M{"_id": "a"})
		if err != nil {
			t.Fatal(err)
		}
		if res.DeletedCount != want {
			t.Fatalf("delete %d: DeletedCount %d, want %d", i, res.DeletedCount, want)
		}
	}
}

func TestDatabasesAreIsolated(t *testing.T) {
	a, b := mongotest.New(t), mongotest.New(t)
	if a.Name == b.Name {
		t.Fatalf("two tests share database %q", a.Name)
	}
}
