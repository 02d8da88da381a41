package checker_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/spendchecker/spendchecker/checker"
	"github.com/spendchecker/spendchecker/internal/fakeupstream"
	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/spend"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Adversarial (docs/design.md "Adaptive cadence"): a stored spendRate that is NaN
// or +Inf (written by hand, or by another writer) makes the planner plan
// the key at the minimum interval (NaN × burst, headroom / Inf) and store
// the same non-finite rate again (max(NaN, x) is NaN), so the key is
// polled every minimum interval for ever instead of being planned from
// its headroom like an idle key: an 180× cost blow-up for that key that
// never heals. It should be treated as an unknown rate.
func TestAdv13_NonFiniteStoredRateNeverHeals(t *testing.T) {
	ctx := context.Background()
	for _, bad := range []float64{math.NaN(), math.Inf(1)} {
		t.Run(func() string {
			if math.IsNaN(bad) {
				return "NaN"
			}
			return "Inf"
		}(), func(t *testing.T) {
			clock := clockwork.NewFakeClockAt(t0)
			s := adaptiveSetup(t, map[string]float64{"k": 1}, clock, nil)
			// FerretDB v1 refuses non-finite doubles (Inf) or drops the
			// connection (NaN); MongoDB stores them.
			if _, err := s.db.Collection(openhands.KeysCollection).UpdateOne(ctx, bson.M{"_id": "k"}, bson.M{"$set": bson.M{
				"totalSpend": 1.0, "spendRate": bad, "lastSpendCheck": t0.Add(-10 * time.Minute), "spendEpoch": int64(3)}}); err != nil {
				t.Skipf("this store cannot hold spendRate %v (MongoDB can): %v", bad, err)
			}
			due := 0
			for range 12 { // two minutes, a cycle every 10 s; the key spends nothing
				sum, err := s.chk.Cycle(ctx)
				if err != nil {
					t.Fatal(err)
				}
				due += sum.Total().Due
				clock.Advance(10 * time.Second)
			}
			// An idle key 8.95 under its threshold is planned ~27 min ahead
			// (TestIdleKeyNearThresholdIsNotParked); allow a relearning check.
			if due > 3 {
				t.Errorf("idle key with stored spendRate %v polled %d times in 12 cycles 10 s apart; stored now: %v", bad, due, keyDoc(t, s, "k")["spendRate"])
			}
		})
	}
}

// Adversarial (docs/design.md "Adaptive cadence", "the pool's prior"): one rate
// measured over a tiny interval becomes the pool's fastest rate for ever.
// The key's lastSpendCheck was written 1 ms before our check by someone
// else (the proxy's own spend checker during a migration, or a replica
// whose clock runs ahead), so $0.01 of spend reads as $10/s. That rate is
// stored as the key's spendRate (never decays: max(rate, seen)), reloaded
// into the pool prior at every start, and from then on every key of the
// pool — including ones spending $0.0001/s, 9 $ under threshold — is
// planned at the minimum interval: adaptive polling degrades to fixed
// polling permanently (cost blow-up, ~180× on this pool).
func TestAdv13_OneTinyIntervalOutlierPinsWholePoolAtMinimum(t *testing.T) {
	ctx := context.Background()
	clock := clockwork.NewFakeClockAt(t0)
	keys := map[string]float64{"a": 1, "b": 1, "c": 1, "o": 1}
	s := adaptiveSetup(t, keys, clock, nil)
	for id := range keys {
		setFields(t, s, id, bson.M{"totalSpend": 1.0, "spendRate": 0.0001, "lastSpendCheck": t0.Add(-10 * time.Minute), "spendEpoch": int64(3)})
	}
	// Someone else checked "o" a millisecond ago and stored a spend $0.01
	// lower than the upstream reports now.
	setFields(t, s, "o", bson.M{"totalSpend": 0.99, "lastSpendCheck": t0.Add(-time.Millisecond)})
	if _, err := s.chk.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	// Half an hour later every key is due again; the pool spent as before.
	clock.Advance(31 * time.Minute)
	for id := range keys {
		s.up.AddSpend(secret(id), 0.0001*31*60)
	}
	if _, err := s.chk.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	// a: headroom ~8.76 at max(8 × 0.0001, threshold/h = 0.0028) $/s is
	// ~52 min, clamped to 30 min.
	for _, id := range []string{"a", "b", "c"} {
		if got := planned(t, s, id); got < 10*time.Minute {
			t.Errorf("key %s spending $0.0001/s, $8.8 under threshold, planned %v ahead (pool prior now %v $/s from one 1 ms interval)", id, got, keyDoc(t, s, "o")["spendRate"])
		}
	}
}

