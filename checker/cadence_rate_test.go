package checker_test

import (
	"context"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/checker"
)

// The rate over a migrated key's gap is an average over a stretch nobody
// planned (the key may have sat idle most of it): the rate of its next
// interval, against it, is no burst and teaches the pool no burst factor.
func TestMigratedKeyGapRateTeachesNoBurst(t *testing.T) {
	ctx := context.Background()
	clock := clockwork.NewFakeClockAt(t0)
	s := adaptiveSetup(t, map[string]float64{"migrated": 5.01, "steady": 1.6}, clock, func(c *checker.Config) {
		c.MaxInterval = 24 * time.Hour
	})
	// $0.01 over the hour since the old deployment's last reading.
	setFields(t, s, "migrated", bson.M{"totalSpend": 5.0, "lastSpendCheck": t0.Add(-time.Hour)})
	setFields(t, s, "steady", bson.M{"totalSpend": 1.0, "spendRate": 0.001, "lastSpendCheck": t0.Add(-10 * time.Minute), "spendEpoch": int64(3)})
	if _, err := s.chk.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	wait := planned(t, s, "migrated")
	clock.Advance(wait)
	// It spends at 0.003 $/s, the pool's fastest yet: 1000 times its gap's.
	s.up.AddSpend(secret("migrated"), 0.003*wait.Seconds())
	setFields(t, s, "steady", bson.M{"nextSpendCheck": t0})
	s.up.AddSpend(secret("steady"), 0.001*wait.Seconds())
	if _, err := s.chk.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	clock.Advance(10 * time.Second)
	setFields(t, s, "steady", bson.M{"nextSpendCheck": t0})
	s.up.AddSpend(secret("steady"), 0.01)
	if _, err := s.chk.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	// steady: headroom ~7.4 at 8 × 0.001 $/s is ~930 s; at 32×, ~232 s.
	if got := planned(t, s, "steady"); got < 800*time.Second {
		t.Fatalf("steady key planned %v ahead after a migrated key's first planned interval, want ~930 s (burst 8)", got)
	}
}

// A key planned on the rate of its last interval, times the burst factor:
// one burst does not mark it bursty for ever (its rate over the burst times
// the burst factor again), since the factor already covers its next burst
// (docs/design.md "Adaptive cadence").
func TestKeyPlannedOnItsCurrentRateAfterABurst(t *testing.T) {
	ctx := context.Background()
	clock := clockwork.NewFakeClockAt(t0)
	s := adaptiveSetup(t, map[string]float64{"calm": 1.01}, clock, nil)
	// Its last interval ran at 0.004 $/s (a 4× burst); the one since, at
	// its usual 0.001 $/s.
	setFields(t, s, "calm", bson.M{"totalSpend": 1.0, "spendRate": 0.004, "lastSpendCheck": t0.Add(-10 * time.Second), "spendEpoch": int64(3)})
	if _, err := s.chk.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	// Headroom 8.94 at 8 × 0.001 $/s is 1118 s; at 8 × 0.004 (the burst's
	// rate, for ever) it would be 279 s.
	if got := planned(t, s, "calm"); got < 1000*time.Second {
		t.Fatalf("key back at 0.001 $/s after one 4x burst planned %v ahead, want ~1118 s", got)
	}
}

// A key is due half a minimum interval after it could cross its threshold at
// the rate assumed: a cycle polls it up to half an interval past its plan,
// so at most one interval late, as fixed polling at the minimum interval
// would be (docs/design.md "Adaptive cadence").
func TestPlanDueHalfAnIntervalPastTheCrossing(t *testing.T) {
	ctx := context.Background()
	clock := clockwork.NewFakeClockAt(t0)
	s := adaptiveSetup(t, map[string]float64{"k": 1.01}, clock, nil)
	setFields(t, s, "k", bson.M{"totalSpend": 1.0, "spendRate": 0.001, "lastSpendCheck": t0.Add(-10 * time.Second), "spendEpoch": int64(3)})
	if _, err := s.chk.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	// Headroom 8.94 at 8 × 0.001 $/s: 1117.5 s, then 5 s.
	if got, want := planned(t, s, "k"), 1122500*time.Millisecond; got < want-time.Millisecond || got > want+time.Millisecond {
		t.Fatalf("planned %v ahead, want %v", got, want)
	}
}

