package checker_test

// Adversarial review of "rates count from the reading's own time"
// (spendReadingAt) and "a rejection names its secret" (spendRejectedOf).

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/checker"
)

// steadyKeySetup is a pool of one key, "k", at $1 of $9.95, spending a
// steady $0.002/s (its stored rates say so), last read 60s before t0 by the
// leader of epoch 3, with rotate-unauthorized off.
func steadyKeySetup(t *testing.T, clock clockwork.Clock, readingAt bool, fence checker.WriteFence) setup {
	t.Helper()
	s := adaptiveSetup(t, map[string]float64{"k": 1.0}, clock, func(c *checker.Config) {
		c.Pools[0].RotateUnauthorized, c.WriteFence = false, fence
	})
	f := bson.M{"totalSpend": 1.0, "spendRate": 0.002, "spendRateSustained": 0.002,
		"lastSpendCheck": t0.Add(-60 * time.Second), "spendEpoch": int64(3)}
	if readingAt {
		f["spendReadingAt"] = t0.Add(-60 * time.Second)
	}
	setFields(t, s, "k", f)
	return s
}

// readAgain: the upstream answers for "k" again, and 10 s later "k", still
// spending at rate, is read.
func readAgain(t *testing.T, s setup, clock *clockwork.FakeClock, rate float64) {
	t.Helper()
	s.up.SetStatus(secret("k"), 0)
	clock.Advance(10 * time.Second)
	s.up.AddSpend(secret("k"), rate*10)
	setFields(t, s, "k", bson.M{"nextSpendCheck": clock.Now()})
	cycle(t, s.chk)
}

// A check that reads no figure (a transient 401 with rotate-unauthorized
// off; likewise a key held for its user's budget) keeps the last spend, and
// now leaves spendReadingAt. But it still runs the sustained rate's decay
// as if it had read a rate of zero over the stretch since the reading; the
// next reading then decays the sustained rate again over that same stretch
// (its weight now counts from spendReadingAt, not from the write that last
// updated the sustained rate). A key spending a steady $0.002/s throughout
// ends with a sustained rate far below it: later plans assume it spends
// slower than it does.
func TestAdvReading2_NonReadingDecaysTheSustainedRateTwice(t *testing.T) {
	clock := clockwork.NewFakeClockAt(t0)
	s := steadyKeySetup(t, clock, true, checker.FenceAuto)
	const rate = 0.002
	s.up.AddSpend(secret("k"), rate*60)
	cycle(t, s.chk) // read at t0: $0.002/s, planned minutes ahead
	ahead := planned(t, s, "k")
	if ahead < 2*time.Minute {
		t.Fatalf("k planned %v ahead; the test needs a long plan", ahead)
	}
	clock.Advance(ahead)
	s.up.AddSpend(secret("k"), rate*ahead.Seconds())
	s.up.SetStatus(secret("k"), 401) // transient
	cycle(t, s.chk)
	readAgain(t, s, clock, rate)
	d := keyDoc(t, s, "k")
	if got, _ := d["spendRateSustained"].(float64); got < 0.9*rate || got > 1.1*rate {
		t.Errorf("spendRateSustained %v $/s after reading, 401, reading of a key spending a steady %v $/s", got, rate)
	}
}

// A key stored by the version before spendReadingAt (every key of a
// deployment at the upgrade) counts its rate from lastSpendCheck. A check
// that reads no figure still moves lastSpendCheck and writes no
// spendReadingAt: the defect spendReadingAt fixed comes back for such a
// key. Its next reading divides the spend of the whole stretch since its
// reading by the seconds since the 401, and that rate is stored as the
// key's fastest (for ever) and taught to the pool.
func TestAdvReading2_KeyWithoutReadingAtRejectedBetweenReadings(t *testing.T) {
	clock := clockwork.NewFakeClockAt(t0)
	s := steadyKeySetup(t, clock, false, checker.FenceAuto)
	const rate = 0.002
	// Ten minutes since its reading at the previous version, spending.
	clock.Advance(10 * time.Minute)
	s.up.AddSpend(secret("k"), rate*660)
	s.up.SetStatus(secret("k"), 401) // transient
	setFields(t, s, "k", bson.M{"nextSpendCheck": clock.Now()})
	cycle(t, s.chk)
	readAgain(t, s, clock, rate)
	if r, _ := keyDoc(t, s, "k")["spendRate"].(float64); r > 1.1*rate {
		t.Errorf("k (spending a steady %v $/s) stored spendRate %v $/s after a 401 between two readings", rate, r)
	}
}