// Adversarial (docs/design.md "Lease": the write-back fence). A key whose
// spendEpoch is not a number below the writer's — null or a string after
// an operator "cleared" it, or a number above the current epoch written by
// hand — is fenced away from every write-back for ever: the null/string
// cases are not even seen by the lease's floor (MaxEpoch), so no election
// heals them. The key's totalSpend and lastSpendCheck go stale (status and
// metrics show old spend) and, its plan never being written, it is polled
// every cycle for ever instead of when due.
func TestAdv13_FenceBlocksKeyWithForeignSpendEpochForEver(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name  string
		epoch any
	}{
		{"null", nil},
		{"string", "2"},
		{"above the current epoch", int64(1_000_000)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clock := clockwork.NewFakeClockAt(t0)
			s := adaptiveSetup(t, map[string]float64{"k": 5}, clock, nil) // current epoch 3
			// spendRate 0.01: the $4 over 10 min is then no burst; from
			// 0.0001 it is a 67× one, which rightly teaches burst 32 and
			// a plan every ~23 s (6 polls), not "never stored".
			setFields(t, s, "k", bson.M{"totalSpend": 1.0, "spendRate": 0.01, "lastSpendCheck": t0.Add(-10 * time.Minute), "spendEpoch": tt.epoch})
			due := 0
			for range 12 {
				sum, err := s.chk.Cycle(ctx)
				if err != nil {
					t.Fatal(err)
				}
				due += sum.Total().Due
				clock.Advance(10 * time.Second)
			}
			d := keyDoc(t, s, "k")
			if d["totalSpend"] != 5.0 {
				t.Errorf("spend never written back: stored totalSpend %v, upstream 5 (spendEpoch %v)", d["totalSpend"], tt.epoch)
			}
			if due > 3 {
				t.Errorf("key polled %d times in 12 cycles 10 s apart: its plan is never stored", due)
			}
		})
	}
}

