package rotation_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation"
	"github.com/spendchecker/spendchecker/rotation/secret"
)

// newKeyOf returns the key that a finished rotation of old brought in.
func newKeyOf(t testing.TB, db *mongo.Database, old string) string {
	t.Helper()
	var e struct {
		NewKeyID string `bson:"newKeyId"`
	}
	if err := db.Collection(rotation.JournalCollection).FindOne(context.Background(),
		bson.M{"oldKeyId": old, "state": "done"}).Decode(&e); err != nil {
		t.Fatalf("rotation of %s: %v", old, err)
	}
	return e.NewKeyID
}

// crashAfterClaim leaves key-001's rotation claimed and nothing else done,
// as a process killed right after its claim would.
func crashAfterClaim(t *testing.T, db *mongo.Database) {
	t.Helper()
	r := newRotator(t, db, rotation.Config{Owner: "crashed", AfterStep: func(_ context.Context, _ string, s rotation.Step) error {
		if s == rotation.StepClaim {
			return errCrash
		}
		return nil
	}})
	if _, err := r.Rotate(context.Background(), "key-001", "manual"); !errors.Is(err, errCrash) {
		t.Fatalf("rotate: %v, want simulated crash", err)
	}
}

// heldRun is one process whose commands go through the fault proxy: the
// owner of a rotation, or a recoverer finishing one a crashed owner left.
type heldRun struct {
	name    string
	prepare func(t *testing.T, db *mongo.Database)
	run     func(ctx context.Context, r *rotation.Rotator) error
	// early: the owner answers early and finishes in the background.
	early bool
}

var heldRuns = []heldRun{
	{name: "owner", run: func(ctx context.Context, r *rotation.Rotator) error {
		_, err := r.Rotate(ctx, "key-001", "manual")
		return err
	}},
	{name: "recoverer", prepare: crashAfterClaim, run: func(ctx context.Context, r *rotation.Rotator) error {
		_, err := r.Recover(ctx)
		return err
	}},
	{name: "early-owner", early: true, run: func(ctx context.Context, r *rotation.Rotator) error {
		if _, err := r.Rotate(ctx, "key-001", "manual"); err != nil {
			return err
		}
		return r.Wait(ctx) // the background's commands are the run's too
	}},
}

// commandsOf lists the data commands one clean run sends.
// rotateAbandonedAt rotates key-001 as owner "p" through a proxy that
// holds the rotation's step k (0-based, as commandsOf lists heldRuns[0]);
// when that command reaches the proxy the owner gives up, as a stalled
// replica does. The held command is returned undelivered.
func rotateAbandonedAt(t *testing.T, mdb *mongotest.DB, k int) *mongotest.Held {
	t.Helper()
	proxy := mdb.Proxy(t)
	p := newRotator(t, mdb.NewClient(t, options.Client().ApplyURI(proxy.URI())).Database(mdb.Name), rotation.Config{Owner: "p"})
	held := proxy.HoldCommand(k + 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := p.Rotate(ctx, "key-001", "manual")
		done <- err
	}()
	<-held.Arrived()
	cancel()
	<-done
	return held
}

// firstStep and lastStep are the index of the first and the last command
// named step in a rotation's commands (heldRuns[0]).
func firstStep(t *testing.T, step string) int {
	t.Helper()
	steps := commandsOf(t, heldRuns[0])
	for i, s := range steps {
		if s == step {
			return i
		}
	}
	t.Fatalf("no %q in %v", step, steps)
	return -1
}

func lastStep(t *testing.T, step string) int {
	t.Helper()
	steps := commandsOf(t, heldRuns[0])
	for i := len(steps) - 1; i >= 0; i-- {
		if steps[i] == step {
			return i
		}
	}
	t.Fatalf("no %q in %v", step, steps)
	return -1
}

