package refill_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/spendchecker/spendchecker/internal/fakeupstream"
	"github.com/spendchecker/spendchecker/internal/fixture"
	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/keyadmin"
	"github.com/spendchecker/spendchecker/refill"
	"github.com/spendchecker/spendchecker/rotation"
)

const mgmtKey = "sk-or-v1-mgmt-0123456789abcdef0123456789abcdef"

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

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

// world is one pool on the embedded store next to a simulated upstream
// with a management API.
type world struct {
	t     *testing.T
	db    *mongo.Database
	mdb   *mongotest.DB
	pool  rotation.Pool
	up    *fakeupstream.Server
	kind  string
	clock *clock
	// timeout is the management client's request timeout.
	timeout time.Duration
}

func noWait(context.Context, time.Duration) error { return nil }

// newWorld seeds a pool of keys keys and backups unused backups.
func newWorld(t *testing.T, kind string, keys, backups int) *world {
	t.Helper()
	mdb := mongotest.New(t)
	pool, _ := rotation.Preset("openhands")
	up := fakeupstream.New(kind)
	t.Cleanup(up.Close)
	up.EnableAdmin(mgmtKey)
	// A minute per request: the upstream answers at once, but a loaded
	// machine may not run it at once.
	w := &world{t: t, db: mdb.Database, mdb: mdb, pool: pool, up: up, kind: kind, clock: &clock{now: t0}, timeout: time.Minute}
	var f fixture.Pool
	for i := range keys {
		f.Keys = append(f.Keys, fixture.Key{ID: fmt.Sprintf("k%d", i), Secret: up.AddManagedKey(fmt.Sprintf("key-%d", i), "", 10).Secret})
	}
	for i := range backups {
		f.Backups = append(f.Backups, fixture.Backup{ID: fmt.Sprintf("b%d", i), Secret: up.AddManagedKey(fmt.Sprintf("backup-%d", i), "", 10).Secret})
	}
	f.CreatedAt = t0.Add(-time.Hour)
	if err := fixture.Write(context.Background(), w.db, pool, f); err != nil {
		t.Fatal(err)
	}
	return w
}

// refiller is one process's Refiller on its own connection; cfg's zero
// fields take the world's.
func (w *world) refiller(cfg refill.Config) *refill.Refiller {
	w.t.Helper()
	cfg.Pool = w.pool
	if cfg.Upstream == nil {
		c, err := keyadmin.New(keyadmin.Config{Kind: w.kind, BaseURL: w.up.URL, AdminKey: mgmtKey, Wait: noWait, Timeout: w.timeout})
		if err != nil {
			w.t.Fatal(err)
		}
		cfg.Upstream = c
	}
	if cfg.Now == nil {
		cfg.Now = w.clock.Now
	}
	if cfg.Owner == "" {
		cfg.Owner = "refiller"
	}
	if cfg.Limit == 0 {
		cfg.Limit = 10
	}
	db := w.mdb.NewClient(w.t).Database(w.mdb.Name)
	r, err := refill.New(db, cfg)
	if err != nil {
		w.t.Fatal(err)
	}
	if err := r.EnsureIndexes(context.Background()); err != nil {
		w.t.Fatal(err)
	}
	return r
}

// slotDoc is a refill journal slot as the test reads it.
type slotDoc struct {
	ID      string   `bson:"_id"`
	Name    string   `bson:"name"`
	State   string   `bson:"state"`
	Secret  string   `bson:"secret"`
	Orphans []string `bson:"orphanIds"`
	Limit   float64  `bson:"limit"`
	Day     string   `bson:"day"`
}

func (w *world) slots() []slotDoc {
	w.t.Helper()
	cur, err := w.db.Collection(refill.Collection).Find(context.Background(), bson.M{"kind": "slot"})
	if err != nil {
		w.t.Fatal(err)
	}
	var out []slotDoc
	if err := cur.All(context.Background(), &out); err != nil {
		w.t.Fatal(err)
	}
	return out
}

type backupDoc struct {
	ID         string `bson:"_id"`
	APIKey     string `bson:"apiKey"`
	IsUsed     bool   `bson:"isUsed"`
	UpstreamID string `bson:"upstreamKeyId"`
}

