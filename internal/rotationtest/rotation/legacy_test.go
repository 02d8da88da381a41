package rotation_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation"
)

// legacySteps is how many steps legacyRotate has.
const legacySteps = 6

// legacyRotate is a test double of the serving proxy's own inline rotation,
// written from its description (docs/proxy.md, "Running next to the proxy"): read the old key,
// claim a backup with findOneAndUpdate({isUsed: false}), archive and delete
// the old key, insert the new one, re-point the bindings. Nothing in it
// decides a race. between runs after each step (1-based).
func legacyRotate(t *testing.T, db *mongo.Database, keyID string, between func(step int)) {
	t.Helper()
	ctx := context.Background()
	p := testPool
	step := func(n int) {
		if between != nil {
			between(n)
		}
	}
	old, err := db.Collection(p.KeysCollection).FindOne(ctx, bson.M{"_id": keyID}).Raw()
	if err != nil {
		return // nothing to rotate
	}
	step(1)
	var backup struct {
		ID     string `bson:"_id"`
		APIKey string `bson:"apiKey"`
	}
	now := time.Now().UTC()
	err = db.Collection(p.BackupsCollection).FindOneAndUpdate(ctx, bson.M{"isUsed": false},
		bson.M{"$set": bson.M{"isUsed": true, "activated": true, "usedFor": keyID, "usedAt": now}},
		options.FindOneAndUpdate().SetSort(bson.D{{Key: "createdAt", Value: 1}})).Decode(&backup)
	if err != nil {
		return // no backup
	}
	step(2)
	if _, err := db.Collection(rotation.ArchiveCollection).InsertOne(ctx, bson.M{
		"sourceCollection": p.KeysCollection, "sourceId": keyID, "reason": "legacy", "document": old,
	}); err != nil {
		t.Errorf("legacy archive: %v", err)
		return
	}
	step(3)
	if _, err := db.Collection(p.KeysCollection).DeleteOne(ctx, bson.M{"_id": keyID}); err != nil {
		t.Errorf("legacy delete: %v", err)
		return
	}
	step(4)
	if _, err := db.Collection(p.KeysCollection).InsertOne(ctx, bson.M{
		"_id": backup.ID, "apiKey": backup.APIKey, "status": "healthy", "tokensUsed": int64(0),
		"requestsCount": int64(0), "createdAt": now, "replacedKey": keyID,
	}); err != nil {
		t.Logf("legacy insert failed (its own bug: it stops here): %v", err)
		return
	}
	step(5)
	if _, err := db.Collection(p.BindingsCollection).UpdateMany(ctx, bson.M{p.BindingKeyField: keyID},
		bson.M{"$set": bson.M{p.BindingKeyField: backup.ID}}); err != nil {
		t.Errorf("legacy re-point: %v", err)
	}
	step(6)
}

// coexistInvariants checks what must hold whatever the interleaving of ours
// and the legacy rotation of key-001: the pool keeps its size, key-001 has
// exactly one live replacement carrying its bindings, every used backup is
// a live key, and verify finds nothing.
func coexistInvariants(t *testing.T, db *mongo.Database) {
	t.Helper()
	ctx := context.Background()
	if n := count(t, db, testPool.KeysCollection, bson.M{}); n != 3 {
		t.Errorf("pool size %d, want 3", n)
	}
	if n := count(t, db, testPool.KeysCollection, bson.M{"_id": "key-001"}); n != 0 {
		t.Error("key-001 still live")
	}
	var reps []bson.M
	cur, err := db.Collection(testPool.KeysCollection).Find(ctx, bson.M{"replacedKey": "key-001"})
	if err != nil {
		t.Fatal(err)
	}
	if err := cur.All(ctx, &reps); err != nil {
		t.Fatal(err)
	}
	if len(reps) != 1 {
		t.Fatalf("%d live replacements of key-001, want 1: %v", len(reps), reps)
	}
	newID := reps[0]["_id"]
	if n := count(t, db, testPool.BindingsCollection, bson.M{testPool.BindingKeyField: newID}); n != 2 {
		t.Errorf("%d bindings on the replacement %v, want key-001's 2", n, newID)
	}
	if n := count(t, db, testPool.BindingsCollection, bson.M{}); n != 6 {
		t.Errorf("%d bindings, want 6", n)
	}
	bc, err := db.Collection(testPool.BackupsCollection).Find(ctx, bson.M{"isUsed": true})
	if err != nil {
		t.Fatal(err)
	}
	used := 0
	for bc.Next(ctx) {
		used++
		id := bc.Current.Lookup("_id").StringValue()
		if count(t, db, testPool.KeysCollection, bson.M{"_id": id}) == 0 {
			t.Errorf("used backup %s is not a live key", id)
		}
	}
	if used != 1 {
		t.Errorf("%d backups used, want 1", used)
	}
	probs, err := newRotator(t, db, rotation.Config{}).Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range probs {
		t.Errorf("verify: %s", p)
	}
}