func commandsOf(t *testing.T, h heldRun) []string {
	t.Helper()
	mdb := mongotest.New(t)
	seed(t, mdb.Database, 3, 3, 2)
	if h.prepare != nil {
		h.prepare(t, mdb.Database)
	}
	proxy := mdb.Proxy(t)
	r := newRotator(t, mdb.NewClient(t, options.Client().ApplyURI(proxy.URI())).Database(mdb.Name), rotation.Config{NoLegacyRotator: h.early})
	proxy.ResetCommands()
	if err := h.run(context.Background(), r); err != nil {
		t.Fatalf("clean %s run: %v", h.name, err)
	}
	steps := proxy.Commands()
	if len(steps) < 8 {
		t.Fatalf("only %d commands seen: the proxy does not see the rotation", len(steps))
	}
	return steps
}

// The k-th command of a rotation (its owner's, or a recoverer's) is held in
// the network; its sender gives up; another process recovers the rotation
// and rotates the new key onward; then the held command reaches the store.
// After the next recovery pass every invariant holds and verify finds
// nothing, for every k (docs/reliability.md "Reliability").
func TestHeldCommandDeliveredLate(t *testing.T) {
	if testing.Short() {
		t.Skip("a fresh store for each command held")
	}
	heldDeliveredLate(t, heldRuns)
}

// heldDeliveredLate holds each command of each run in turn (see
// TestHeldCommandDeliveredLate).
func heldDeliveredLate(t *testing.T, runs []heldRun) {
	for _, h := range runs {
		steps := commandsOf(t, h)
		t.Logf("a clean %s run sends %d data commands: %v", h.name, len(steps), steps)
		for k := range steps {
			t.Run(fmt.Sprintf("%s %02d %s", h.name, k+1, steps[k]), func(t *testing.T) {
				bg := context.Background()
				mdb := mongotest.New(t)
				db := mdb.Database
				seed(t, db, 3, 3, 2)
				if h.prepare != nil {
					h.prepare(t, db)
				}
				proxy := mdb.Proxy(t)
				p := newRotator(t, mdb.NewClient(t, options.Client().ApplyURI(proxy.URI())).Database(mdb.Name), rotation.Config{Owner: "p", NoLegacyRotator: h.early})
				held := proxy.HoldCommand(k + 1)
				ctx, cancel := context.WithCancel(bg)
				defer cancel()
				done := make(chan error, 1)
				go func() { done <- h.run(ctx, p) }()
				select {
				case <-held.Arrived():
					cancel() // the sender gives up (lease lost, context cancelled)
					// and so does a completion after an early answer.
					_ = p.Close(ctx)
				case err := <-done:
					t.Fatalf("run ended without sending command %d: %v", k+1, err)
				}
				<-done
				// Another process recovers and rotates onward.
				q := newRotator(t, db, rotation.Config{Owner: "q"})
				if _, err := q.Recover(bg); err != nil {
					t.Fatalf("recover: %v", err)
				}
				if res, err := q.Rotate(bg, "key-001", "manual"); err != nil || (res.Outcome != rotation.Rotated && res.Outcome != rotation.AlreadyRotated) {
					t.Fatalf("rotate key-001 after recovery: %+v, %v", res, err)
				}
				b := newKeyOf(t, db, "key-001")
				if res, err := q.Rotate(bg, b, "unauthorized"); err != nil || res.Outcome != rotation.Rotated {
					t.Fatalf("rotate %s onward: %+v, %v", b, res, err)
				}
				// The held command lands now.
				dctx, dcancel := context.WithTimeout(bg, 5*time.Minute) // a guard against a hang
				defer dcancel()
				reply, err := held.Deliver(dctx)
				if err != nil {
					t.Fatalf("deliver held %s: %v", held.Command, err)
				}
				t.Logf("held %s delivered late: %s", held.Command, reply)
				// The next recovery pass leaves everything right.
				if _, err := newRotator(t, db, rotation.Config{Owner: "next"}).Recover(bg); err != nil {
					t.Fatalf("recover after late delivery: %v", err)
				}
				checkInvariants(t, db, 3)
				for _, key := range []string{"key-001", b} {
					if n := count(t, db, rotation.JournalCollection, bson.M{"oldKeyId": key, "state": "done"}); n != 1 {
						t.Errorf("%s rotated %d times, want once", key, n)
					}
					if n := count(t, db, testPool.KeysCollection, bson.M{"_id": key}); n != 0 {
						t.Errorf("%s is live again", key)
					}
				}
			})
		}
	}
}

