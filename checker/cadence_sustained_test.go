package checker_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// A key's stored rates (docs/design.md "Adaptive cadence"): spendRate is the
// fastest it was seen spending, kept through quiet intervals (the status
// page shows it as such); spendRateSustained is its time-weighted average.
// A migrated key's first plan stores neither a rate nor a sustained rate:
// a sustained rate of 0 would read as a lull, and its next interval's rate
// as a burst of any size over it (the bench's migrated population learned
// the cap of 32 that way, 5,246 calls against 3,963 without).
func TestStoredRatesFastestAndSustained(t *testing.T) {
	ctx := context.Background()
	clock := clockwork.NewFakeClockAt(t0)
	s := adaptiveSetup(t, map[string]float64{"k": 5.0}, clock, nil)
	setFields(t, s, "k", bson.M{"totalSpend": 5.0, "lastSpendCheck": t0.Add(-10 * time.Minute)})
	run := func(d time.Duration, rate float64) bson.M {
		t.Helper()
		clock.Advance(d)
		s.up.AddSpend(secret("k"), rate*d.Seconds())
		setFields(t, s, "k", bson.M{"nextSpendCheck": t0})
		if _, err := s.chk.Cycle(ctx); err != nil {
			t.Fatal(err)
		}
		return keyDoc(t, s, "k")
	}
	near := func(got any, want float64) bool {
		f, ok := got.(float64)
		return ok && math.Abs(f-want) <= 1e-9
	}
	d := run(0, 0) // migrated: first plan
	if _, ok := d["spendRateSustained"]; ok || !near(d["spendRate"], 0) {
		t.Fatalf("after a migrated key's first check: spendRate %v, spendRateSustained %v; want 0 and none", d["spendRate"], d["spendRateSustained"])
	}
	d = run(100*time.Second, 0.002)
	if !near(d["spendRate"], 0.002) || !near(d["spendRateSustained"], 0.002) {
		t.Fatalf("after 100 s at 0.002 $/s: spendRate %v, spendRateSustained %v; want 0.002 and 0.002", d["spendRate"], d["spendRateSustained"])
	}
	d = run(300*time.Second, 0)
	want := 0.002 * math.Exp(-0.5) // 300 s of a 10-minute average
	if !near(d["spendRate"], 0.002) || !near(d["spendRateSustained"], want) {
		t.Fatalf("after 300 quiet s: spendRate %v, spendRateSustained %v; want 0.002 and %v", d["spendRate"], d["spendRateSustained"], want)
	}
}
