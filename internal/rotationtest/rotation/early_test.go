package rotation_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation"
)

// answeredLive checks what a rotation answered early promises once it is
// finished: the answered key live with the old key's bindings, one history
// record, its backup used, the old key archived and gone.
func answeredLive(t *testing.T, db *mongo.Database, old, answered string, bindings int64) {
	t.Helper()
	if n := count(t, db, testPool.KeysCollection, bson.M{"_id": answered}); n != 1 {
		t.Errorf("answered key %s is not live", answered)
	}
	if n := count(t, db, testPool.BindingsCollection, bson.M{testPool.BindingKeyField: answered}); n != bindings {
		t.Errorf("%d bindings on %s, want %d", n, answered, bindings)
	}
	if n := count(t, db, testPool.HistoryCollection, bson.M{"keyId": old}); n != 1 {
		t.Errorf("%d history records of %s, want 1", n, old)
	}
	if n := count(t, db, testPool.BackupsCollection, bson.M{"_id": answered, "isUsed": true, "usedAt": bson.M{"$exists": true}}); n != 1 {
		t.Errorf("backup %s not marked used", answered)
	}
	if n := count(t, db, rotation.ArchiveCollection, bson.M{"sourceId": old, "undoneAt": bson.M{"$exists": false}}); n < 1 {
		t.Errorf("old key %s not archived", old)
	}
	if n := count(t, db, testPool.KeysCollection, bson.M{"_id": old}); n != 0 {
		t.Errorf("old key %s still live", old)
	}
}

func crashAfter(s rotation.Step) func(context.Context, string, rotation.Step) error {
	return func(_ context.Context, _ string, got rotation.Step) error {
		if got == s {
			return errCrash
		}
		return nil
	}
}

// The process dies at every step after the early answer: the answered key
// stays live meanwhile, and recovery (by a rotator that was not told about
// the legacy rotator) completes the rotation onto it.
func TestEarlyAnswerCrashAfterAnswer(t *testing.T) {
	ctx := context.Background()
	for _, k := range []rotation.Step{rotation.StepActivateKey, rotation.StepMoveBindings, rotation.StepArchive,
		rotation.StepDeleteOld, rotation.StepHistory, rotation.StepDone} {
		t.Run("crash after "+k.String(), func(t *testing.T) {
			db := mongotest.New(t).Database
			seed(t, db, 4, 3, 3)
			r := newRotator(t, db, rotation.Config{NoLegacyRotator: true, AfterStep: crashAfter(k)})
			res, err := r.Rotate(ctx, "key-002", "unauthorized")
			if err != nil || res.Outcome != rotation.Rotated {
				t.Fatalf("rotate: %+v, %v; want rotated, answered before the crash", res, err)
			}
			if err := r.Wait(ctx); err != nil {
				t.Fatal(err)
			}
			if n := count(t, db, testPool.KeysCollection, bson.M{"_id": res.NewKeyID}); n != 1 {
				t.Fatalf("answered key %s not live after the crash", res.NewKeyID)
			}
			other, err := newRotator(t, db, rotation.Config{}).Rotate(ctx, "key-002", "unauthorized")
			if err != nil || (other.Outcome != rotation.InProgress && other.Outcome != rotation.AlreadyRotated) {
				t.Fatalf("concurrent caller got %+v, %v", other, err)
			}
			rep, err := newRotator(t, db, rotation.Config{}).Recover(ctx)
			if err != nil || rep.Failed != 0 || rep.Dropped != 0 {
				t.Fatalf("recover: %+v, %v", rep, err)
			}
			answeredLive(t, db, "key-002", res.NewKeyID, 3)
			checkInvariants(t, db, 4)
		})
	}
}