// Case 1 of issue 12 by hand: the late insert of B lands after B was rotated
// away. Verify names it; rotating B does not answer "already rotated" for
// ever; the next recovery pass removes it with a copy in the archive.
func TestLateInsertOfRotatedAwayKey(t *testing.T) {
	bg := context.Background()
	mdb := mongotest.New(t)
	db := mdb.Database
	seed(t, db, 3, 3, 2)
	held := rotateAbandonedAt(t, mdb, lastStep(t, "insert "+testPool.KeysCollection))
	q := newRotator(t, db, rotation.Config{Owner: "q"})
	if rep, err := q.Recover(bg); err != nil || rep.Completed != 1 {
		t.Fatalf("recover: %+v, %v", rep, err)
	}
	b := newKeyOf(t, db, "key-001")
	if res, err := q.Rotate(bg, b, "unauthorized"); err != nil || res.Outcome != rotation.Rotated {
		t.Fatalf("rotate %s: %+v, %v", b, res, err)
	}
	if _, err := held.Deliver(bg); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db, testPool.KeysCollection, bson.M{"_id": b}); n != 1 {
		t.Fatalf("the late insert did not bring %s back (%d): the test proves nothing", b, n)
	}
	probs, err := q.Verify(bg)
	if err != nil {
		t.Fatal(err)
	}
	if !hasKind(probs, "rotated_key_live_again") {
		t.Errorf("verify did not name the returned key: %v", probs)
	}
	// Rotating B no longer answers "already rotated" while B stays live.
	if _, err := q.Rotate(bg, b, "unauthorized"); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Recover(bg); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db, testPool.KeysCollection, bson.M{"_id": b}); n != 0 {
		t.Errorf("%s still live after recovery", b)
	}
	if n := count(t, db, rotation.ArchiveCollection, bson.M{"sourceId": b}); n < 2 {
		t.Errorf("%d archived copies of %s, want the rotation's and the removed late insert's", n, b)
	}
	checkInvariants(t, db, 3)
}

func hasKind(probs []rotation.Problem, kind string) bool {
	for _, p := range probs {
		if p.Kind == kind {
			return true
		}
	}
	return false
}