// The proxy's own rotator runs whole at every step of ours, and ours runs
// whole at every step of the proxy's: pool size, bindings and backups hold
// in every interleaving (docs/design.md "Rotation guarantees").
func TestCoexistWithLegacyRotator(t *testing.T) {
	ctx := context.Background()
	for _, k := range rotation.Steps {
		t.Run("legacy after our "+k.String(), func(t *testing.T) {
			db := mongotest.New(t).Database
			seed(t, db, 3, 4, 2)
			ran := false
			r := newRotator(t, db, rotation.Config{AfterStep: func(_ context.Context, _ string, s rotation.Step) error {
				if s == k && !ran {
					ran = true
					legacyRotate(t, db, "key-001", nil)
				}
				return nil
			}})
			res, err := r.Rotate(ctx, "key-001", "manual")
			t.Logf("ours: %+v, %v", res, err)
			if _, err := newRotator(t, db, rotation.Config{}).Recover(ctx); err != nil {
				t.Fatalf("recover: %v", err)
			}
			coexistInvariants(t, db)
		})
	}
	for j := 1; j <= legacySteps; j++ {
		t.Run(fmt.Sprintf("ours after legacy step %d", j), func(t *testing.T) {
			db := mongotest.New(t).Database
			seed(t, db, 3, 4, 2)
			r := newRotator(t, db, rotation.Config{})
			legacyRotate(t, db, "key-001", func(step int) {
				if step == j {
					res, err := r.Rotate(ctx, "key-001", "manual")
					t.Logf("ours: %+v, %v", res, err)
				}
			})
			if _, err := newRotator(t, db, rotation.Config{}).Recover(ctx); err != nil {
				t.Fatalf("recover: %v", err)
			}
			coexistInvariants(t, db)
		})
	}
}

// Our claim hides the backup from a legacy findOneAndUpdate({isUsed:false})
// claim, and the proxy's clean-up of used backups (isUsed and usedAt older
// than 6 h) cannot delete it before its key is live.
func TestClaimedBackupHiddenFromLegacyAndCleanup(t *testing.T) {
	ctx := context.Background()
	db := mongotest.New(t).Database
	seed(t, db, 2, 1, 1)
	crashAfterClaim := newRotator(t, db, rotation.Config{AfterStep: func(_ context.Context, _ string, s rotation.Step) error {
		if s == rotation.StepClaim {
			return errCrash
		}
		return nil
	}})
	if _, err := crashAfterClaim.Rotate(ctx, "key-001", "manual"); err == nil {
		t.Fatal("want the simulated crash")
	}
	backups := db.Collection(testPool.BackupsCollection)
	if err := backups.FindOneAndUpdate(ctx, bson.M{"isUsed": false}, bson.M{"$set": bson.M{"isUsed": true}}).Err(); err != mongo.ErrNoDocuments {
		t.Errorf("a legacy claim found our claimed backup: %v", err)
	}
	// The proxy's clean-up, run as if every used backup were old enough.
	res, err := backups.DeleteMany(ctx, bson.M{"isUsed": true, "usedAt": bson.M{"$lt": time.Now().Add(100 * 365 * 24 * time.Hour)}})
	if err != nil {
		t.Fatal(err)
	}
	if res.DeletedCount != 0 {
		t.Errorf("the proxy's clean-up deleted %d claimed backups before their key was live", res.DeletedCount)
	}
	if _, err := newRotator(t, db, rotation.Config{}).Recover(ctx); err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, db, 2)
}

