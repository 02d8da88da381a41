package checker_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// Adversarial (README "Adaptive cadence"): a stored spendRate that is NaN
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

// Adversarial (README "Adaptive cadence", "the pool's prior"): one rate
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

// Adversarial (README "Lease": the write-back fence). A key whose
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
			setFields(t, s, "k", bson.M{"totalSpend": 1.0, "spendRate": 0.0001, "lastSpendCheck": t0.Add(-10 * time.Minute), "spendEpoch": tt.epoch})
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
