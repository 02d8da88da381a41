package rotation_test

import (
	"context"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation"
)

// The legacy rotator rotates key-001 away under a rotation of ours held
// after its insert: that rotation will undo itself (its new key deleted,
// its backup given back) once it resumes. A caller asking meanwhile must
// not be told to swap to the key the undo removes: the proxy would retry
// with a key that never goes live.
func TestAdv22InProgressDoesNotNameAKeyAboutToBeUndone(t *testing.T) {
	for _, at := range []rotation.Step{rotation.StepInsertKey, rotation.StepMarkBackup, rotation.StepActivateKey, rotation.StepMoveBindings} {
		t.Run("held after "+at.String(), func(t *testing.T) {
			db := mongotest.New(t).Database
			seed(t, db, 3, 4, 2)
			release, done := holdOwnerAfter(t, db, at)
			defer release()
			legacyRotate(t, db, "key-001", nil)
			res, err := newRotator(t, db, rotation.Config{Owner: "other"}).Rotate(context.Background(), "key-001", "unauthorized")
			if err != nil {
				t.Fatalf("concurrent caller: %v", err)
			}
			release()
			owner := <-done
			t.Logf("caller: %+v; owner: %+v", res, owner)
			if res.NewKeyID != "" && count(t, db, testPool.KeysCollection, bson.M{"_id": res.NewKeyID}) != 1 {
				t.Errorf("caller told to swap to %s (%s), which the rotation's undo removed from the pool", res.NewKeyID, res.Outcome)
			}
		})
	}
}

// key-000 was refused for LiteLLM user u-1 (its user recorded), then its
// secret was replaced in place by a key of another owner. The record
// describes the secret gone, not the key now live: key-001's refusal for
// u-1 shares nothing with key-000 and must rotate, not be held for good.
func TestAdv22BudgetUserOfAReplacedSecretIsNotShared(t *testing.T) {
	ctx := context.Background()
	db := mongotest.New(t).Database
	seed(t, db, 3, 3, 1)
	r := newRotator(t, db, rotation.Config{})
	if err := r.RecordBudgetUser(ctx, "key-000", "sk-live-key-secret-000000", "u-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Collection(testPool.KeysCollection).UpdateOne(ctx, bson.M{"_id": "key-000"},
		bson.M{"$set": bson.M{"apiKey": "sk-live-key-secret-other-owner"}}); err != nil {
		t.Fatal(err)
	}
	res, err := r.Rotate(ctx, "key-001", "budget_exceeded", rotation.WithBudgetUser("u-1"))
	if err != nil || res.Outcome != rotation.Rotated {
		t.Fatalf("key-001: %+v, %v; want rotated (key-000's record is of a secret no longer live)", res, err)
	}
}

// key-001's secret is replaced in place under a rotation of ours held after
// its insert: that rotation retires nothing and will undo itself. A caller
// holding the key document as it read it before (the proxy passes its own
// copy) must not be told to swap to the key the undo removes.
func TestAdv22InProgressDoesNotNameAKeyOfARekeyedOldKey(t *testing.T) {
	ctx := context.Background()
	db := mongotest.New(t).Database
	seed(t, db, 3, 4, 2)
	doc, err := db.Collection(testPool.KeysCollection).FindOne(ctx, bson.M{"_id": "key-001"}).Raw()
	if err != nil {
		t.Fatal(err)
	}
	release, done := holdOwnerAfter(t, db, rotation.StepInsertKey)
	defer release()
	if _, err := db.Collection(testPool.KeysCollection).UpdateOne(ctx, bson.M{"_id": "key-001"},
		bson.M{"$set": bson.M{"apiKey": "sk-live-key-secret-rekeyed"}}); err != nil {
		t.Fatal(err)
	}
	res, err := newRotator(t, db, rotation.Config{Owner: "other"}).Rotate(ctx, "key-001", "unauthorized", rotation.WithKeyDocument(doc))
	if err != nil {
		t.Fatalf("concurrent caller: %v", err)
	}
	release()
	owner := <-done
	t.Logf("caller: %+v; owner: %+v", res, owner)
	if res.NewKeyID != "" && count(t, db, testPool.KeysCollection, bson.M{"_id": res.NewKeyID}) != 1 {
		t.Errorf("caller told to swap to %s (%s), which the rotation's undo removed from the pool", res.NewKeyID, res.Outcome)
	}
}