// A key seen spending nothing is planned at the pool's prior (the fastest
// rate seen in the pool, at least the threshold per hour), not twice it.
func TestIdleKeyPlannedAtThePoolsPrior(t *testing.T) {
	ctx := context.Background()
	clock := clockwork.NewFakeClockAt(t0)
	s := adaptiveSetup(t, map[string]float64{"idle": 9.0}, clock, nil)
	setFields(t, s, "idle", bson.M{"totalSpend": 9.0, "spendRate": 0.0, "lastSpendCheck": t0.Add(-10 * time.Second), "spendEpoch": int64(3)})
	if _, err := s.chk.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	// Headroom 0.95 at 9.95/3600 $/s: 344 s (then 5 s); at twice it, 172 s.
	if got := planned(t, s, "idle"); got < 340*time.Second || got > 355*time.Second {
		t.Fatalf("idle key 0.95 under its threshold planned %v ahead, want ~349 s", got)
	}
}

// A key that crosses its threshold in a burst is rotated, not planned; the
// interval that carried it over must still teach the pool its rate, the
// prior that bounds every key. Otherwise the pool's first 10× burst teaches
// nothing, and a key of the same kind bursting next is planned for 8× again
// and overshoots as far (BENCHMARKS.md, burst10).
func TestKeyCrossingInABurstTeachesThePool(t *testing.T) {
	tests := []struct {
		name  string
		burst float64 // the crossing key's rate over its last interval, × its sustained 0.002 $/s
		// steady's plan after the crossing: headroom 8.93 at the rate the
		// pool then assumes for it.
		wantMax time.Duration
	}{
		// Learned: the pool's fastest is 10 × 0.002 $/s: 8.93/0.02 = 447 s.
		// Not learned: 8 × 0.002 (steady's burst cover): 558 s.
		{"10x burst", 10, 460 * time.Second},
		// Learned: 0.04 $/s: 223 s.
		{"20x burst", 20, 240 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			clock := clockwork.NewFakeClockAt(t0)
			s := hotAndSteady(t, clock, map[string]float64{"hot": 9.0, "steady": 1.0})
			// hot's last minute: over its threshold at burst × its rate.
			s.up.AddSpend(secret("hot"), tt.burst*0.002*60)
			if _, err := s.chk.Cycle(ctx); err != nil {
				t.Fatal(err)
			}
			if n := s.up.Calls(secret("steady")); n != 0 {
				t.Fatalf("steady polled %d times in the first cycle; the test needs it planned later", n)
			}
			if n := countDocs(t, s.db.Collection(openhands.HistoryCollection), bson.M{"keyId": "hot"}); n != 1 {
				t.Fatalf("hot rotated %d times, want once", n)
			}
			if got := steadyPlan(t, s, clock, 70); got > tt.wantMax {
				t.Errorf("steady planned %v ahead after a key of its pool crossed at %g× its rate, want at most %v", got, tt.burst, tt.wantMax)
			}
		})
	}
}

// hotAndSteady sets up keys that have spent as given, each read a minute
// ago at 0.002 $/s, with "steady" planned 5 minutes ahead.
func hotAndSteady(t *testing.T, clock clockwork.Clock, spent map[string]float64) setup {
	t.Helper()
	return hotAndSteadyWith(t, clock, spent, nil)
}

// steadyPlan reads "steady" again 10 s on, secs seconds of spend at 0.002
// $/s since its last reading, and returns how far ahead it is planned then.
func steadyPlan(t *testing.T, s setup, clock *clockwork.FakeClock, secs float64) time.Duration {
	t.Helper()
	clock.Advance(10 * time.Second)
	setFields(t, s, "steady", bson.M{"nextSpendCheck": clock.Now()})
	s.up.AddSpend(secret("steady"), 0.002*secs)
	cycle(t, s.chk)
	return planned(t, s, "steady")
}

// hotAndSteadyWith is hotAndSteady with the checker's configuration
// changed by mutate.
func hotAndSteadyWith(t *testing.T, clock clockwork.Clock, spent map[string]float64, mutate func(*checker.Config)) setup {
	t.Helper()
	s := adaptiveSetup(t, spent, clock, mutate)
	for id, v := range spent {
		setFields(t, s, id, bson.M{"totalSpend": v, "spendRate": 0.002, "spendRateSustained": 0.002,
			"lastSpendCheck": t0.Add(-60 * time.Second), "spendEpoch": int64(3)})
	}
	setFields(t, s, "steady", bson.M{"nextSpendCheck": t0.Add(5 * time.Minute)})
	return s
}
