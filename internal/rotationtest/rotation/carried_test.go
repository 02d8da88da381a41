package rotation_test

import (
	"context"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation"
)

// A backup's spendAccount (the upstream account it belongs to) is carried
// onto the key it becomes; a backup without one gives a key without one.
// Before the fix the rotated-in key never had it, and a pool-level account
// label claimed it for the old key's account.
func TestRotateCarriesBackupSpendAccount(t *testing.T) {
	ctx := context.Background()
	db := mongotest.New(t).Database
	seed(t, db, 2, 2, 0)
	if _, err := db.Collection(testPool.BackupsCollection).UpdateOne(ctx, bson.M{"_id": "backup-000"},
		bson.M{"$set": bson.M{"spendAccount": "other"}}); err != nil {
		t.Fatal(err)
	}
	r := newRotator(t, db, rotation.Config{})
	for _, tc := range []struct{ old, newID, want string }{{"key-000", "backup-000", "other"}, {"key-001", "backup-001", ""}} {
		res, err := r.Rotate(ctx, tc.old, "test")
		if err != nil || res.Outcome != rotation.Rotated || res.NewKeyID != tc.newID {
			t.Fatalf("rotate %s: %+v %v", tc.old, res, err)
		}
		var nk bson.M
		if err := db.Collection(testPool.KeysCollection).FindOne(ctx, bson.M{"_id": tc.newID}).Decode(&nk); err != nil {
			t.Fatal(err)
		}
		got, _ := nk["spendAccount"].(string)
		if _, has := nk["spendAccount"]; got != tc.want || (tc.want == "" && has) {
			t.Fatalf("%s: spendAccount %v, want %q", tc.newID, nk["spendAccount"], tc.want)
		}
	}
}
