package rotation_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/spendchecker/spendchecker/rotation"
)

var testPool, _ = rotation.Preset("openhands")

// seed fills a pool with keys (each with bindings) and backups, the way the
// proxy writes them, and creates the rotator's indexes.
func seed(t testing.TB, db *mongo.Database, keys, backups, bindingsPerKey int) {
	t.Helper()
	ctx := context.Background()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var kd, bd, bind []any
	for i := range keys {
		id := fmt.Sprintf("key-%03d", i)
		kd = append(kd, bson.M{
			"_id": id, "apiKey": fmt.Sprintf("sk-live-key-secret-%06d", i), "status": "healthy",
			"tokensUsed": int64(100 + i), "requestsCount": int64(i), "totalSpend": 9.99, "createdAt": base,
			"proxyOnlyField": "kept",
		})
		for j := range bindingsPerKey {
			bind = append(bind, bson.M{
				"_id": fmt.Sprintf("bind-%03d-%d", i, j), "proxyId": fmt.Sprintf("proxy-%d", j),
				testPool.BindingKeyField: id, "priority": int32(j), "isActive": true, "createdAt": base,
			})
		}
	}
	for i := range backups {
		bd = append(bd, bson.M{
			"_id": fmt.Sprintf("backup-%03d", i), "apiKey": fmt.Sprintf("sk-live-backup-secret-%06d", i),
			"isUsed": false, "activated": false, "createdAt": base.Add(time.Duration(i) * time.Second),
		})
	}
	insert := func(coll string, docs []any) {
		if len(docs) == 0 {
			return
		}
		if _, err := db.Collection(coll).InsertMany(ctx, docs); err != nil {
			t.Fatalf("seed %s: %v", coll, err)
		}
	}
	insert(testPool.KeysCollection, kd)
	insert(testPool.BackupsCollection, bd)
	insert(testPool.BindingsCollection, bind)
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
		t.Errorf("verify: %s", p)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
