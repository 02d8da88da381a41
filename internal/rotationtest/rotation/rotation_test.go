package rotation_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation"
	"github.com/spendchecker/spendchecker/rotation/history"
)

func TestRotateOnce(t *testing.T) {
	ctx := context.Background()
	db := mongotest.New(t).Database
	seed(t, db, 3, 2, 2)
	r := newRotator(t, db, rotation.Config{Owner: "replica-1"})
	budget := 10.0
	res, err := r.Rotate(ctx, "key-001", "proactive_threshold_9.99", rotation.WithObservation(history.Observation{
		Spend: 9.99, Threshold: 9.95, Budget: &budget, Provider: "openhands", LeaseEpoch: 7,
	}))
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != rotation.Rotated || res.NewKeyID != "backup-000" {
		t.Fatalf("got %+v, want rotated to backup-000", res)
	}
	var nk bson.M
	if err := db.Collection(testPool.KeysCollection).FindOne(ctx, bson.M{"_id": "backup-000"}).Decode(&nk); err != nil {
		t.Fatal(err)
	}
	want := bson.M{"apiKey": "sk-live-backup-secret-000000", "status": "healthy", "tokensUsed": int64(0), "requestsCount": int64(0), "replacedKey": "key-001"}
	for k, v := range want {
		if nk[k] != v {
			t.Errorf("new key %s = %v, want %v", k, nk[k], v)
		}
	}
	var bk bson.M
	if err := db.Collection(testPool.BackupsCollection).FindOne(ctx, bson.M{"_id": "backup-000"}).Decode(&bk); err != nil {
		t.Fatal(err)
	}
	if bk["isUsed"] != true || bk["activated"] != true || bk["usedFor"] != "key-001" || bk["usedAt"] == nil {
		t.Errorf("backup not marked used: %v", bk)
	}
	var arch struct {
		Document bson.M `bson:"document"`
	}
	if err := db.Collection(rotation.ArchiveCollection).FindOne(ctx, bson.M{"sourceId": "key-001"}).Decode(&arch); err != nil {
		t.Fatal(err)
	}
	if d := arch.Document; d["proxyOnlyField"] != "kept" || d["apiKey"] != "sk-live-key-secret-000001" {
		t.Errorf("archive lost the document: %v", d)
	}
	var h history.Record
	if err := db.Collection(testPool.HistoryCollection).FindOne(ctx, bson.M{}).Decode(&h); err != nil {
		t.Fatal(err)
	}
	if h.ID != res.RotationID || h.KeyID != "key-001" || h.NewKeyID != "backup-000" || h.Spend != 9.99 ||
		h.LeaseEpoch != 7 || h.Instance != "replica-1" || h.APIKeyMasked != "sk-li...0001" || *h.Budget != 10 {
		t.Errorf("history record %+v", h)
	}
	if n := count(t, db, testPool.BindingsCollection, bson.M{testPool.BindingKeyField: "backup-000"}); n != 2 {
		t.Errorf("%d bindings moved, want 2", n)
	}
	checkInvariants(t, db, 3)
}