// Where the fence is checked on read, a write that arrives after another
// leader's is not fenced (docs/design.md "Lease"). A check that reads no
// figure (a 401 with rotate-unauthorized off) wrote the spend it kept, read
// before the newer leader's reading landed: the key was left with the old
// spend beside the newer reading's time (spendReadingAt). Its next reading
// divided the spend of the whole stretch since the old reading by the
// seconds since the newer one, stored as the key's fastest rate for ever.
// A write that keeps the last spend has no spend to write.
func TestAdvReading2_KeptSpendWrittenOverANewerReading(t *testing.T) {
	clock := clockwork.NewFakeClockAt(t0)
	s := steadyKeySetup(t, clock, true, checker.FenceOnRead)
	const rate = 0.002
	s.up.AddSpend(secret("k"), rate*60)
	cycle(t, s.chk) // read at t0
	clock.Advance(10 * time.Minute)
	s.up.AddSpend(secret("k"), rate*600)
	s.up.SetStatus(secret("k"), 401) // to this replica only (transient)
	var once sync.Once
	s.up.OnRequest = func(sec string) {
		once.Do(func() {
			// Another leader (epoch 4) reads the key meanwhile.
			now := clock.Now()
			setFields(t, s, "k", bson.M{"totalSpend": 1.0 + rate*660, "lastSpendCheck": now, "spendReadingAt": now, "spendEpoch": int64(4)})
		})
	}
	setFields(t, s, "k", bson.M{"nextSpendCheck": clock.Now()})
	cycle(t, s.chk)
	s.up.OnRequest = nil
	readAgain(t, s, clock, rate)
	if r, _ := keyDoc(t, s, "k")["spendRate"].(float64); r > 1.1*rate {
		t.Errorf("k (spending a steady %v $/s) stored spendRate %v $/s after its kept spend was written over a newer reading", rate, r)
	}
}

// A plan is made so that a key bursting at burst × its sustained rate from
// its reading is checked again before it can cross. A check that reads no
// figure (a transient 401 with rotate-unauthorized off, a key held for its
// user's budget) plans again on the last spend, its headroom as at the
// reading, but counted from now: the check the plan was made for is
// deferred by a whole plan, and the key, bursting as the plan allows, is
// over its threshold long before it is read again. The first such check
// since a reading plans from the reading's time.
func TestAdvReading2_NonReadingDefersTheCheckByAWholePlan(t *testing.T) {
	ctx := context.Background()
	clock := clockwork.NewFakeClockAt(t0)
	s := steadyKeySetup(t, clock, true, checker.FenceAuto)
	s.up.AddSpend(secret("k"), 0.002*60)
	if _, err := s.chk.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	ahead := planned(t, s, "k")
	if ahead < 2*time.Minute {
		t.Fatalf("k planned %v ahead; the test needs a long plan", ahead)
	}
	// Due: a burst the plan allowed has taken the key to its threshold;
	// the upstream answers 401 once.
	clock.Advance(ahead)
	s.up.AddSpend(secret("k"), 9.95-1.12)
	s.up.SetStatus(secret("k"), 401)
	if _, err := s.chk.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	if got := planned(t, s, "k"); got > 10*time.Second {
		t.Errorf("k, due by its plan, answered one 401 and was planned %v ahead again (plan from its reading: %v); a burst the planner allows crosses meanwhile", got, ahead)
	}
	// Still refused at the next check: planned on as before, not polled at
	// the minimum for as long as it is refused.
	clock.Advance(10 * time.Second)
	setFields(t, s, "k", bson.M{"nextSpendCheck": clock.Now()})
	if _, err := s.chk.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	if got := planned(t, s, "k"); got < time.Minute {
		t.Errorf("k refused at two checks in a row planned %v ahead: a refused key polled at the minimum", got)
	}
}

// Attacks on "a rejection names its secret" that held, with
// rotate-unauthorized on: re-keyed A→B→A, each secret's first 401 under the
// key is a first rejection (asked again), whoever was rejected before it;
// and a secret rejected at two checks in a row is called dead, whatever
// was rejected between (nothing: the checks are of A alone).
func TestAdvReading2_RejectionsAcrossReKeysAtoBtoA(t *testing.T) {
	ctx := context.Background()
	clock := clockwork.NewFakeClockAt(t0)
	s := adaptiveSetup(t, map[string]float64{"k": 1.0, "other": 1.0}, clock, nil)
	b := "sk-test-the-new-secret-0123456789"
	check := func(apiKey string) checker.PoolSummary {
		t.Helper()
		clock.Advance(10 * time.Second)
		setFields(t, s, "k", bson.M{"apiKey": apiKey, "nextSpendCheck": clock.Now()})
		sum, err := s.chk.Cycle(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return sum.Pools[0]
	}
	if _, err := s.chk.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	s.up.SetStatus(secret("k"), 401)
	s.up.SetStatus(b, 401)
	for i, step := range []struct {
		apiKey string
		dead   bool
	}{
		{secret("k"), false}, // A's first
		{b, false},           // B's first
		{secret("k"), false}, // A's first again: B's was between
		{secret("k"), true},  // A's second in a row
	} {
		ps := check(step.apiKey)
		if dead := ps.Unauthorized > 0; dead != step.dead {
			t.Fatalf("step %d: called dead %v, want %v (summary %+v)", i, dead, step.dead, ps)
		}
	}
}