// The old key's secret is replaced in place after the early answer: the
// rotation completes, both keys stay live (the pool one larger) and nothing
// is undone, in the owner's background or in a recoverer; verify and the
// next recovery pass leave it so. Without the option, the rotation undoes
// itself instead, as before.
func TestEarlyAnswerOldKeyRekeyedInPlace(t *testing.T) {
	ctx := context.Background()
	const rekeyed = "sk-live-rekeyed-in-place-0001"
	cases := []struct {
		after rotation.Step
		early bool
		crash bool // the owner dies right after the re-key; recovery finishes
	}{
		{after: rotation.StepActivateKey, early: true},
		{after: rotation.StepMoveBindings, early: true},
		{after: rotation.StepArchive, early: true},
		{after: rotation.StepArchive, early: true, crash: true},
		{after: rotation.StepMoveBindings, early: true, crash: true},
		{after: rotation.StepArchive, early: false},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("after %s early=%v crash=%v", tc.after, tc.early, tc.crash), func(t *testing.T) {
			db := mongotest.New(t).Database
			seed(t, db, 4, 3, 3)
			var once sync.Once
			r := newRotator(t, db, rotation.Config{NoLegacyRotator: tc.early, AfterStep: func(ctx context.Context, _ string, s rotation.Step) error {
				if s != tc.after {
					return nil
				}
				once.Do(func() {
					if _, err := db.Collection(testPool.KeysCollection).UpdateOne(ctx, bson.M{"_id": "key-002"},
						bson.M{"$set": bson.M{"apiKey": rekeyed}}); err != nil {
						t.Error(err)
					}
				})
				if tc.crash {
					return errCrash
				}
				return nil
			}})
			res, err := r.Rotate(ctx, "key-002", "unauthorized")
			if !tc.early {
				if err != nil || res.Outcome != rotation.AlreadyRotated {
					t.Fatalf("rotate without the option: %+v, %v; want the rotation undone", res, err)
				}
				if n := count(t, db, testPool.KeysCollection, bson.M{}); n != 4 {
					t.Errorf("pool size %d, want 4", n)
				}
				return
			}
			if err != nil || res.Outcome != rotation.Rotated {
				t.Fatalf("rotate: %+v, %v", res, err)
			}
			if err := r.Wait(ctx); err != nil {
				t.Fatal(err)
			}
			for range 2 { // recovery completes a crashed owner; a second pass changes nothing
				if rep, err := newRotator(t, db, rotation.Config{}).Recover(ctx); err != nil || rep.Failed != 0 || rep.Dropped != 0 {
					t.Fatalf("recover: %+v, %v", rep, err)
				}
			}
			if n := count(t, db, testPool.KeysCollection, bson.M{"_id": "key-002", "apiKey": rekeyed}); n != 1 {
				t.Errorf("the re-keyed key-002 is not live")
			}
			if n := count(t, db, testPool.KeysCollection, bson.M{"_id": res.NewKeyID}); n != 1 {
				t.Errorf("the answered key %s is not live", res.NewKeyID)
			}
			if n := count(t, db, testPool.KeysCollection, bson.M{}); n != 5 {
				t.Errorf("pool size %d, want 5 (both kept)", n)
			}
			if n := count(t, db, rotation.JournalCollection, bson.M{"state": "done"}); n != 1 {
				t.Errorf("%d rotations done, want 1", n)
			}
			if n := count(t, db, rotation.JournalCollection, bson.M{"state": "undone"}); n != 0 {
				t.Errorf("the rotation was undone")
			}
			if n := count(t, db, rotation.ArchiveCollection, bson.M{"undoneAt": bson.M{"$exists": true}}); n != 0 {
				t.Errorf("%d archived copies marked undone", n)
			}
			if n := count(t, db, testPool.HistoryCollection, bson.M{}); n != 1 {
				t.Errorf("%d history records, want 1", n)
			}
			if n := count(t, db, testPool.BackupsCollection, bson.M{"_id": res.NewKeyID, "isUsed": true}); n != 1 {
				t.Errorf("backup %s not marked used", res.NewKeyID)
			}
			if n := count(t, db, testPool.BindingsCollection, bson.M{testPool.BindingKeyField: bson.M{"$nin": bson.A{"key-000", "key-001", "key-002", "key-003", res.NewKeyID}}}); n != 0 {
				t.Errorf("%d bindings on no live key", n)
			}
			probs, err := newRotator(t, db, rotation.Config{}).Verify(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range probs {
				t.Errorf("verify: %s", p)
			}
		})
	}
}

