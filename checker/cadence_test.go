package checker_test

import (
	"context"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/checker"
	"github.com/spendchecker/spendchecker/internal/fakeupstream"
	"github.com/spendchecker/spendchecker/spend"
)

var t0 = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)

func adaptiveSetup(t *testing.T, keys map[string]float64, clock clockwork.Clock, mutate func(*checker.Config)) setup {
	t.Helper()
	return newSetup(t, keys, 2, func(c *checker.Config) {
		c.Adaptive, c.Clock = true, clock
		c.MinInterval, c.MaxInterval = 10*time.Second, 30*time.Minute
		if mutate != nil {
			mutate(c)
		}
	})
}

func keyDoc(t *testing.T, s setup, id string) bson.M {
	t.Helper()
	var d bson.M
	if err := s.db.Collection(openhands.KeysCollection).FindOne(context.Background(), bson.M{"_id": id}).Decode(&d); err != nil {
		t.Fatal(err)
	}
	return d
}

func planned(t *testing.T, s setup, id string) time.Duration {
	t.Helper()
	d := keyDoc(t, s, id)
	next, ok1 := d["nextSpendCheck"].(bson.DateTime)
	last, ok2 := d["lastSpendCheck"].(bson.DateTime)
	if !ok1 || !ok2 {
		t.Fatalf("key %s has no plan: %v", id, d)
	}
	return next.Time().Sub(last.Time())
}

func setFields(t *testing.T, s setup, id string, set bson.M) {
	t.Helper()
	if _, err := s.db.Collection(openhands.KeysCollection).UpdateOne(context.Background(), bson.M{"_id": id}, bson.M{"$set": set}); err != nil {
		t.Fatal(err)
	}
}

// Issue 13 case 6: a key whose own readings show no spend (idle, just rotated
// in, or migrated without a rate) is planned with the pool's prior, so a key
// near its threshold is never parked for the maximum interval.
func TestIdleKeyNearThresholdIsNotParked(t *testing.T) {
	ctx := context.Background()
	clock := clockwork.NewFakeClockAt(t0)
	s := adaptiveSetup(t, map[string]float64{"idle": 9.90, "migrated": 9.90, "far": 1}, clock, nil)
	// Migrated from the old deployment: spend and last check, no rate.
	setFields(t, s, "migrated", bson.M{"totalSpend": 9.90, "lastSpendCheck": t0.Add(-time.Hour)})
	for range 2 { // the idle key's two readings are equal: rate 0
		if _, err := s.chk.Cycle(ctx); err != nil {
			t.Fatal(err)
		}
		clock.Advance(10 * time.Second)
	}
	for _, id := range []string{"idle", "migrated"} {
		// headroom 0.05 at the default prior (threshold per hour) is 18 s.
		if got := planned(t, s, id); got > time.Minute {
			t.Errorf("%s key 0.05 under its threshold planned %v ahead, want at most a minute", id, got)
		}
	}
	if got := planned(t, s, "far"); got < 10*time.Minute {
		t.Errorf("idle key far from its threshold planned only %v ahead", got)
	}
}

// Issue 17 item 4: a plan further ahead than the maximum interval (a clock
// set back, a replica whose clock is behind) is due now.
func TestPlanBeyondMaxIntervalIsDue(t *testing.T) {
	ctx := context.Background()
	clock := clockwork.NewFakeClockAt(t0)
	s := adaptiveSetup(t, map[string]float64{"hot": 10.5}, clock, nil)
	setFields(t, s, "hot", bson.M{"nextSpendCheck": t0.Add(time.Hour)})
	sum, err := s.chk.Cycle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := sum.Total(); got.Due != 1 || got.Rotated != 1 {
		t.Fatalf("key planned an hour ahead (max 30 min) not polled: %+v", got)
	}
}

// Issue 13 case 3: a deposed leader's late write-back never replaces a newer
// observation (fenced on the lease epoch, then on lastSpendCheck).
func TestWriteBackIsFenced(t *testing.T) {
	ctx := context.Background()
	clock := clockwork.NewFakeClockAt(t0)
	tests := []struct {
		name       string
		stored     bson.M
		epoch      int64
		wantStored bool
	}{
		{"newer epoch stored", bson.M{"spendEpoch": int64(5), "lastSpendCheck": t0.Add(-time.Minute)}, 4, true},
		{"same epoch, newer check", bson.M{"spendEpoch": int64(4), "lastSpendCheck": t0.Add(time.Minute)}, 4, true},
		{"same epoch, older check", bson.M{"spendEpoch": int64(4), "lastSpendCheck": t0.Add(-time.Minute)}, 4, false},
		{"older epoch stored", bson.M{"spendEpoch": int64(3), "lastSpendCheck": t0.Add(time.Minute)}, 4, false},
		{"no epoch stored", bson.M{"lastSpendCheck": t0.Add(-time.Minute)}, 4, false},
	}
	for _, tt := range tests {
		for _, mode := range []struct {
			name  string
			fence checker.WriteFence
		}{{"in filter", checker.FenceInFilter}, {"on read", checker.FenceOnRead}} {
			t.Run(tt.name+", "+mode.name, func(t *testing.T) {
				s := newSetup(t, map[string]float64{"k": 5}, 0, func(c *checker.Config) {
					c.Clock = clock
					c.Epoch = func() int64 { return tt.epoch }
					c.WriteFence = mode.fence
				})
				set := bson.M{"totalSpend": 9.0, "spendRate": 0.001}
				for k, v := range tt.stored {
					set[k] = v
				}
				setFields(t, s, "k", set)
				if _, err := s.chk.Cycle(ctx); err != nil {
					t.Fatal(err)
				}
				d := keyDoc(t, s, "k")
				if kept := d["totalSpend"] == 9.0; kept != tt.wantStored {
					t.Fatalf("stored observation kept=%v, want %v: %v", kept, tt.wantStored, d)
				}
				if !tt.wantStored && d["spendEpoch"] != tt.epoch {
					t.Fatalf("written observation carries epoch %v, want %d", d["spendEpoch"], tt.epoch)
				}
			})
		}
	}
}