func TestRotateOutcomesThatWriteNothing(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		backups int
		prepare func(t *testing.T, db *mongo.Database, r *rotation.Rotator)
		key     string
		want    rotation.Outcome
		wantErr bool
	}{
		{name: "missing key", backups: 2, key: "nope", want: rotation.NotFound},
		{name: "no backup left", backups: 0, key: "key-000", want: rotation.NoBackup},
		{name: "only malformed backups", backups: 0, key: "key-000", want: rotation.NoBackup,
			prepare: func(t *testing.T, db *mongo.Database, _ *rotation.Rotator) {
				_, err := db.Collection(testPool.BackupsCollection).InsertMany(ctx, []any{
					bson.M{"_id": "no-secret", "isUsed": false},
					bson.M{"_id": 42, "apiKey": "sk-live-numeric-id-000", "isUsed": false},
				})
				if err != nil {
					t.Fatal(err)
				}
			}},
		{name: "key without apiKey", backups: 2, key: "bad", wantErr: true,
			prepare: func(t *testing.T, db *mongo.Database, _ *rotation.Rotator) {
				if _, err := db.Collection(testPool.KeysCollection).InsertOne(ctx, bson.M{"_id": "bad", "status": "healthy"}); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "key with numeric apiKey", backups: 2, key: "bad", wantErr: true,
			prepare: func(t *testing.T, db *mongo.Database, _ *rotation.Rotator) {
				if _, err := db.Collection(testPool.KeysCollection).InsertOne(ctx, bson.M{"_id": "bad", "apiKey": 12345}); err != nil {
					t.Fatal(err)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := mongotest.New(t).Database
			seed(t, db, 2, tt.backups, 1)
			r := newRotator(t, db, rotation.Config{})
			if tt.prepare != nil {
				tt.prepare(t, db, r)
			}
			before := snapshot(t, db)
			res, err := r.Rotate(ctx, tt.key, "manual")
			if tt.wantErr != (err != nil) {
				t.Fatalf("err = %v, want error: %v", err, tt.wantErr)
			}
			if !tt.wantErr && res.Outcome != tt.want {
				t.Fatalf("outcome %v, want %v", res.Outcome, tt.want)
			}
			if after := snapshot(t, db); after != before {
				t.Errorf("database changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// snapshot renders every collection the rotator may write, for comparison.
func snapshot(t testing.TB, db *mongo.Database) string {
	t.Helper()
	ctx := context.Background()
	var out string
	for _, c := range []string{testPool.KeysCollection, testPool.BackupsCollection, testPool.BindingsCollection,
		testPool.HistoryCollection, rotation.JournalCollection, rotation.ArchiveCollection} {
		cur, err := db.Collection(c).Find(ctx, bson.M{})
		if err != nil {
			t.Fatal(err)
		}
		for cur.Next(ctx) {
			out += c + ":" + cur.Current.String() + "\n"
		}
	}
	return out
}

// Malformed backups ahead of good ones in claim order are skipped, not taken
// for an empty backup pool, and are left as they are.
func TestRotateSkipsMalformedBackups(t *testing.T) {
	ctx := context.Background()
	db := mongotest.New(t).Database
	seed(t, db, 2, 1, 1)
	early := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var bad []any
	for i := range 20 { // more than one batch of candidates
		bad = append(bad,
			bson.M{"_id": fmt.Sprintf("no-secret-%02d", i), "isUsed": false, "createdAt": early},
			bson.M{"_id": int32(i), "apiKey": fmt.Sprintf("sk-live-numeric-id-%02d", i), "isUsed": false, "createdAt": early},
			bson.M{"_id": fmt.Sprintf("empty-secret-%02d", i), "apiKey": "", "isUsed": false, "createdAt": early},
			bson.M{"_id": fmt.Sprintf("number-secret-%02d", i), "apiKey": 42, "isUsed": false, "createdAt": early})
	}
	if _, err := db.Collection(testPool.BackupsCollection).InsertMany(ctx, bad); err != nil {
		t.Fatal(err)
	}
	r := newRotator(t, db, rotation.Config{})
	res, err := r.Rotate(ctx, "key-000", "manual")
	if err != nil || res.Outcome != rotation.Rotated || res.NewKeyID != "backup-000" {
		t.Fatalf("rotate = %+v, %v; want rotated onto backup-000", res, err)
	}
	if n := count(t, db, testPool.BackupsCollection, bson.M{"isUsed": false}); n != int64(len(bad)) {
		t.Errorf("%d unused backups left, want the %d malformed ones untouched", n, len(bad))
	}
	if n, err := r.BackupsAvailable(ctx); err != nil || n != 0 {
		t.Errorf("backups available = %d, %v; want 0: malformed backups cannot be used", n, err)
	}
	res, err = r.Rotate(ctx, "key-001", "manual")
	if err != nil || res.Outcome != rotation.NoBackup {
		t.Fatalf("second rotate = %+v, %v; want no backup", res, err)
	}
}

func TestRotateAfterDoneReportsAlreadyRotated(t *testing.T) {
	ctx := context.Background()
	db := mongotest.New(t).Database
	seed(t, db, 2, 3, 1)
	r := newRotator(t, db, rotation.Config{})
	var old bson.Raw
	old, err := db.Collection(testPool.KeysCollection).FindOne(ctx, bson.M{"_id": "key-000"}).Raw()
	if err != nil {
		t.Fatal(err)
	}
	first, err := r.Rotate(ctx, "key-000", "manual")
	if err != nil || first.Outcome != rotation.Rotated {
		t.Fatalf("first rotation: %+v, %v", first, err)
	}
	t.Run("key gone", func(t *testing.T) {
		res, err := r.Rotate(ctx, "key-000", "manual")
		if err != nil || res.Outcome != rotation.AlreadyRotated || res.NewKeyID != first.NewKeyID {
			t.Fatalf("got %+v, %v; want already rotated to %s", res, err, first.NewKeyID)
		}
	})
	t.Run("same document put back by hand is rotated again", func(t *testing.T) {
		// Restored from the archive (docs/design.md "Rotation guarantees"): the
		// operator wants it in the pool, so it can leave again later.
		if _, err := db.Collection(testPool.KeysCollection).InsertOne(ctx, old); err != nil {
			t.Fatal(err)
		}
		res, err := r.Rotate(ctx, "key-000", "manual")
		if err != nil || res.Outcome != rotation.Rotated || res.NewKeyID == first.NewKeyID {
			t.Fatalf("got %+v, %v; want rotated again onto another backup", res, err)
		}
		before := snapshot(t, db)
		res, err = r.Rotate(ctx, "key-000", "manual")
		if err != nil || res.Outcome != rotation.AlreadyRotated {
			t.Fatalf("got %+v, %v; want already rotated", res, err)
		}
		if snapshot(t, db) != before {
			t.Error("an already-rotated outcome wrote to the database")
		}
	})
}

// 100 goroutines rotate the same key: one rotation, everything else untouched.
func TestRotateSameKeyRace(t *testing.T) {
	ctx := context.Background()
	mdb := mongotest.New(t)
	db := mdb.Database
	seed(t, db, 10, 5, 4)
	var before []bson.M
	cur, _ := db.Collection(testPool.BindingsCollection).Find(ctx, bson.M{testPool.BindingKeyField: "key-003"})
	if err := cur.All(ctx, &before); err != nil {
		t.Fatal(err)
	}
	outcomes := make(chan rotation.Result, 100)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 100 {
		// Separate rotators, as separate processes would have.
		r := newRotator(t, db, rotation.Config{Owner: fmt.Sprintf("g%d", i)})
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			res, err := r.Rotate(ctx, "key-003", "proactive_threshold_9.99")
			if err != nil {
				t.Errorf("rotate: %v", err)
			}
			outcomes <- res
		}()
	}
	close(start)
	wg.Wait()
	close(outcomes)
	got := map[rotation.Outcome]int{}
	var newKey string
	for res := range outcomes {
		got[res.Outcome]++
		if res.Outcome == rotation.Rotated {
			newKey = res.NewKeyID
		}
	}
	if got[rotation.Rotated] != 1 || got[rotation.Rotated]+got[rotation.AlreadyRotated]+got[rotation.InProgress] != 100 {
		t.Fatalf("outcomes %v, want exactly one rotated and the rest already rotated or in progress", got)
	}
	checkInvariants(t, db, 10)
	if n := count(t, db, testPool.BackupsCollection, bson.M{"isUsed": true}); n != 1 {
		t.Errorf("%d backups used, want 1", n)
	}
	for _, b := range before {
		var after bson.M
		if err := db.Collection(testPool.BindingsCollection).FindOne(ctx, bson.M{"_id": b["_id"]}).Decode(&after); err != nil {
			t.Fatalf("binding %v gone: %v", b["_id"], err)
		}
		if after[testPool.BindingKeyField] != newKey || after["priority"] != b["priority"] || after["proxyId"] != b["proxyId"] {
			t.Errorf("binding %v = %v, want it on %s with priority and proxy kept", b["_id"], after, newKey)
		}
	}
}

// 50 keys, 30 backups, every key rotated from 4 separate clients at once.
func TestRotateManyKeysFromSeveralClients(t *testing.T) {
	if testing.Short() {
		t.Skip("200 rotations from 4 clients (a race on one key: TestRotateSameKeyRace)")
	}
	ctx := context.Background()
	mdb := mongotest.New(t)
	seed(t, mdb.Database, 50, 30, 1)
	type attempt struct {
		key string
		res rotation.Result
	}
	results := make(chan attempt, 4*50)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for c := range 4 {
		db := mdb.NewClient(t).Database(mdb.Name)
		r := newRotator(t, db, rotation.Config{Owner: fmt.Sprintf("client-%d", c)})
		for k := range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				key := fmt.Sprintf("key-%03d", (k+c*13)%50)
				res, err := r.Rotate(ctx, key, "proactive_threshold_9.99")
				if err != nil {
					t.Errorf("rotate %s: %v", key, err)
				}
				results <- attempt{key, res}
			}()
		}
	}
	close(start)
	wg.Wait()
	close(results)
	rotated := map[string]int{}
	noBackup := map[string]bool{}
	for a := range results {
		switch a.res.Outcome {
		case rotation.Rotated:
			rotated[a.key]++
		case rotation.NoBackup:
			noBackup[a.key] = true
		}
	}
	if len(rotated) != 30 {
		t.Errorf("%d keys rotated, want 30", len(rotated))
	}
	for k, n := range rotated {
		if n != 1 {
			t.Errorf("key %s rotated %d times", k, n)
		}
		if noBackup[k] {
			// Possible only if a rotation for the key was not yet claimed
			// when another caller saw no backup; it must then be rotated.
			continue
		}
	}
	unrotated := 0
	for i := range 50 {
		k := fmt.Sprintf("key-%03d", i)
		if rotated[k] == 0 {
			unrotated++
			if !noBackup[k] {
				t.Errorf("key %s neither rotated nor reported no backup", k)
			}
			if n := count(t, mdb.Database, rotation.JournalCollection, bson.M{"oldKeyId": k}); n != 0 {
				t.Errorf("key %s reported no backup but has %d journal entries", k, n)
			}
		}
	}
	if unrotated != 20 {
		t.Errorf("%d keys without backup, want 20", unrotated)
	}
	checkInvariants(t, mdb.Database, 50)
}

var errCrash = errors.New("simulated crash")

// A crash after every step, then recovery (itself crashing at every later
// step once): every invariant holds and the key is rotated exactly once.
func TestCrashAtEveryStepThenRecover(t *testing.T) {
	ctx := context.Background()
	for _, k := range rotation.Steps {
		for _, j := range append([]rotation.Step{0}, rotation.Steps[1:]...) {
			if j != 0 && j <= k {
				continue
			}
			if testing.Short() && j != 0 {
				// Every crash point, each recovered cleanly; the
				// recoveries that crash too are the long run's.
				continue
			}
			name := fmt.Sprintf("crash after %s", k)
			if j != 0 {
				name += fmt.Sprintf(", recovery crashes after %s", j)
			}
			t.Run(name, func(t *testing.T) {
				db := mongotest.New(t).Database
				seed(t, db, 4, 3, 3)
				crashAt := func(s rotation.Step) func(context.Context, string, rotation.Step) error {
					return func(_ context.Context, _ string, got rotation.Step) error {
						if got == s {
							return errCrash
						}
						return nil
					}
				}
				r := newRotator(t, db, rotation.Config{AfterStep: crashAt(k)})
				if _, err := r.Rotate(ctx, "key-002", "unauthorized"); !errors.Is(err, errCrash) {
					t.Fatalf("rotate: %v, want simulated crash", err)
				}
				// Insert precedes delete: the pool never shrinks.
				if n := count(t, db, testPool.KeysCollection, bson.M{}); n < 4 {
					t.Fatalf("pool shrank to %d after crash at %s", n, k)
				}
				// A live caller meanwhile sees the rotation as taken.
				other := newRotator(t, db, rotation.Config{})
				res, err := other.Rotate(ctx, "key-002", "unauthorized")
				if err != nil || (res.Outcome != rotation.InProgress && res.Outcome != rotation.AlreadyRotated) {
					t.Fatalf("concurrent caller got %+v, %v", res, err)
				}
				if j != 0 {
					rc := newRotator(t, db, rotation.Config{AfterStep: crashAt(j)})
					if _, err := rc.Recover(ctx); !errors.Is(err, errCrash) && k != rotation.StepDone {
						t.Fatalf("recover: %v, want simulated crash", err)
					}
				}
				rep, err := newRotator(t, db, rotation.Config{}).Recover(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if rep.Failed != 0 || rep.Dropped != 0 {
					t.Errorf("recover report %+v", rep)
				}
				checkInvariants(t, db, 4)
				if n := count(t, db, rotation.JournalCollection, bson.M{"state": "done"}); n != 1 {
					t.Errorf("%d rotations done, want 1", n)
				}
				res, err = other.Rotate(ctx, "key-002", "unauthorized")
				if err != nil || res.Outcome != rotation.AlreadyRotated {
					t.Errorf("after recovery: %+v, %v; want already rotated", res, err)
				}
			})
		}
	}
}

func TestRecoverDropsClaimWhoseBackupVanished(t *testing.T) {
	ctx := context.Background()
	db := mongotest.New(t).Database
	seed(t, db, 2, 2, 1)
	r := newRotator(t, db, rotation.Config{AfterStep: func(_ context.Context, _ string, s rotation.Step) error {
		if s == rotation.StepClaim {
			return errCrash
		}
		return nil
	}})
	if _, err := r.Rotate(ctx, "key-000", "manual"); !errors.Is(err, errCrash) {
		t.Fatal(err)
	}
	if _, err := db.Collection(testPool.BackupsCollection).DeleteOne(ctx, bson.M{"_id": "backup-000"}); err != nil {
		t.Fatal(err)
	}
	clean := newRotator(t, db, rotation.Config{})
	rep, err := clean.Recover(ctx)
	if err != nil || rep.Dropped != 1 {
		t.Fatalf("recover: %+v, %v; want one dropped claim", rep, err)
	}
	res, err := clean.Rotate(ctx, "key-000", "manual")
	if err != nil || res.Outcome != rotation.Rotated || res.NewKeyID != "backup-001" {
		t.Fatalf("rotate after drop: %+v, %v", res, err)
	}
	checkInvariants(t, db, 2)
}

func TestEnsureIndexesIsIdempotent(t *testing.T) {
	db := mongotest.New(t).Database
	r := newRotator(t, db, rotation.Config{})
	for range 2 {
		if err := r.EnsureIndexes(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	probs, err := r.Verify(context.Background())
	if err != nil || len(probs) != 0 {
		t.Fatalf("verify on empty pool: %v, %v", probs, err)
	}
}

func TestVerifyFindsBrokenState(t *testing.T) {
	ctx := context.Background()
	db := mongotest.New(t).Database
	seed(t, db, 2, 1, 1)
	r := newRotator(t, db, rotation.Config{})
	if _, err := db.Collection(testPool.BindingsCollection).InsertOne(ctx, bson.M{"_id": "b-x", testPool.BindingKeyField: "ghost"}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Collection(testPool.KeysCollection).InsertOne(ctx, bson.M{"_id": "twin", "apiKey": "sk-live-key-secret-000000"}); err != nil {
		t.Fatal(err)
	}
	probs, err := r.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]bool{}
	for _, p := range probs {
		kinds[p.Kind] = true
		if want := "sk-live-key-secret-000000"; contains(p.Detail, want) {
			t.Errorf("verify printed a full secret: %s", p)
		}
	}
	// TTL detection is tested in package history: FerretDB v1 has no TTL indexes.
	for _, k := range []string{"orphan_binding", "duplicate_secret"} {
		if !kinds[k] {
			t.Errorf("verify missed %s; got %v", k, probs)
		}
	}
}

func TestPresets(t *testing.T) {
	tests := []struct {
		name, keys, field string
		wantErr           bool
	}{
		{"openhands", "openhands_keys", "openhandsKeyId", false},
		{"factory", "factory_keys", "factoryKeyId", false},
		{"nope", "", "", true},
	}
	for _, tt := range tests {
		p, err := rotation.Preset(tt.name)
		if (err != nil) != tt.wantErr {
			t.Fatalf("%s: err %v", tt.name, err)
		}
		if err == nil && (p.KeysCollection != tt.keys || p.BindingKeyField != tt.field || p.Validate() != nil) {
			t.Errorf("%s: %+v", tt.name, p)
		}
	}
	bad := testPool
	bad.BackupsCollection = bad.KeysCollection
	if bad.Validate() == nil {
		t.Error("keys and backups in one collection accepted")
	}
}

// A rotation left unfinished before it moved its bindings, whose new key is
// then rotated again by someone else, must not end with bindings on the
// deleted key (found by TestSIGKILLDuringRotations).
func TestRotateKeyWhoseArrivalIsUnfinished(t *testing.T) {
	ctx := context.Background()
	for _, k := range []rotation.Step{rotation.StepClaim, rotation.StepInsertKey, rotation.StepMarkBackup} {
		t.Run("first crashes after "+k.String(), func(t *testing.T) {
			db := mongotest.New(t).Database
			seed(t, db, 3, 3, 2)
			crashing := newRotator(t, db, rotation.Config{AfterStep: func(_ context.Context, _ string, s rotation.Step) error {
				if s == k {
					return errCrash
				}
				return nil
			}})
			first, err := crashing.Rotate(ctx, "key-001", "manual")
			if !errors.Is(err, errCrash) {
				t.Fatalf("rotate: %v, want simulated crash", err)
			}
			other := newRotator(t, db, rotation.Config{})
			if k == rotation.StepClaim {
				// The new key is not live yet: nothing to rotate.
				res, err := other.Rotate(ctx, first.NewKeyID, "manual")
				if err != nil || res.Outcome != rotation.NotFound {
					t.Fatalf("rotate %s: %+v, %v", first.NewKeyID, res, err)
				}
			} else {
				res, err := other.Rotate(ctx, first.NewKeyID, "manual")
				if err != nil || res.Outcome != rotation.Rotated {
					t.Fatalf("rotate %s: %+v, %v", first.NewKeyID, res, err)
				}
				// The second rotation finished the first on its way.
				if n := count(t, db, testPool.BindingsCollection, bson.M{testPool.BindingKeyField: res.NewKeyID}); n != 2 {
					t.Errorf("%d bindings on %s, want the 2 of key-001", n, res.NewKeyID)
				}
			}
			if _, err := other.Recover(ctx); err != nil {
				t.Fatal(err)
			}
			checkInvariants(t, db, 3)
		})
	}
}
