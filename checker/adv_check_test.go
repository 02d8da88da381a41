package checker_test

import (
	"context"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// A crossing teaches the pool its rate (learn) from a reading the plan path
// never sees: one above the threshold, so unbounded. A hostile or broken
// upstream answering one absurd figure for one key must not teach the pool
// a rate that pins every other key at the minimum interval for the rest of
// the process ("Rates are learned only from sane measurements"). Below the
// threshold a reading teaches at most threshold/interval, so before the
// crossing learned, no single answer could do this.
func TestAdvCheck_AbsurdCrossingPinsPoolAtMinimum(t *testing.T) {
	tests := []struct {
		name  string
		spend float64 // hot's answer, its threshold 9.95
	}{
		{"1e300", 1e300},
		{"a million dollars", 1e6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			clock := clockwork.NewFakeClockAt(t0)
			s := adaptiveSetup(t, map[string]float64{"hot": 9.0, "steady": 1.0}, clock, nil)
			for id, spent := range map[string]float64{"hot": 9.0, "steady": 1.0} {
				setFields(t, s, id, bson.M{"totalSpend": spent, "spendRate": 0.002, "spendRateSustained": 0.002,
					"lastSpendCheck": t0.Add(-60 * time.Second), "spendEpoch": int64(3)})
			}
			setFields(t, s, "steady", bson.M{"nextSpendCheck": t0.Add(5 * time.Minute)})
			s.up.SetSpend(secret("hot"), tt.spend)
			if _, err := s.chk.Cycle(ctx); err != nil {
				t.Fatal(err)
			}
			if n := s.up.Calls(secret("steady")); n != 0 {
				t.Fatalf("steady polled %d times in the first cycle; the test needs it planned later", n)
			}
			clock.Advance(10 * time.Second)
			setFields(t, s, "steady", bson.M{"nextSpendCheck": t0})
			s.up.AddSpend(secret("steady"), 0.002*70)
			if _, err := s.chk.Cycle(ctx); err != nil {
				t.Fatal(err)
			}
			// steady: headroom 8.81 at 0.002 $/s, 8× burst cover: ~550 s.
			// A pool that had seen a key burst at the largest factor (32×)
			// over the default prior (0.00276 $/s) still plans it ~105 s
			// ahead.
			if got := planned(t, s, "steady"); got < time.Minute {
				t.Errorf("steady (headroom $8.8 at $0.002/s) planned %v ahead after one key answered $%g: one answer pinned the pool at the minimum interval", got, tt.spend)
			}
		})
	}
}