// Cases 2 and 3 of issue 12: a backup whose _id is already a live key — with
// another secret (an id collision) or with its own secret but not marked used
// (left by the old rotators). Neither is ever taken for the rotation's new
// key, by the owner or by recovery: the rotation moves to another backup,
// the pool keeps its size, verify names the state and recover repairs what
// is safe.
func TestBackupWhoseIDIsALiveKey(t *testing.T) {
	bg := context.Background()
	tests := []struct {
		name     string
		secret   string
		kind     string
		repaired bool
	}{
		{"id collision", "sk-live-unrelated-secret-0000", "id_collision", false},
		{"backup live as key, not marked used", "sk-live-backup-secret-000000", "backup_live_unmarked", true},
	}
	for _, tt := range tests {
		for _, crash := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s, owner crashes after claim %v", tt.name, crash), func(t *testing.T) {
				db := mongotest.New(t).Database
				seed(t, db, 3, 3, 2)
				if _, err := db.Collection(testPool.KeysCollection).InsertOne(bg, bson.M{
					"_id": "backup-000", "apiKey": tt.secret, "status": "healthy", "replacedKey": "key-legacy",
				}); err != nil {
					t.Fatal(err)
				}
				opts := rotation.Config{}
				if crash {
					opts.AfterStep = func(_ context.Context, _ string, s rotation.Step) error {
						if s == rotation.StepClaim {
							return errCrash
						}
						return nil
					}
				}
				r := newRotator(t, db, opts)
				res, err := r.Rotate(bg, "key-001", "manual")
				t.Logf("rotate: %+v, %v", res, err)
				if _, err := newRotator(t, db, rotation.Config{}).Recover(bg); err != nil {
					t.Logf("recover: %v", err)
				}
				if res, err := newRotator(t, db, rotation.Config{}).Rotate(bg, "key-001", "manual"); err != nil {
					t.Fatalf("rotate again: %+v, %v", res, err)
				}
				var k bson.M
				if err := db.Collection(testPool.KeysCollection).FindOne(bg, bson.M{"_id": "backup-000"}).Decode(&k); err != nil {
					t.Fatalf("the live key backup-000 is gone: %v", err)
				}
				if k["apiKey"] != tt.secret || k["replacedKey"] != "key-legacy" {
					t.Errorf("the live key backup-000 was changed: %v", k)
				}
				if n := count(t, db, testPool.KeysCollection, bson.M{}); n != 4 {
					t.Errorf("pool size %d, want 4", n)
				}
				if n := count(t, db, testPool.KeysCollection, bson.M{"_id": "key-001"}); n != 0 {
					t.Errorf("key-001 not rotated")
				}
				nk := newKeyOf(t, db, "key-001")
				if nk == "backup-000" {
					t.Fatalf("key-001 rotated onto the live key backup-000")
				}
				if n := count(t, db, testPool.BindingsCollection, bson.M{testPool.BindingKeyField: "backup-000"}); n != 0 {
					t.Errorf("%d bindings moved onto the unrelated key backup-000", n)
				}
				if n := count(t, db, testPool.BindingsCollection, bson.M{testPool.BindingKeyField: nk}); n != 2 {
					t.Errorf("%d bindings on the new key %s, want 2", n, nk)
				}
				var bk bson.M
				if err := db.Collection(testPool.BackupsCollection).FindOne(bg, bson.M{"_id": "backup-000"}).Decode(&bk); err != nil {
					t.Fatal(err)
				}
				if bk["usedFor"] == "key-001" {
					t.Errorf("backup-000 marked used for key-001: %v", bk)
				}
				probs, err := r.Verify(bg)
				if err != nil {
					t.Fatal(err)
				}
				if !tt.repaired && !hasKind(probs, tt.kind) {
					t.Errorf("verify did not name %s: %v", tt.kind, probs)
				}
				if tt.repaired {
					if bk["isUsed"] != true {
						t.Errorf("recover did not mark the backup live as a key used: %v", bk)
					}
					if hasKind(probs, tt.kind) {
						t.Errorf("verify still names %s after recovery repaired it", tt.kind)
					}
				}
			})
		}
	}
}

// Verify names a backup live as a key but not marked used before recovery
// repairs it (issue 12 case 8).
func TestVerifyNamesBackupLiveUnmarked(t *testing.T) {
	bg := context.Background()
	db := mongotest.New(t).Database
	seed(t, db, 2, 2, 1)
	if _, err := db.Collection(testPool.KeysCollection).InsertOne(bg, bson.M{"_id": "backup-001", "apiKey": "sk-live-backup-secret-000001"}); err != nil {
		t.Fatal(err)
	}
	r := newRotator(t, db, rotation.Config{})
	probs, err := r.Verify(bg)
	if err != nil || !hasKind(probs, "backup_live_unmarked") {
		t.Fatalf("verify: %v, %v; want backup_live_unmarked", probs, err)
	}
	if _, err := r.Recover(bg); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db, testPool.BackupsCollection, bson.M{"_id": "backup-001", "isUsed": true}); n != 1 {
		t.Error("recover did not mark backup-001 used")
	}
	if probs, err := r.Verify(bg); err != nil || hasKind(probs, "backup_live_unmarked") {
		t.Errorf("verify after recover: %v, %v", probs, err)
	}
}