// Many callers rotate one key, each with its own rotator answering early:
// exactly one rotation, one backup, and the answered key live.
func TestEarlyAnswerSameKeyRace(t *testing.T) {
	ctx := context.Background()
	db := mongotest.New(t).Database
	seed(t, db, 10, 5, 4)
	const callers = 50
	var wg sync.WaitGroup
	start := make(chan struct{})
	results := make(chan rotation.Result, callers)
	rotators := make([]*rotation.Rotator, callers)
	for i := range rotators {
		rotators[i] = newRotator(t, db, rotation.Config{Owner: fmt.Sprintf("g%d", i), NoLegacyRotator: true})
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			res, err := rotators[i].Rotate(ctx, "key-003", "unauthorized")
			if err != nil {
				t.Errorf("rotate: %v", err)
			}
			results <- res
		}()
	}
	close(start)
	wg.Wait()
	close(results)
	for _, r := range rotators {
		if err := r.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	got := map[rotation.Outcome]int{}
	var answered string
	for res := range results {
		got[res.Outcome]++
		if res.Outcome == rotation.Rotated {
			answered = res.NewKeyID
		}
	}
	if got[rotation.Rotated] != 1 || got[rotation.Rotated]+got[rotation.AlreadyRotated]+got[rotation.InProgress] != callers {
		t.Fatalf("outcomes %v, want exactly one rotated", got)
	}
	answeredLive(t, db, "key-003", answered, 4)
	checkInvariants(t, db, 10)
	if n := count(t, db, testPool.BackupsCollection, bson.M{"isUsed": true}); n != 1 {
		t.Errorf("%d backups used, want 1", n)
	}
}

// Close stops a background completion still running (here: never let to
// start, the context already ended); recovery completes it.
func TestEarlyAnswerCloseThenRecover(t *testing.T) {
	ctx := context.Background()
	db := mongotest.New(t).Database
	seed(t, db, 4, 3, 3)
	release := make(chan struct{})
	r := newRotator(t, db, rotation.Config{NoLegacyRotator: true, AfterStep: func(ctx context.Context, _ string, s rotation.Step) error {
		if s == rotation.StepActivateKey {
			select { // the background holds here until Close cuts it
			case <-ctx.Done():
				return ctx.Err()
			case <-release:
			}
		}
		return nil
	}})
	res, err := r.Rotate(ctx, "key-001", "unauthorized")
	if err != nil || res.Outcome != rotation.Rotated {
		t.Fatalf("rotate: %+v, %v", res, err)
	}
	ended, cancel := context.WithCancel(ctx)
	cancel()
	if err := r.Close(ended); !errors.Is(err, context.Canceled) {
		t.Fatalf("close: %v, want the background cut", err)
	}
	close(release)
	if n := count(t, db, rotation.JournalCollection, bson.M{"state": "claimed"}); n != 1 {
		t.Fatalf("%d unfinished rotations after Close, want 1", n)
	}
	if _, err := newRotator(t, db, rotation.Config{}).Recover(ctx); err != nil {
		t.Fatal(err)
	}
	answeredLive(t, db, "key-001", res.NewKeyID, 3)
	checkInvariants(t, db, 4)
	// After Close, Rotate still works, answering once the rotation is done.
	res, err = r.Rotate(ctx, "key-000", "unauthorized")
	if err != nil || res.Outcome != rotation.Rotated {
		t.Fatalf("rotate after close: %+v, %v", res, err)
	}
	if n := count(t, db, rotation.JournalCollection, bson.M{"oldKeyId": "key-000", "state": "done"}); n != 1 {
		t.Errorf("rotation after Close answered before it was done")
	}
}
