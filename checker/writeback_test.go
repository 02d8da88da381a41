package checker_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/checker"
	"github.com/spendchecker/spendchecker/internal/fakeupstream"
	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/spend"
)

// updateFilters records the filter of every update statement sent on a
// client: the write-back's, as the store receives them.
type updateFilters struct {
	mu      sync.Mutex
	filters []bson.Raw
}

func (u *updateFilters) monitor() *event.CommandMonitor {
	return &event.CommandMonitor{Started: func(_ context.Context, e *event.CommandStartedEvent) {
		if e.CommandName != "update" {
			return
		}
		stmts, err := e.Command.LookupErr("updates")
		if err != nil {
			return
		}
		vals, _ := stmts.Array().Values()
		u.mu.Lock()
		defer u.mu.Unlock()
		for _, v := range vals {
			u.filters = append(u.filters, v.Document().Lookup("q").Document())
		}
	}}
}

func (u *updateFilters) all() []bson.Raw {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]bson.Raw(nil), u.filters...)
}

// writeBackWorld is a pool of n keys on a store whose point lookups by _id
// are indexed (on the embedded store: embedded.Store.IndexIDs, as the bench
// does), with a checker at epoch 3 whose client records its update filters.
func writeBackWorld(tb testing.TB, n int, clock clockwork.Clock, mutate func(*checker.Config)) (*mongo.Database, *updateFilters, *checker.Checker) {
	tb.Helper()
	ctx := context.Background()
	mdb := mongotest.New(tb)
	up := fakeupstream.New("openhands")
	tb.Cleanup(up.Close)
	keys := map[string]float64{}
	for i := range n {
		keys[fmt.Sprintf("k%05d", i)] = float64(i%9) + 0.5
	}
	seedPool(tb, mdb.Database, up, openhands, keys, 0)
	if mdb.Store != nil {
		if err := mdb.Store.IndexIDs(ctx, mdb.Name); err != nil {
			tb.Fatal(err)
		}
	}
	rec := &updateFilters{}
	db := mdb.NewClient(tb, options.Client().SetMonitor(rec.monitor())).Database(mdb.Name)
	prov, err := spend.New("openhands", up.URL, nil)
	if err != nil {
		tb.Fatal(err)
	}
	cfg := checker.Config{
		Pools:    []checker.Pool{{Pool: openhands, Provider: prov, Threshold: 9.95}},
		Instance: "test-1", Clock: clock, Epoch: func() int64 { return 3 },
	}
	if mutate != nil {
		mutate(&cfg)
	}
	chk, err := checker.New(db, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if err := chk.EnsureIndexes(ctx); err != nil {
		tb.Fatal(err)
	}
	return mdb.Database, rec, chk
}

// scans says whether the store would scan the collection to find the
// documents filter selects: FerretDB v1 reports whether it pushed the filter
// down to SQL; MongoDB a COLLSCAN stage.
func scans(t *testing.T, db *mongo.Database, coll string, filter bson.Raw) (bool, string) {
	t.Helper()
	var plan bson.Raw
	err := db.RunCommand(context.Background(), bson.D{{Key: "explain", Value: bson.D{{Key: "find", Value: coll}, {Key: "filter", Value: filter}}}}).Decode(&plan)
	if err != nil {
		t.Fatal(err)
	}
	s := plan.String()
	if v, err := plan.LookupErr("filterPushdown"); err == nil {
		// FerretDB v1: a filter pushed down is an SQL lookup by _id; whether
		// SQLite then SEARCHes depends on an index on _id, which only an
		// in-process store can be given (a -race binary shares a store
		// process: mongotest), not on the filter.
		return !v.Boolean(), s
	}
	return strings.Contains(s, "COLLSCAN"), s
}

// Every update of the write-back finds its key by _id, on MongoDB and on
// FerretDB v1 alike: no statement makes the store scan the keys (with the
// fence in the filter FerretDB v1 reads every key for each update, and a
// write-back of N keys costs O(N²)).
func TestWriteBackLooksKeysUpByID(t *testing.T) {
	db, rec, chk := writeBackWorld(t, 3, clockwork.NewFakeClockAt(t0), nil)
	if _, err := chk.Cycle(context.Background()); err != nil {
		t.Fatal(err)
	}
	filters := rec.all()
	if len(filters) != 3 {
		t.Fatalf("%d update statements, want one for each of the 3 keys", len(filters))
	}
	for _, f := range filters {
		if scan, plan := scans(t, db, openhands.KeysCollection, f); scan {
			t.Errorf("the update filtered by %s scans the keys: %s", f, plan)
		}
	}
}

// BenchmarkWriteBack times a full cycle over a pool of N keys, every key
// due and written back, per key: flat in N when each update is a point
// write, growing with N when each one scans the keys. fence=read is what
// the checker does on FerretDB v1; fence=filter puts the fence in the
// filter there (kept small: it grows with N²).
func BenchmarkWriteBack(b *testing.B) {
	for _, bc := range []struct {
		fence checker.WriteFence
		name  string
		keys  []int
	}{
		{checker.FenceOnRead, "read", []int{250, 1000}},
		{checker.FenceInFilter, "filter", []int{250, 500}},
	} {
		for _, n := range bc.keys {
			b.Run(fmt.Sprintf("fence=%s/keys=%d", bc.name, n), func(b *testing.B) {
				clock := clockwork.NewFakeClockAt(t0)
				_, _, chk := writeBackWorld(b, n, clock, func(c *checker.Config) {
					c.Concurrency = 16
					c.WriteFence = bc.fence
				})
				b.ResetTimer()
				for range b.N {
					clock.Advance(time.Minute)
					start := time.Now()
					sum, err := chk.Cycle(context.Background())
					if err != nil || sum.Total().Checked != n || len(sum.Total().Errors) != 0 {
						b.Fatalf("%+v, %v", sum.Total(), err)
					}
					b.ReportMetric(float64(time.Since(start).Microseconds())/float64(n), "µs/key")
				}
			})
		}
	}
}