func (w *world) backups() map[string]backupDoc {
	w.t.Helper()
	cur, err := w.db.Collection(w.pool.BackupsCollection).Find(context.Background(), bson.M{})
	if err != nil {
		w.t.Fatal(err)
	}
	var docs []backupDoc
	if err := cur.All(context.Background(), &docs); err != nil {
		w.t.Fatal(err)
	}
	out := map[string]backupDoc{}
	for _, d := range docs {
		out[d.ID] = d
	}
	return out
}

func (w *world) unused() int {
	n := 0
	for _, b := range w.backups() {
		if !b.IsUsed {
			n++
		}
	}
	return n
}

// checkInvariants: never two keys for one slot; every key created under a
// slot's name is its backup (enabled) or disabled and recorded as the
// slot's orphan; no backup disabled upstream. settled: every slot is
// settled and no secret is left in the journal.
func (w *world) checkInvariants(settled bool) {
	w.t.Helper()
	slots := map[string]slotDoc{}
	for _, s := range w.slots() {
		slots[s.Name] = s
		if n := w.up.Creates(s.Name); n > 1 {
			w.t.Errorf("slot %s: %d keys created", s.ID, n)
		}
		if settled && (s.State == "pending" || s.Secret != "") {
			w.t.Errorf("slot %s unsettled: state %s, secret left %v", s.ID, s.State, s.Secret != "")
		}
	}
	backups := w.backups()
	disabled := map[string]bool{}
	for _, k := range w.up.ManagedKeys() {
		disabled[k.Secret] = k.Disabled || k.Deleted
		if !strings.HasPrefix(k.Name, "spendchecker-") {
			continue
		}
		s, ok := slots[k.Name]
		if !ok {
			w.t.Errorf("key %s created under no journaled slot", k.Name)
			continue
		}
		b, isBackup := backups[k.Name]
		switch {
		case isBackup && b.APIKey == k.Secret:
			if k.Disabled || k.Deleted {
				w.t.Errorf("backup %s disabled or gone upstream", k.Name)
			}
			if settled && s.State != "done" {
				w.t.Errorf("slot %s has its backup but is %s", s.ID, s.State)
			}
			if b.UpstreamID != k.ID {
				w.t.Errorf("backup %s: upstreamKeyId %q, want %q", k.Name, b.UpstreamID, k.ID)
			}
		case !settled, k.Deleted:
		case !k.Disabled:
			w.t.Errorf("key %s (slot %s, %s) lost: no backup holds it and it is enabled", k.Name, s.ID, s.State)
		default:
			found := false
			for _, id := range s.Orphans {
				found = found || id == k.ID
			}
			if !found || s.State != "orphaned" {
				w.t.Errorf("key %s disabled but not recorded as slot %s's orphan (%s, %v)", k.Name, s.ID, s.State, s.Orphans)
			}
		}
	}
	for _, b := range backups {
		if !b.IsUsed && disabled[b.APIKey] {
			w.t.Errorf("unused backup %s disabled upstream", b.ID)
		}
	}
	if settled {
		n, _ := w.db.Collection(refill.Collection).CountDocuments(context.Background(), bson.M{"secret": bson.M{"$exists": true}})
		if n > 0 {
			w.t.Errorf("%d journal documents still hold a secret", n)
		}
	}
}

// settle runs passes, moving the clock past the settle delay and any
// backoff between them, until two in a row change nothing.
func settle(t *testing.T, w *world, r *refill.Refiller) refill.Report {
	t.Helper()
	var total refill.Report
	idle := 0
	for range 10 {
		rep, err := r.Run(context.Background())
		if err != nil {
			t.Fatalf("run: %v", err)
		}
		add(&total, rep)
		// Two idle passes an hour apart: past every backoff.
		if idle++; rep.Created+rep.Adopted+rep.Orphaned+rep.Absent+rep.Failed > 0 || rep.Open > 0 {
			idle = 0
		}
		if idle == 2 {
			return total
		}
		w.clock.Advance(refill.DefaultSettleAfter + time.Hour)
	}
	t.Fatal("passes keep finding work")
	return total
}

// add adds a pass's counts and events to total.
func add(total *refill.Report, rep refill.Report) {
	total.Created += rep.Created
	total.Adopted += rep.Adopted
	total.Orphaned += rep.Orphaned
	total.Absent += rep.Absent
	total.Failed += rep.Failed
	total.Capped = total.Capped || rep.Capped
	total.Events = append(total.Events, rep.Events...)
}