// Case 4 of issue 12: the journal's backupId is unique per pool, so a backup
// id used in one pool stays claimable in another.
func TestBackupIDUniquePerPool(t *testing.T) {
	bg := context.Background()
	db := mongotest.New(t).Database
	seed(t, db, 2, 1, 1)
	factory, _ := rotation.Preset("factory")
	fr, err := rotation.New(db, factory, rotation.Config{Owner: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := fr.EnsureIndexes(bg); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Collection(factory.KeysCollection).InsertOne(bg, bson.M{"_id": "fk-1", "apiKey": "sk-live-factory-key-0001", "status": "healthy"}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Collection(factory.BackupsCollection).InsertOne(bg, bson.M{"_id": "backup-000", "apiKey": "sk-live-factory-backup-01", "isUsed": false}); err != nil {
		t.Fatal(err)
	}
	if res, err := newRotator(t, db, rotation.Config{}).Rotate(bg, "key-000", "manual"); err != nil || res.NewKeyID != "backup-000" {
		t.Fatalf("openhands rotation: %+v, %v", res, err)
	}
	if n, err := fr.BackupsAvailable(bg); err != nil || n != 1 {
		t.Fatalf("factory backups available: %d, %v", n, err)
	}
	res, err := fr.Rotate(bg, "fk-1", "manual")
	if err != nil || res.Outcome != rotation.Rotated || res.NewKeyID != "backup-000" {
		t.Fatalf("factory rotation: %+v, %v; want rotated onto its own backup-000", res, err)
	}
}

// An existing deployment's global backupId index is migrated to the per-pool
// one by replicas starting at once; every start-up succeeds and the journal
// is never without a unique index on its backups.
func TestMigrateGlobalBackupIndex(t *testing.T) {
	bg := context.Background()
	mdb := mongotest.New(t)
	journal := mdb.Database.Collection(rotation.JournalCollection)
	if _, err := journal.Indexes().CreateOne(bg, mongo.IndexModel{Keys: bson.D{{Key: "backupId", Value: 1}},
		Options: options.Index().SetName("backupId_unique").SetUnique(true)}); err != nil {
		t.Fatal(err)
	}
	const replicas = 4
	var wg sync.WaitGroup
	errs := make(chan error, replicas)
	start := make(chan struct{})
	for i := range replicas {
		r := newRotator(t, mdb.NewClient(t).Database(mdb.Name), rotation.Config{Owner: fmt.Sprintf("r%d", i)})
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs <- r.EnsureIndexes(bg)
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("start-up: %v", err)
		}
	}
	specs := indexNames(t, journal)
	if specs["backupId_unique"] {
		t.Error("the global backupId index is still there")
	}
	if !specs["pool_1_backupId_1_unique"] {
		t.Errorf("no per-pool unique index: %v", specs)
	}
	probs, err := newRotator(t, mdb.Database, rotation.Config{}).Verify(bg)
	if err != nil || len(probs) != 0 {
		t.Errorf("verify: %v, %v", probs, err)
	}
}

func indexNames(t *testing.T, c *mongo.Collection) map[string]bool {
	t.Helper()
	cur, err := c.Indexes().List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for cur.Next(context.Background()) {
		out[cur.Current.Lookup("name").StringValue()] = true
	}
	return out
}

// Case 5 of issue 12: backups cached by the rotator and then deleted, marked
// used or re-keyed outside the journal. The secret that goes live is the one
// in the store when the rotation claimed the backup.
func TestCachedBackupsChangedInTheStore(t *testing.T) {
	bg := context.Background()
	db := mongotest.New(t).Database
	seed(t, db, 3, 5, 1)
	r := newRotator(t, db, rotation.Config{})
	if res, err := r.Rotate(bg, "key-000", "manual"); err != nil || res.NewKeyID != "backup-000" {
		t.Fatalf("first rotation: %+v, %v", res, err)
	}
	// backup-001..004 are now cached.
	backups := db.Collection(testPool.BackupsCollection)
	if _, err := backups.DeleteOne(bg, bson.M{"_id": "backup-001"}); err != nil {
		t.Fatal(err)
	}
	if _, err := backups.UpdateOne(bg, bson.M{"_id": "backup-002"}, bson.M{"$set": bson.M{"isUsed": true, "usedFor": "legacy", "usedAt": time.Now()}}); err != nil {
		t.Fatal(err)
	}
	if _, err := backups.UpdateOne(bg, bson.M{"_id": "backup-003"}, bson.M{"$set": bson.M{"apiKey": "sk-live-rekeyed-secret-0003"}}); err != nil {
		t.Fatal(err)
	}
	res, err := r.Rotate(bg, "key-001", "manual")
	if err != nil || res.Outcome != rotation.Rotated {
		t.Fatalf("rotate: %+v, %v", res, err)
	}
	if res.NewKeyID != "backup-003" {
		t.Errorf("rotated onto %s, want backup-003 (001 deleted, 002 used)", res.NewKeyID)
	}
	var k bson.M
	if err := db.Collection(testPool.KeysCollection).FindOne(bg, bson.M{"_id": res.NewKeyID}).Decode(&k); err != nil {
		t.Fatal(err)
	}
	var b bson.M
	if err := backups.FindOne(bg, bson.M{"_id": res.NewKeyID}).Decode(&b); err != nil {
		t.Fatal(err)
	}
	if k["apiKey"] != b["apiKey"] {
		t.Errorf("new key went live with %v, the backup holds %v", secret.Mask(fmt.Sprint(k["apiKey"])), secret.Mask(fmt.Sprint(b["apiKey"])))
	}
	if n := count(t, db, testPool.KeysCollection, bson.M{"apiKey": "sk-live-backup-secret-000001"}); n != 0 {
		t.Error("the deleted backup's secret went live")
	}
	if n := count(t, db, rotation.JournalCollection, bson.M{"backupId": "backup-002"}); n != 0 {
		t.Error("a claim holds backup-002, which the legacy rotator used")
	}
	if n := count(t, db, testPool.KeysCollection, bson.M{}); n != 3 {
		t.Errorf("pool size %d, want 3", n)
	}
	if probs, err := r.Verify(bg); err != nil || len(probs) != 0 {
		t.Errorf("verify: %v, %v", probs, err)
	}
}

// Case 6 of issue 12: the caller hands in a key document read a while ago;
// the archive keeps what the delete removes, newer counters and a secret
// replaced in place included.
func TestArchiveKeepsWhatIsDeleted(t *testing.T) {
	bg := context.Background()
	for _, rekey := range []bool{false, true} {
		t.Run(fmt.Sprintf("secret replaced %v", rekey), func(t *testing.T) {
			db := mongotest.New(t).Database
			seed(t, db, 2, 2, 1)
			keys := db.Collection(testPool.KeysCollection)
			stale, err := keys.FindOne(bg, bson.M{"_id": "key-000"}).Raw()
			if err != nil {
				t.Fatal(err)
			}
			set := bson.M{"tokensUsed": int64(99999), "lastUsedAt": time.Date(2026, 2, 2, 0, 0, 0, 0, time.UTC)}
			if rekey {
				set["apiKey"] = "sk-live-replaced-in-place-0000"
			}
			if _, err := keys.UpdateOne(bg, bson.M{"_id": "key-000"}, bson.M{"$set": set}); err != nil {
				t.Fatal(err)
			}
			current, err := keys.FindOne(bg, bson.M{"_id": "key-000"}).Raw()
			if err != nil {
				t.Fatal(err)
			}
			r := newRotator(t, db, rotation.Config{})
			res, err := r.Rotate(bg, "key-000", "manual", rotation.WithKeyDocument(stale))
			t.Logf("rotate: %+v, %v", res, err)
			if _, err := r.Recover(bg); err != nil {
				t.Fatal(err)
			}
			if n := count(t, db, testPool.KeysCollection, bson.M{"_id": "key-000"}); n == 1 {
				if rekey {
					return // the key with its new secret was left alone: nothing lost
				}
				t.Fatal("key-000 not rotated")
			}
			cur, err := db.Collection(rotation.ArchiveCollection).Find(bg, bson.M{"sourceId": "key-000"})
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for cur.Next(bg) {
				if doc, ok := cur.Current.Lookup("document").DocumentOK(); ok && string(doc) == string(current) {
					found = true
				}
			}
			if !found {
				t.Errorf("the archive does not hold the deleted document %s", current)
			}
		})
	}
}

// Case 7 of issue 12: a key restored from the archive (same id and secret)
// can be rotated again.
func TestRestoredKeyCanBeRotatedAgain(t *testing.T) {
	bg := context.Background()
	db := mongotest.New(t).Database
	seed(t, db, 3, 3, 1)
	r := newRotator(t, db, rotation.Config{})
	first, err := r.Rotate(bg, "key-001", "manual")
	if err != nil || first.Outcome != rotation.Rotated {
		t.Fatalf("first rotation: %+v, %v", first, err)
	}
	var arch struct {
		Document bson.Raw `bson:"document"`
	}
	if err := db.Collection(rotation.ArchiveCollection).FindOne(bg, bson.M{"sourceId": "key-001"}).Decode(&arch); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Collection(testPool.KeysCollection).InsertOne(bg, arch.Document); err != nil {
		t.Fatal(err)
	}
	probs, err := r.Verify(bg)
	if err != nil || !hasKind(probs, "rotated_key_live_again") {
		t.Errorf("verify: %v, %v; want rotated_key_live_again", probs, err)
	}
	// Recovery leaves a restored key alone: the operator put it there.
	if _, err := r.Recover(bg); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db, testPool.KeysCollection, bson.M{"_id": "key-001"}); n != 1 {
		t.Fatal("recovery removed the restored key")
	}
	again, err := newRotator(t, db, rotation.Config{}).Rotate(bg, "key-001", "manual")
	if err != nil || again.Outcome != rotation.Rotated || again.NewKeyID == first.NewKeyID {
		t.Fatalf("rotating the restored key: %+v, %v", again, err)
	}
	if res, err := r.Rotate(bg, "key-001", "manual"); err != nil || res.Outcome != rotation.AlreadyRotated {
		t.Errorf("third call: %+v, %v; want already rotated", res, err)
	}
	checkInvariants(t, db, 4)
}

// Every write of a rotation and of a recovery waits for a majority,
// journaled, and every read uses read concern majority, even when the
// connection string asks for less; the embedded store accepts them (the
// rotation succeeds through it). docs/reliability.md "Reliability".
func TestDurableWritesAndReads(t *testing.T) {
	bg := context.Background()
	mdb := mongotest.New(t)
	seed(t, mdb.Database, 3, 3, 2)
	proxy := mdb.Proxy(t)
	weak := proxy.URI() + "&w=1&journal=false&readConcernLevel=local"
	client := mdb.NewClient(t, options.Client().ApplyURI(weak))
	r := newRotator(t, client.Database(mdb.Name), rotation.Config{})
	proxy.ResetCommands()
	res, err := r.Rotate(bg, "key-001", "manual")
	if err != nil || res.Outcome != rotation.Rotated {
		t.Fatalf("rotate: %+v, %v", res, err)
	}
	if _, err := r.Recover(bg); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Rotate(bg, res.NewKeyID, "manual"); err != nil {
		t.Fatal(err)
	}
	names, bodies := proxy.Commands(), proxy.CommandBodies()
	writes, reads := 0, 0
	for i, body := range bodies {
		switch strings.Fields(names[i])[0] {
		case "insert", "update", "delete":
			writes++
			w, _ := body.Lookup("writeConcern", "w").StringValueOK()
			j, _ := body.Lookup("writeConcern", "j").BooleanOK()
			if w != "majority" || !j {
				t.Errorf("%s: writeConcern %v, want {w: majority, j: true}", names[i], body.Lookup("writeConcern"))
			}
		case "find", "aggregate", "count":
			reads++
			if lvl, _ := body.Lookup("readConcern", "level").StringValueOK(); lvl != "majority" {
				t.Errorf("%s: readConcern %v, want majority", names[i], body.Lookup("readConcern"))
			}
			if mode, ok := body.Lookup("$readPreference", "mode").StringValueOK(); ok && mode != "primary" {
				t.Errorf("%s: read preference %s, want primary", names[i], mode)
			}
		}
	}
	if writes < 8 || reads < 3 {
		t.Fatalf("saw %d writes and %d reads: the proxy did not see the rotation", writes, reads)
	}
	checkInvariants(t, mdb.Database, 3)
}
