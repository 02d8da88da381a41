package checker_test

import (
	"context"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/checker"
)

// A configured rate prior is any finite number of USD an hour (--rate-prior),
// so the planner must not overflow on a large one: a key idle at $9.90 of
// $9.95 under a prior of 1e308 USD an hour crosses at once and is due at
// the minimum interval. Half a long minimum interval's spend at that prior,
// added to the headroom, overflowed to +Inf, and +Inf headroom parked the
// key for the maximum interval.
func TestAdvKnobs_HugeRatePriorPlansAtTheMinimum(t *testing.T) {
	tests := []struct {
		name       string
		prior      float64 // USD/s
		minI, maxI time.Duration
	}{
		{"1e308 an hour, 10 s minimum", 1e308 / 3600, 10 * time.Second, 30 * time.Minute},
		{"1e308 an hour, 4 h minimum", 1e308 / 3600, 4 * time.Hour, 24 * time.Hour},
		{"largest float an hour, 1 h minimum", 1.7976931348623157e308 / 3600, time.Hour, 24 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := clockwork.NewFakeClockAt(t0)
			s := adaptiveSetup(t, map[string]float64{"a": 9.90}, clock, func(c *checker.Config) {
				c.MinInterval, c.MaxInterval = tt.minI, tt.maxI
				c.Pools[0].RatePrior = tt.prior
			})
			// Seen idle before: a rate of its own (0), so it is planned, not
			// checked again at the minimum to learn one.
			setFields(t, s, "a", bson.M{"totalSpend": 9.90, "spendRate": 0.0, "spendRateSustained": 0.0,
				"lastSpendCheck": t0.Add(-tt.minI), "spendReadingAt": t0.Add(-tt.minI), "nextSpendCheck": t0.Add(-time.Second)})
			if _, err := s.chk.Cycle(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := planned(t, s, "a"); got != tt.minI {
				t.Errorf("a key $0.05 under its threshold at a prior of %g USD/s planned %v ahead, want the minimum %v", tt.prior, got, tt.minI)
			}
		})
	}
}
