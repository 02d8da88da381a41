package rotation_test

import (
	"context"
	"errors"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation"
)

// journalNewKey is the new key the journal names for a rotation of old.
func journalNewKey(t testing.TB, db *mongo.Database, old string) string {
	t.Helper()
	var e struct {
		NewKeyID string `bson:"newKeyId"`
	}
	if err := db.Collection(rotation.JournalCollection).FindOne(context.Background(), bson.M{"oldKeyId": old}).Decode(&e); err != nil {
		t.Fatalf("journal of %s: %v", old, err)
	}
	return e.NewKeyID
}

// HoldOwnerAfter runs key-001's rotation as its owner and holds it right
// after step at, until the returned release is called; Rotate's answer
// then arrives on done.
func holdOwnerAfter(t *testing.T, db *mongo.Database, at rotation.Step) (release func(), done <-chan rotation.Result) {
	t.Helper()
	arrived, resume := make(chan struct{}), make(chan struct{})
	owner := newRotator(t, db, rotation.Config{Owner: "owner", AfterStep: func(ctx context.Context, _ string, s rotation.Step) error {
		if s != at {
			return nil
		}
		close(arrived)
		select {
		case <-resume:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}})
	out := make(chan rotation.Result, 1)
	go func() {
		res, err := owner.Rotate(context.Background(), "key-001", "budget_exceeded")
		if err != nil {
			t.Errorf("owner: %v", err)
		}
		out <- res
	}()
	<-arrived
	var once bool
	return func() {
		if !once {
			once = true
			close(resume)
		}
	}, out
}

// A caller that finds key-001's rotation under way learns its new key as
// soon as the key is in the pool — the journal names it and the key is
// there — so a proxy can retry with it at once instead of serving one key
// short until its next reload. Before the insert the key is not yet
// servable: in_progress names none.
func TestInProgressNamesTheNewKey(t *testing.T) {
	cases := []struct {
		at    rotation.Step
		named bool
	}{
		{rotation.StepClaim, false},
		{rotation.StepInsertKey, true},
		{rotation.StepMarkBackup, true},
		{rotation.StepActivateKey, true},
		{rotation.StepMoveBindings, true},
		{rotation.StepArchive, true},
		{rotation.StepDeleteOld, true}, // the old key is gone: read from the journal alone
		{rotation.StepHistory, true},
	}
	for _, c := range cases {
		t.Run("held after "+c.at.String(), func(t *testing.T) {
			db := mongotest.New(t).Database
			seed(t, db, 3, 3, 2)
			release, done := holdOwnerAfter(t, db, c.at)
			defer release()
			newKey := journalNewKey(t, db, "key-001")
			res, err := newRotator(t, db, rotation.Config{Owner: "other"}).Rotate(context.Background(), "key-001", "unauthorized")
			if err != nil || res.Outcome != rotation.InProgress {
				t.Fatalf("concurrent caller: %+v, %v; want in_progress", res, err)
			}
			want := ""
			if c.named {
				want = newKey
			}
			if res.NewKeyID != want {
				t.Errorf("in_progress names new key %q, want %q (journal: %s)", res.NewKeyID, want, newKey)
			}
			if res.NewKeyID != "" && count(t, db, testPool.KeysCollection, bson.M{"_id": res.NewKeyID}) != 1 {
				t.Errorf("in_progress names %s, which is not in the pool", res.NewKeyID)
			}
			release()
			if got := <-done; got.Outcome != rotation.Rotated || got.NewKeyID != newKey {
				t.Errorf("owner: %+v, want rotated to %s", got, newKey)
			}
		})
	}
}

// The owner gives up with its bindings move held in the network (a stalled
// replica): the journal names the new key, which is in the pool, and every
// caller until recovery completes the rotation learns it.
func TestInProgressOfAnAbandonedRotationNamesTheNewKey(t *testing.T) {
	mdb := mongotest.New(t)
	seed(t, mdb.Database, 3, 3, 2)
	step := firstStep(t, "update "+testPool.BindingsCollection)
	held := rotateAbandonedAt(t, mdb, step)
	defer func() {
		if _, err := held.Deliver(context.Background()); err != nil && !errors.Is(err, context.Canceled) {
			t.Logf("held command: %v", err)
		}
	}()
	newKey := journalNewKey(t, mdb.Database, "key-001")
	res, err := newRotator(t, mdb.Database, rotation.Config{Owner: "q"}).Rotate(context.Background(), "key-001", "unauthorized")
	if err != nil || res.Outcome != rotation.InProgress || res.NewKeyID != newKey {
		t.Fatalf("caller after the owner gave up: %+v, %v; want in_progress with %s", res, err, newKey)
	}
}