// Verify names the states a foreign rotator racing ours leaves.
func TestVerifyNamesForeignStates(t *testing.T) {
	ctx := context.Background()
	db := mongotest.New(t).Database
	seed(t, db, 3, 3, 1)
	keys, backups := db.Collection(testPool.KeysCollection), db.Collection(testPool.BackupsCollection)
	now := time.Now().UTC()
	// key-000 rotated twice: two live keys replace it.
	for _, id := range []string{"backup-000", "backup-001"} {
		if _, err := backups.UpdateOne(ctx, bson.M{"_id": id}, bson.M{"$set": bson.M{"isUsed": true, "activated": true, "usedFor": "key-000", "usedAt": now}}); err != nil {
			t.Fatal(err)
		}
		if _, err := keys.InsertOne(ctx, bson.M{"_id": id, "apiKey": "sk-live-backup-secret-00000" + id[len(id)-1:], "replacedKey": "key-000"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := keys.DeleteOne(ctx, bson.M{"_id": "key-000"}); err != nil {
		t.Fatal(err)
	}
	// backup-002 used for key-001, but no key came in.
	if _, err := backups.UpdateOne(ctx, bson.M{"_id": "backup-002"}, bson.M{"$set": bson.M{"isUsed": true, "activated": true, "usedFor": "key-001", "usedAt": now}}); err != nil {
		t.Fatal(err)
	}
	probs, err := newRotator(t, db, rotation.Config{}).Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"two_replacements", "backup_used_by_no_key", "orphan_binding"} {
		if !hasKind(probs, kind) {
			t.Errorf("verify did not name %s: %v", kind, probs)
		}
	}
}

// The proxy's own rotator may delete the old key's bindings instead of
// re-pointing them (its "re-create" path) and stop before re-creating them:
// its replacement is then bound nowhere and never served. verify names it
// bindings_lost; a foreign replacement that kept its bindings, and a key of
// ours whose old key had no binding, are not named.
func TestVerifyNamesBindingsLost(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name     string
		bindings int
		ours     bool
		drop     bool
		want     bool
	}{
		{name: "foreign rotation lost the bindings", bindings: 2, drop: true, want: true},
		{name: "foreign rotation re-pointed them", bindings: 2},
		{name: "our rotation of a key bound nowhere", bindings: 0, ours: true},
		{name: "our rotation of a bound key", bindings: 1, ours: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := mongotest.New(t).Database
			seed(t, db, 2, 1, tt.bindings)
			r := newRotator(t, db, rotation.Config{})
			if tt.ours {
				if res, err := r.Rotate(ctx, "key-000", "manual"); err != nil || res.Outcome != rotation.Rotated {
					t.Fatalf("rotate: %+v %v", res, err)
				}
			} else {
				legacyRotate(t, db, "key-000", nil)
			}
			if tt.drop {
				if _, err := db.Collection(testPool.BindingsCollection).DeleteMany(ctx, bson.M{testPool.BindingKeyField: "backup-000"}); err != nil {
					t.Fatal(err)
				}
			}
			probs, err := r.Verify(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got := hasKind(probs, "bindings_lost"); got != tt.want {
				t.Fatalf("bindings_lost named: %v, want %v: %v", got, tt.want, probs)
			}
		})
	}
}
