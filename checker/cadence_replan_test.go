package checker_test

import (
	"context"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/checker"
	"github.com/spendchecker/spendchecker/spend"
)

// Two keys idle at $9.90 of $9.95 are planned under the default prior
// (threshold per hour: about 18 s of headroom, due 23 s out). Then the pool's
// prior rises to 18 times that — learned from another key, or configured at
// a restart. The two keys must be due at once: at the new prior their
// headroom lasts about half a second, so a check 23 s after the last one may
// come long after they crossed.
func TestKeysPlannedUnderALowerPriorArePulledForward(t *testing.T) {
	const fast = 18 * 9.95 / 3600 // USD/s: 18 times the default prior
	tests := []struct {
		name string
		// rise raises the pool's prior after a and b were planned, at now;
		// it returns the checker to run the next cycles with.
		rise func(t *testing.T, s setup, clock *clockwork.FakeClock) *checker.Checker
	}{
		{"learned from another key", func(t *testing.T, s setup, clock *clockwork.FakeClock) *checker.Checker {
			// f was last read 30 s ago at $1 and is due now: its reading
			// shows the pool spending at 18 times the default prior.
			s.up.SetSpend(secret("f"), 1+fast*30)
			if _, err := s.chk.Cycle(context.Background()); err != nil {
				t.Fatal(err)
			}
			return s.chk
		}},
		{"configured at a restart", func(t *testing.T, s setup, clock *clockwork.FakeClock) *checker.Checker {
			prov, err := spend.New("openhands", s.up.URL, &spend.Client{MaxAttempts: 2, Wait: func(context.Context, time.Duration) error { return nil }})
			if err != nil {
				t.Fatal(err)
			}
			chk, err := checker.New(s.db, checker.Config{
				Pools:    []checker.Pool{{Pool: openhands, Provider: prov, Threshold: 9.95, RatePrior: fast}},
				Instance: "test-2", Epoch: func() int64 { return 4 }, Adaptive: true, Clock: clock,
				MinInterval: 10 * time.Second, MaxInterval: 30 * time.Minute,
			})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := chk.Cycle(context.Background()); err != nil {
				t.Fatal(err)
			}
			return chk
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			clock := clockwork.NewFakeClockAt(t0)
			s := adaptiveSetup(t, map[string]float64{"a": 9.90, "b": 9.90, "f": 1}, clock, nil)
			// f is not due in the first two cycles.
			setFields(t, s, "f", bson.M{"totalSpend": 1.0, "lastSpendCheck": t0.Add(-10 * time.Second),
				"nextSpendCheck": t0.Add(20 * time.Second), "spendRate": 0.0, "spendRateSustained": 0.0})
			for range 2 { // a and b: first check, then a rate of 0
				if _, err := s.chk.Cycle(ctx); err != nil {
					t.Fatal(err)
				}
				clock.Advance(10 * time.Second)
			}
			for _, id := range []string{"a", "b"} {
				if got := planned(t, s, id); got < 15*time.Second {
					t.Fatalf("%s planned %v ahead under the default prior; the test needs it planned further", id, got)
				}
			}
			chk := tt.rise(t, s, clock)
			before := map[string]int{"a": s.up.Calls(secret("a")), "b": s.up.Calls(secret("b"))}
			// A cycle at the same instant: the keys are due now.
			if _, err := chk.Cycle(ctx); err != nil {
				t.Fatal(err)
			}
			for id, n := range before {
				if got := s.up.Calls(secret(id)); got != n+1 {
					next := keyDoc(t, s, id)["nextSpendCheck"]
					t.Errorf("%s polled %d times by the cycle after the prior rose 18-fold, want once (next check %v, now %v)",
						id, got-n, next, clock.Now())
				}
			}
		})
	}
}

// A key planned for bursts of 8 times its rate (the default burst factor)
// must not wait out that plan once the pool has shown a burst of 20: the
// plan is pulled forward to what the new factor allows, without polling the
// key. Here the pool's prior stays below what the key's own rate asked for,
// so only the burst factor moves the plan.
func TestKeysPlannedUnderALowerBurstFactorArePulledForward(t *testing.T) {
	tests := []struct {
		name       string
		hotBurst   float64 // hot's rate over its last interval, × its sustained 0.0005 $/s
		wantAtMost time.Duration
	}{
		// calm: headroom 8.83 at 0.002 $/s. Burst 8: 557 s; burst 20: 226 s.
		{"burst of 20 learned", 20, 240 * time.Second},
		// Burst 32 (the cap): 0.064 $/s, 143 s.
		{"burst past the cap", 40, 150 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			clock := clockwork.NewFakeClockAt(t0)
			s := adaptiveSetup(t, map[string]float64{"calm": 1.0, "hot": 5.0}, clock, nil)
			setFields(t, s, "calm", bson.M{"totalSpend": 1.0, "spendRate": 0.002, "spendRateSustained": 0.002,
				"lastSpendCheck": t0.Add(-60 * time.Second), "spendEpoch": int64(3)})
			setFields(t, s, "hot", bson.M{"totalSpend": 5.0, "spendRate": 0.0005, "spendRateSustained": 0.0005,
				"lastSpendCheck": t0.Add(-50 * time.Second), "nextSpendCheck": t0.Add(10 * time.Second), "spendEpoch": int64(3)})
			s.up.AddSpend(secret("calm"), 0.002*60)
			if _, err := s.chk.Cycle(ctx); err != nil { // calm planned under burst 8
				t.Fatal(err)
			}
			if got := planned(t, s, "calm"); got < 500*time.Second {
				t.Fatalf("calm planned %v ahead under burst 8, want about 557 s", got)
			}
			clock.Advance(10 * time.Second)
			s.up.AddSpend(secret("hot"), tt.hotBurst*0.0005*60) // a burst of 0.01 or 0.02 $/s, below calm's cover of 0.016
			calls := s.up.Calls(secret("calm"))
			if _, err := s.chk.Cycle(ctx); err != nil {
				t.Fatal(err)
			}
			if n := s.up.Calls(secret("hot")); n != 1 {
				t.Fatalf("hot polled %d times, want once", n)
			}
			if got := s.up.Calls(secret("calm")); got != calls {
				t.Errorf("calm polled %d times to pull its plan forward, want none", got-calls)
			}
			if got := planned(t, s, "calm"); got > tt.wantAtMost {
				t.Errorf("calm planned %v ahead after the pool showed a burst of %g×, want at most %v", got, tt.hotBurst, tt.wantAtMost)
			}
		})
	}
}