// Adversarial (docs/design.md "Lease": "a write-back never replaces a newer
// observation ... A write the network delivers later still never replaces
// a newer observation"). A deposed leader's write-back is held by the
// network (fault proxy); meanwhile another writer that stores no
// spendEpoch — the proxy's own spend checker during a migration, or an
// older spendchecker replica in a rolling upgrade — observes $9.50. The
// held write of $9.00 is delivered late and, the key having no
// spendEpoch, passes the fence whatever its lastSpendCheck: totalSpend
// goes backwards and the older plan replaces the newer one. The fence in
// the filter, as on MongoDB: only a fence the store checks on arrival can
// stop a late write (FerretDB v1 checks it on read, docs/design.md "Lease").
func TestAdv13_LateWriteOverKeyWithoutEpochGoesBackwards(t *testing.T) {
	ctx := context.Background()
	clock := clockwork.NewFakeClockAt(t0)
	mdb := mongotest.New(t)
	up := fakeupstream.New("openhands")
	t.Cleanup(up.Close)
	seedPool(t, mdb.Database, up, openhands, map[string]float64{"k": 9.0}, 1)
	proxy := mdb.Proxy(t)
	db := mdb.NewClient(t, options.Client().ApplyURI(proxy.URI())).Database(mdb.Name)
	prov, err := spend.New("openhands", up.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	chk, err := checker.New(db, checker.Config{
		Pools:    []checker.Pool{{Pool: openhands, Provider: prov, Threshold: 9.95}},
		Instance: "deposed", Clock: clock, Epoch: func() int64 { return 4 }, WriteFence: checker.FenceInFilter,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := chk.EnsureIndexes(ctx); err != nil {
		t.Fatal(err)
	}
	keys := mdb.Database.Collection(openhands.KeysCollection)
	if _, err := keys.UpdateOne(ctx, bson.M{"_id": "k"}, bson.M{"$set": bson.M{"totalSpend": 8.9, "lastSpendCheck": t0.Add(-time.Minute)}}); err != nil {
		t.Fatal(err)
	}
	// Learn which command is the write-back (of a cycle after the first).
	if _, err := chk.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	proxy.ResetCommands()
	if _, err := chk.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	k := -1
	for i, c := range proxy.Commands() {
		if c == "update "+openhands.KeysCollection {
			k = i
		}
	}
	if k < 0 {
		t.Fatalf("no write-back among %v", proxy.Commands())
	}
	if _, err := keys.UpdateOne(ctx, bson.M{"_id": "k"}, bson.M{"$set": bson.M{"totalSpend": 8.9, "lastSpendCheck": t0.Add(-time.Minute)}, "$unset": bson.M{"spendEpoch": ""}}); err != nil {
		t.Fatal(err)
	}
	held := proxy.HoldCommand(k + 1)
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _, _ = chk.Cycle(cctx) }()
	<-held.Arrived()
	cancel()                            // the lease is lost
	_ = clock.BlockUntilContext(ctx, 1) // the write grace timer
	clock.Advance(5 * time.Second)      // grace over: the cycle gives up
	<-done
	// The other writer observes $9.50 a minute later, without spendEpoch.
	if _, err := keys.UpdateOne(ctx, bson.M{"_id": "k"}, bson.M{"$set": bson.M{"totalSpend": 9.5, "lastSpendCheck": t0.Add(time.Minute)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := held.Deliver(ctx); err != nil {
		t.Fatal(err)
	}
	if d := keyDoc(t, setup{db: mdb.Database}, "k"); d["totalSpend"] != 9.5 {
		t.Fatalf("observation of $9.50 at t0+1m replaced by the late one of $%v made at t0: %v", d["totalSpend"], d)
	}
}

// Adversarial (docs/design.md "Adaptive cadence": the learned burst factor). A key
// that was nearly idle (known rate $0.00001/s) starts spending at the
// pool's ordinary rate ($0.001/s, below the pool's own threshold-per-hour
// prior): nothing bursty happened, yet the ratio 100 teaches the pool a
// burst factor of 32, for the rest of the process's life. Every steady key
// of the pool is then planned 4× more often than with the default 8 —
// waking idle keys are routine, so in practice every pool runs at the cap
// (cost blow-up, 4×). A ratio measured against a rate the pool has long
// exceeded should not count as a burst.
func TestAdv13_IdleKeyWakingTeachesMaxBurstFactor(t *testing.T) {
	ctx := context.Background()
	clock := clockwork.NewFakeClockAt(t0)
	s := adaptiveSetup(t, map[string]float64{"waking": 1, "steady": 1}, clock, func(c *checker.Config) {
		c.MaxInterval = 24 * time.Hour
	})
	setFields(t, s, "waking", bson.M{"totalSpend": 1.0, "spendRate": 0.00001, "lastSpendCheck": t0.Add(-10 * time.Minute), "spendEpoch": int64(3)})
	setFields(t, s, "steady", bson.M{"totalSpend": 1.0, "spendRate": 0.001, "lastSpendCheck": t0.Add(-10 * time.Minute), "spendEpoch": int64(3)})
	s.up.AddSpend(secret("waking"), 0.6) // $0.001/s over 10 min
	s.up.AddSpend(secret("steady"), 0.6)
	if _, err := s.chk.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	clock.Advance(10 * time.Minute)
	setFields(t, s, "steady", bson.M{"nextSpendCheck": t0})
	s.up.AddSpend(secret("steady"), 0.6)
	if _, err := s.chk.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	// steady: headroom 9.95-2.2 = 7.75 at 8 × 0.001 $/s is 969 s; at 32×, 242 s.
	if got := planned(t, s, "steady"); got < 900*time.Second {
		t.Fatalf("steady key planned %v ahead after an idle key woke up at the pool's usual rate, want ~969 s (burst 8)", got)
	}
}
