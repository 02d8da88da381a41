package retire_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/spendchecker/spendchecker/internal/fakeupstream"
	"github.com/spendchecker/spendchecker/internal/fixture"
	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/keyadmin"
	"github.com/spendchecker/spendchecker/retire"
	"github.com/spendchecker/spendchecker/rotation"
)

const mgmtKey = "sk-or-v1-mgmt-0123456789abcdef0123456789abcdef"

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// clock is a fake clock tests move by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// world is one pool on the embedded store whose keys and backups were made
// on a simulated upstream with a management API.
type world struct {
	t     *testing.T
	db    *mongo.Database
	mdb   *mongotest.DB
	pool  rotation.Pool
	up    *fakeupstream.Server
	admin *keyadmin.Client
	clock *clock
	rot   *rotation.Rotator
	// old are the secrets of the keys the world rotated (by key id).
	old map[string]string
}

func noWait(context.Context, time.Duration) error { return nil }

// newWorld seeds keys and as many backups, all created on the upstream
// (OpenRouter's hash in upstreamKeyId), and rotates rotate of the keys.
func newWorld(t *testing.T, kind string, keys, rotate int) *world {
	t.Helper()
	ctx := context.Background()
	mdb := mongotest.New(t)
	pool, _ := rotation.Preset("openhands")
	up := fakeupstream.New(kind)
	t.Cleanup(up.Close)
	up.EnableAdmin(mgmtKey)
	admin, err := keyadmin.New(keyadmin.Config{Kind: kind, BaseURL: up.URL, AdminKey: mgmtKey, Wait: noWait})
	if err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, db: mdb.Database, mdb: mdb, pool: pool, up: up, admin: admin, clock: &clock{now: t0}, old: map[string]string{}}
	var f fixture.Pool
	for i := range keys {
		k := up.AddManagedKey(fmt.Sprintf("key-%d", i), "", 10)
		f.Keys = append(f.Keys, fixture.Key{ID: fmt.Sprintf("k%d", i), Secret: k.Secret, Fields: bson.M{rotation.FieldUpstreamKeyID: k.ID}})
		b := up.AddManagedKey(fmt.Sprintf("backup-%d", i), "", 10)
		f.Backups = append(f.Backups, fixture.Backup{ID: fmt.Sprintf("b%d", i), Secret: b.Secret})
	}
	f.CreatedAt = t0.Add(-time.Hour)
	if err := fixture.Write(ctx, w.db, pool, f); err != nil {
		t.Fatal(err)
	}
	for _, b := range up.ManagedKeys() {
		// Backups carry their upstream id, handed on to the key they become.
		_, _ = w.db.Collection(pool.BackupsCollection).UpdateOne(ctx, bson.M{rotation.FieldAPIKey: b.Secret},
			bson.M{"$set": bson.M{rotation.FieldUpstreamKeyID: b.ID}})
	}
	w.rot, err = rotation.New(w.db, pool, rotation.Config{Owner: "rotator", Now: w.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.rot.EnsureIndexes(ctx); err != nil {
		t.Fatal(err)
	}
	// Retire is turned on (its start marker written) before the rotations.
	w.retirer(retire.Config{})
	for i := range rotate {
		w.rotateKey(fmt.Sprintf("k%d", i))
	}
	return w
}

// rotateKey rotates one key and remembers its secret.
func (w *world) rotateKey(id string) {
	w.t.Helper()
	ctx := context.Background()
	var doc struct {
		APIKey string `bson:"apiKey"`
	}
	if err := w.db.Collection(w.pool.KeysCollection).FindOne(ctx, bson.M{"_id": id}).Decode(&doc); err != nil {
		w.t.Fatal(err)
	}
	res, err := w.rot.Rotate(ctx, id, "threshold")
	if err != nil || res.Outcome != rotation.Rotated {
		w.t.Fatalf("rotate %s: %v %v", id, res.Outcome, err)
	}
	w.old[id] = doc.APIKey
}

// retirer is one process's Retirer on its own connection.
func (w *world) retirer(cfg retire.Config) *retire.Retirer {
	w.t.Helper()
	cfg.Pool = w.pool
	if cfg.Upstream == nil {
		cfg.Upstream = w.admin
	}
	if cfg.Now == nil {
		cfg.Now = w.clock.Now
	}
	if cfg.Owner == "" {
		cfg.Owner = "retirer"
	}
	db := w.mdb.NewClient(w.t).Database(w.mdb.Name)
	r, err := retire.New(db, cfg)
	if err != nil {
		w.t.Fatal(err)
	}
	if err := r.EnsureIndexes(context.Background()); err != nil {
		w.t.Fatal(err)
	}
	return r
}

// archive reads the archive document of the rotation of key id.
func (w *world) archive(id string) bson.M {
	w.t.Helper()
	var doc bson.M
	if err := w.db.Collection(rotation.ArchiveCollection).FindOne(context.Background(), bson.M{"sourceId": id, "reason": bson.M{"$ne": "late_insert"}}).Decode(&doc); err != nil {
		w.t.Fatalf("archive of %s: %v", id, err)
	}
	return doc
}

// liveSecrets are the secrets of every key and unused backup.
func (w *world) liveSecrets() map[string]bool {
	w.t.Helper()
	ctx := context.Background()
	live := map[string]bool{}
	for coll, f := range map[string]bson.M{w.pool.KeysCollection: {}, w.pool.BackupsCollection: {rotation.FieldIsUsed: bson.M{"$ne": true}}} {
		cur, err := w.db.Collection(coll).Find(ctx, f)
		if err != nil {
			w.t.Fatal(err)
		}
		var docs []bson.M
		if err := cur.All(ctx, &docs); err != nil {
			w.t.Fatal(err)
		}
		for _, d := range docs {
			live[d[rotation.FieldAPIKey].(string)] = true
		}
	}
	return live
}

// checkInvariants: no live key disabled upstream, no key disabled twice,
// and every old key the world rotated disabled and recorded as such when
// wantRetired.
func (w *world) checkInvariants(wantRetired bool) {
	w.t.Helper()
	live := w.liveSecrets()
	bySecret := map[string]fakeupstream.ManagedKey{}
	for _, k := range w.up.ManagedKeys() {
		bySecret[k.Secret] = k
		if (k.Disabled || k.Deleted) && live[k.Secret] {
			w.t.Errorf("live key %s (%s) disabled upstream", k.Name, k.ID)
		}
		if k.Disables > 1 {
			w.t.Errorf("key %s disabled %d times", k.Name, k.Disables)
		}
	}
	if !wantRetired {
		return
	}
	for id, secret := range w.old {
		a := w.archive(id)
		if a[retire.FieldOutcome] != retire.OutcomeDisabled || a[retire.FieldRetiredAt] == nil {
			w.t.Errorf("rotated key %s: archive records %v at %v, want disabled", id, a[retire.FieldOutcome], a[retire.FieldRetiredAt])
		}
		if k := bySecret[secret]; !k.Disabled || k.Disables != 1 {
			w.t.Errorf("rotated key %s upstream: disabled %v, %d times", id, k.Disabled, k.Disables)
		}
	}
}

// runUntilSettled runs passes (at most 10) until one does nothing.
func runUntilSettled(t *testing.T, r *retire.Retirer) retire.Report {
	t.Helper()
	var total retire.Report
	for range 10 {
		rep, err := r.Run(context.Background())
		if err != nil {
			t.Fatalf("run: %v", err)
		}
		total.Retired += rep.Retired
		total.NotFound += rep.NotFound
		total.Skipped += rep.Skipped
		total.Failed += rep.Failed
		total.Deleted += rep.Deleted
		total.Reenabled += rep.Reenabled
		if rep.Retired+rep.NotFound+rep.Skipped+rep.Failed+rep.Deleted+rep.Reenabled+rep.Waiting == 0 {
			return total
		}
	}
	t.Fatal("passes keep finding work")
	return total
}

// newKey adds a live key id whose secret was made on the upstream (with its
// hash in upstreamKeyId) and returns its id.
func newKey(t *testing.T, w *world, id string) string {
	t.Helper()
	k := w.up.AddManagedKey(id, "", 10)
	b := w.up.AddManagedKey(id+"-backup", "", 10)
	ctx := context.Background()
	if _, err := w.db.Collection(w.pool.KeysCollection).InsertOne(ctx, bson.M{"_id": id, rotation.FieldAPIKey: k.Secret, rotation.FieldStatus: rotation.StatusHealthy, rotation.FieldUpstreamKeyID: k.ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.db.Collection(w.pool.BackupsCollection).InsertOne(ctx, bson.M{"_id": id + "-b", rotation.FieldAPIKey: b.Secret, rotation.FieldIsUsed: false, rotation.FieldUpstreamKeyID: b.ID, rotation.FieldCreatedAt: w.clock.Now()}); err != nil {
		t.Fatal(err)
	}
	return id
}
