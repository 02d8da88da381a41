package rotation_test

import (
	"context"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation"
)

// A replacement made outside our journal and bound nowhere is named even
// when the key it replaced was bound nowhere too. The review asked for
// silence here; it is named by design: the proxy's inline rotator rotates
// only keys it serves, and it serves only keys with active bindings, so
// this state comes from lost bindings or from a rotator of an older
// deployment, and either way the key is never served (docs/design.md, "Rotation
// guarantees": bindings_lost).
func TestAdv18b_ForeignRotationOfUnboundKeyIsNamed(t *testing.T) {
	ctx := context.Background()
	db := mongotest.New(t).Database
	seed(t, db, 2, 1, 0)
	r := newRotator(t, db, rotation.Config{})
	legacyRotate(t, db, "key-000", nil)
	probs, err := r.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !hasKind(probs, "bindings_lost") {
		t.Fatalf("foreign replacement bound nowhere not named: %v", probs)
	}
}

// Our rotation brought a key in bound nowhere (its old key was bound
// nowhere: not named); the proxy's rotator then replaced it. The proxy
// does not serve, so does not rotate, a key bound nowhere: its
// replacement bound nowhere is named, as any foreign one (see above).
func TestAdv18b_ProxyRotatesOurUnboundKeyOnwardIsNamed(t *testing.T) {
	ctx := context.Background()
	db := mongotest.New(t).Database
	seed(t, db, 2, 2, 0)
	r := newRotator(t, db, rotation.Config{})
	res, err := r.Rotate(ctx, "key-000", "manual")
	if err != nil || res.Outcome != rotation.Rotated {
		t.Fatalf("rotate: %+v %v", res, err)
	}
	probs, err := r.Verify(ctx)
	if err != nil || hasKind(probs, "bindings_lost") {
		t.Fatalf("after ours: %v %v", probs, err)
	}
	legacyRotate(t, db, res.NewKeyID, nil)
	probs, err = r.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !hasKind(probs, "bindings_lost") {
		t.Fatalf("foreign replacement of our key, bound nowhere, not named: %v", probs)
	}
}

// An undone rotation of ours gave backup-000 back without bringing it in;
// the proxy's rotator then took that same backup for key-000 and lost the
// bindings. "ours" counts the undone entry's newKeyId, so the loss is missed.
func TestAdv18b_UndoneEntryHidesLostBindings(t *testing.T) {
	ctx := context.Background()
	db := mongotest.New(t).Database
	seed(t, db, 2, 1, 2)
	if _, err := db.Collection(rotation.JournalCollection).InsertOne(ctx, bson.M{
		"_id": "rot-undone", "pool": testPool.Name, "oldKeyId": "key-000",
		"backupId": "undone/rot-undone", "undoneBackupId": "backup-000",
		"newKeyId": "backup-000", "state": "undone", "reason": "manual", "owner": "other",
	}); err != nil {
		t.Fatal(err)
	}
	r := newRotator(t, db, rotation.Config{})
	legacyRotate(t, db, "key-000", nil)
	if _, err := db.Collection(testPool.BindingsCollection).DeleteMany(ctx, bson.M{testPool.BindingKeyField: "backup-000"}); err != nil {
		t.Fatal(err)
	}
	probs, err := r.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !hasKind(probs, "bindings_lost") {
		t.Fatalf("foreign replacement bound nowhere not named (undone entry of ours counted as bringing it in): %v", probs)
	}
}

// The proxy's re-create path stopped after re-creating the binding but
// before activating it: the replacement's only binding is isActive:false,
// so the proxy never serves it — the state bindings_lost exists to name.
func TestAdv18b_OnlyInactiveBindingNamed(t *testing.T) {
	ctx := context.Background()
	db := mongotest.New(t).Database
	seed(t, db, 2, 1, 1)
	r := newRotator(t, db, rotation.Config{})
	legacyRotate(t, db, "key-000", nil)
	if _, err := db.Collection(testPool.BindingsCollection).UpdateMany(ctx, bson.M{testPool.BindingKeyField: "backup-000"},
		bson.M{"$set": bson.M{"isActive": false}}); err != nil {
		t.Fatal(err)
	}
	probs, err := r.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !hasKind(probs, "bindings_lost") {
		t.Fatalf("replacement whose only binding is inactive not named: %v", probs)
	}
}

// Replacement chain: the proxy's rotator lost key-000's bindings on its way
// to backup-000 (named), then our poller rotated backup-000 on to
// backup-001. Ours moves no bindings because there are none, so backup-001
// is still served by no proxy — but the problem vanishes from verify.
func TestAdv18b_OurRotationAfterLostBindingsHidesThem(t *testing.T) {
	ctx := context.Background()
	db := mongotest.New(t).Database
	seed(t, db, 2, 2, 2)
	r := newRotator(t, db, rotation.Config{})
	legacyRotate(t, db, "key-000", nil)
	if _, err := db.Collection(testPool.BindingsCollection).DeleteMany(ctx, bson.M{testPool.BindingKeyField: "backup-000"}); err != nil {
		t.Fatal(err)
	}
	probs, err := r.Verify(ctx)
	if err != nil || !hasKind(probs, "bindings_lost") {
		t.Fatalf("precondition: lost bindings named: %v %v", probs, err)
	}
	res, err := r.Rotate(ctx, "backup-000", "spend")
	if err != nil || res.Outcome != rotation.Rotated {
		t.Fatalf("rotate: %+v %v", res, err)
	}
	if n := count(t, db, testPool.BindingsCollection, bson.M{testPool.BindingKeyField: res.NewKeyID}); n != 0 {
		t.Fatalf("setup: new key has %d bindings", n)
	}
	probs, err = r.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !hasKind(probs, "bindings_lost") {
		t.Fatalf("key %s still bound nowhere after the chain, not named: %v", res.NewKeyID, probs)
	}
}