// Issue 13 case 9: --budget-ratio is not defeated by floating point
// (0.1 × 3 is 0.30000000000000004).
func TestBudgetRatioExact(t *testing.T) {
	ctx := context.Background()
	up := fakeupstream.New("litellm")
	t.Cleanup(up.Close)
	s := newSetup(t, map[string]float64{"k": 0.3}, 1, func(c *checker.Config) {
		prov, err := spend.New("litellm", up.URL, &spend.Client{MaxAttempts: 1})
		if err != nil {
			t.Fatal(err)
		}
		c.Pools[0].Provider, c.Pools[0].Threshold, c.Pools[0].BudgetRatio = prov, 100, 0.1
	})
	up.SetSpend(secret("k"), 0.3)
	up.SetBudget(secret("k"), 3)
	sum, err := s.chk.Cycle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := sum.Total(); got.Rotated != 1 {
		t.Fatalf("spend 0.3 at ratio 0.1 of budget 3 not rotated: %+v", got)
	}
}

// Issue 13 case 9: a key the upstream rejects while rotate-unauthorized is
// off is planned like the others, not polled every cycle for ever.
func TestUnauthorizedNotRotatedIsPlanned(t *testing.T) {
	ctx := context.Background()
	clock := clockwork.NewFakeClockAt(t0)
	s := adaptiveSetup(t, map[string]float64{"dead": 1}, clock, func(c *checker.Config) {
		c.Pools[0].RotateUnauthorized = false
	})
	s.up.SetStatus(secret("dead"), 401)
	due := 0
	for range 6 {
		sum, err := s.chk.Cycle(ctx)
		if err != nil {
			t.Fatal(err)
		}
		due += sum.Total().Due
		clock.Advance(10 * time.Second)
	}
	// Like a new key: checked again at the minimum to learn a rate, then
	// planned from its headroom (with rotate-unauthorized off a rejection
	// is recorded at once, not confirmed by a second check first).
	if due != 2 {
		t.Fatalf("rejected key polled %d times in 6 cycles 10 s apart, want 2", due)
	}
	if d := keyDoc(t, s, "dead"); d["spendCheckError"] != "unauthorized" {
		t.Fatalf("rejection not recorded for status: %v", d)
	}
}

// Issue 17 item 12: the planner learns how bursty a pool is. After one key
// is seen spending 16 times its known rate, a steady key is planned with at
// least that factor, not the default 8.
func TestPlannerLearnsBurstiness(t *testing.T) {
	ctx := context.Background()
	clock := clockwork.NewFakeClockAt(t0)
	s := adaptiveSetup(t, map[string]float64{"bursty": 1, "steady": 5}, clock, func(c *checker.Config) {
		c.MaxInterval = 24 * time.Hour
	})
	// Known rates of 0.001 $/s each; the pool prior must not decide here.
	setFields(t, s, "bursty", bson.M{"totalSpend": 1.0, "spendRate": 0.001, "lastSpendCheck": t0.Add(-10 * time.Second), "spendEpoch": int64(3)})
	setFields(t, s, "steady", bson.M{"totalSpend": 5.0, "spendRate": 0.001, "lastSpendCheck": t0.Add(-10 * time.Second), "spendEpoch": int64(3)})
	s.up.AddSpend(secret("bursty"), 0.16) // 0.016 $/s over the last 10 s: 16×
	s.up.AddSpend(secret("steady"), 0.01)
	if _, err := s.chk.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	clock.Advance(10 * time.Second)
	setFields(t, s, "steady", bson.M{"nextSpendCheck": t0})
	s.up.AddSpend(secret("steady"), 0.01)
	if _, err := s.chk.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	// steady: headroom 9.95-5.02 = 4.93 at 0.001 $/s is 4930 s; ÷ 8 = 616 s;
	// ÷ 16 = 308 s, then half the minimum interval (docs/design.md "Adaptive cadence").
	if want := 4930*time.Second/16 + 5*time.Second; planned(t, s, "steady") > want {
		t.Fatalf("steady key planned %v ahead after a 16x burst in its pool, want at most %v", planned(t, s, "steady"), want)
	}
}

// The lease's floor (issue 13 case 4): the highest epoch stored with any
// observation, so a fresh candidate never takes a lower one.
func TestMaxEpoch(t *testing.T) {
	ctx := context.Background()
	s := newSetup(t, map[string]float64{"a": 1, "b": 2}, 0, nil) // epoch 3
	if e, err := s.chk.MaxEpoch(ctx); err != nil || e != 0 {
		t.Fatalf("before any write-back: %d %v", e, err)
	}
	if _, err := s.chk.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	if e, err := s.chk.MaxEpoch(ctx); err != nil || e != 3 {
		t.Fatalf("after a cycle at epoch 3: %d %v", e, err)
	}
}
