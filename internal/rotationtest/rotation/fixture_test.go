package rotation_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/spendchecker/spendchecker/internal/fixture"
	"github.com/spendchecker/spendchecker/rotation"
)

var testPool, _ = rotation.Preset("openhands")

// seed fills a pool with keys (each with bindings) and backups, the way the
// proxy writes them, and creates the rotator's indexes.
func seed(t testing.TB, db *mongo.Database, keys, backups, bindingsPerKey int) {
	t.Helper()
	ctx := context.Background()
	f := fixture.Pool{Bindings: bindingsPerKey, CreatedAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	for i := range keys {
		f.Keys = append(f.Keys, fixture.Key{ID: fmt.Sprintf("key-%03d", i), Secret: fmt.Sprintf("sk-live-key-secret-%06d", i), Fields: bson.M{
			"tokensUsed": int64(100 + i), "requestsCount": int64(i), "totalSpend": 9.99, "proxyOnlyField": "kept"}})
	}
	for i := range backups {
		f.Backups = append(f.Backups, fixture.Backup{ID: fmt.Sprintf("backup-%03d", i), Secret: fmt.Sprintf("sk-live-backup-secret-%06d", i)})
	}
	if err := fixture.Write(ctx, db, testPool, f); err != nil {
		t.Fatal(err)
	}
	r := newRotator(t, db, rotation.Config{})
	if err := r.EnsureIndexes(ctx); err != nil {
		t.Fatal(err)
	}
}

func newRotator(t testing.TB, db *mongo.Database, opts rotation.Config) *rotation.Rotator {
	t.Helper()
	if opts.Owner == "" {
		opts.Owner = "test"
	}
	r, err := rotation.New(db, testPool, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func count(t testing.TB, db *mongo.Database, coll string, filter any) int64 {
	t.Helper()
	n, err := db.Collection(coll).CountDocuments(context.Background(), filter)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// checkInvariants asserts the rotation guarantees by querying the store:
// pool size, backups consumed once and live, one history record and one
// archive per finished rotation, bindings on live keys, nothing unfinished.
func checkInvariants(t testing.TB, db *mongo.Database, wantKeys int64) {
	t.Helper()
	ctx := context.Background()
	if n := count(t, db, testPool.KeysCollection, bson.M{}); n != wantKeys {
		t.Errorf("pool size %d, want %d", n, wantKeys)
	}
	done := count(t, db, rotation.JournalCollection, bson.M{"state": "done"})
	if n := count(t, db, rotation.JournalCollection, bson.M{}); n != done {
		t.Errorf("%d journal entries, %d done", n, done)
	}
	if n := count(t, db, testPool.HistoryCollection, bson.M{}); n != done {
		t.Errorf("%d history records for %d rotations", n, done)
	}
	// One archive per rotation (later versions of a changed key and removed
	// late inserts are archived under ids of their own).
	if n := count(t, db, rotation.ArchiveCollection, bson.M{"_id": bson.M{"$not": bson.M{"$regex": "/"}}}); n != done {
		t.Errorf("%d archived keys for %d rotations", n, done)
	}
	if n := count(t, db, testPool.BackupsCollection, bson.M{"isUsed": true}); n != done {
		t.Errorf("%d backups used for %d rotations", n, done)
	}
	// Every used backup is a live key, or was itself rotated away since.
	cur, err := db.Collection(testPool.BackupsCollection).Find(ctx, bson.M{"isUsed": true})
	if err != nil {
		t.Fatal(err)
	}
	for cur.Next(ctx) {
		id := cur.Current.Lookup("_id").StringValue()
		live := count(t, db, testPool.KeysCollection, bson.M{"_id": id})
		again := count(t, db, rotation.JournalCollection, bson.M{"oldKeyId": id})
		if live == 0 && again == 0 {
			t.Errorf("used backup %s is not a live key", id)
		}
	}
	probs, err := newRotator(t, db, rotation.Config{}).Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range probs {
		// A LiteLLM user shared by keys is a fact about the pool that verify
		// reports, not a broken guarantee.
		if p.Kind != "shared_budget_user" {
			t.Errorf("verify: %s", p)
		}
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
