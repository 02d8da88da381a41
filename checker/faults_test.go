package checker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/checker"
	"github.com/spendchecker/spendchecker/internal/fakeupstream"
	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/spend"
)

// Faults at the store boundary during a cycle: the k-th command is cut off
// before it reaches the store or after it ran (reply lost), for every k.
// The next cycle completes the work: the over-threshold key rotated exactly
// once with one history record, every key's spend written, verify clean.
func TestStoreFaultsDuringCycle(t *testing.T) {
	if testing.Short() {
		t.Skip("a fresh store for each fault at each command")
	}
	ctx := context.Background()
	keys := map[string]float64{"over": 10.2, "under-1": 1, "under-2": 2}
	type env struct {
		proxy *mongotest.Proxy
		s     setup
	}
	build := func(t *testing.T) env {
		s, proxy := proxiedSetup(t, keys, 2, func(c *checker.Config) { c.Adaptive, c.Instance = true, "faulty" })
		if err := s.chk.EnsureIndexes(ctx); err != nil {
			t.Fatal(err)
		}
		return env{proxy, s}
	}
	var steps []string
	{
		e := build(t)
		e.proxy.ResetCommands()
		if sum, err := e.s.chk.Cycle(ctx); err != nil || sum.Total().Rotated != 1 {
			t.Fatalf("clean cycle: %+v %v", sum.Total(), err)
		}
		steps = e.proxy.Commands()
		t.Logf("a cycle sends %d data commands: %v", len(steps), steps)
	}
	for k := range steps {
		for _, when := range []mongotest.Fault{mongotest.Before, mongotest.After} {
			t.Run(fmt.Sprintf("%02d %s %s", k+1, when, steps[k]), func(t *testing.T) {
				e := build(t)
				e.proxy.FailCommand(k+1, when)
				sum, err := e.s.chk.Cycle(ctx)
				t.Logf("faulty cycle: %+v, err %v", sum.Total(), err)
				// The next cycle: every key is due again if its check was lost,
				// or planned later; "over" must be gone either way.
				sum, err = e.s.chk.Cycle(ctx)
				if err != nil {
					t.Fatalf("next cycle: %v", err)
				}
				if got := sum.Total(); got.Failed != 0 || got.RotateErrors != 0 || len(got.Errors) != 0 {
					t.Errorf("next cycle not clean: %+v", got)
				}
				kc := e.s.db.Collection(openhands.KeysCollection)
				if n := countDocs(t, kc, bson.M{}); n != 3 {
					t.Errorf("pool size %d, want 3", n)
				}
				if n := countDocs(t, kc, bson.M{"_id": "over"}); n != 0 {
					t.Error("the over-threshold key is still in the pool")
				}
				if n := countDocs(t, e.s.db.Collection(openhands.HistoryCollection), bson.M{"keyId": "over"}); n != 1 {
					t.Errorf("%d history records for the over-threshold key, want 1", n)
				}
				if n := countDocs(t, kc, bson.M{"totalSpend": bson.M{"$exists": true}}); n != 3 {
					t.Errorf("%d keys with spend written, want 3", n)
				}
				verifyClean(t, e.s)
			})
		}
	}
}

// proxiedSetup seeds keys (and backups) into a fresh store, as newSetup
// does, and builds a checker that reaches the store through a proxy able
// to cut each command (mongotest.Proxy); mutate completes its
// configuration.
func proxiedSetup(t *testing.T, keys map[string]float64, backups int, mutate func(*checker.Config)) (setup, *mongotest.Proxy) {
	t.Helper()
	mdb := mongotest.New(t)
	up := fakeupstream.New("openhands")
	t.Cleanup(up.Close)
	seedPool(t, mdb.Database, up, openhands, keys, backups)
	proxy := mdb.Proxy(t)
	db := mdb.NewClient(t, options.Client().ApplyURI(proxy.URI()).SetTimeout(time.Minute)).Database(mdb.Name)
	prov, err := spend.New("openhands", up.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := checker.Config{Pools: []checker.Pool{{Pool: openhands, Provider: prov, Threshold: 9.95}}}
	mutate(&cfg)
	chk, err := checker.New(db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return setup{db: mdb.Database, up: up, chk: chk}, proxy
}
