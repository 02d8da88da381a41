package checker_test

// Adversarial review of "a reading names its secret" (spendReadingOf).

import (
	"context"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/checker"
	"github.com/spendchecker/spendchecker/internal/mongotest"
	keysecret "github.com/spendchecker/spendchecker/rotation/secret"
)

// A spendReadingOf that is not a string (edited by hand, written by another
// tool, a null left by a migration) is an optional field of the checker's
// own, which readKey reads leniently: it must not stop the checker. Read
// with RawValue.StringValue, which panics on any other type, it crashed the
// process in a poll worker, on every cycle, for every pool.
func TestAdvReading_NonStringReadingOfIsIgnored(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    any
	}{
		{"number", int32(42)},
		{"null", nil},
		{"bool", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			clock := clockwork.NewFakeClockAt(t0)
			s := adaptiveSetup(t, map[string]float64{"k": 1.0}, clock, nil)
			setFields(t, s, "k", bson.M{"spendReadingOf": tc.v})
			sum, err := s.chk.Cycle(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if tot := sum.Total(); tot.Checked != 1 {
				t.Fatalf("summary %+v, want the key checked", tot)
			}
			if got, want := keyDoc(t, s, "k")["spendReadingOf"], keysecret.Fingerprint(secret("k")); got != want {
				t.Errorf("spendReadingOf after a reading = %v, want %v", got, want)
			}
		})
	}
}

// A batch report's cumulative figure below the spend recorded for the key
// fails the check ("not this key's report"). A key re-keyed in place keeps
// the old secret's totalSpend, and spendReadingOf says so; yet that spend
// was still passed as Recorded, so the new secret's figure, lower than the
// old one's, failed every check: polled every cycle with a misleading
// error, and a new secret over its threshold but below the old spend was
// never rotated.
func TestAdvReading_BatchReKeyedFailsAgainstOldSecretsSpend(t *testing.T) {
	for _, tc := range []struct {
		name             string
		recorded, report float64 // the old secret's stored spend; the new one's figure
		rotated          int
	}{
		{"new secret under its threshold", 9.0, 0.5, 0},
		// The old secret stayed in service over its threshold (no backup
		// was left then); the operator put a new secret under the key.
		{"new secret over its threshold", 12.0, 10.5, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			up := httptest.NewServer(openAICostsOne(map[string]float64{"key_new": tc.report}))
			defer up.Close()
			db := mongotest.New(t).Database
			seedPool(t, db, nil, openhands, map[string]float64{"k": 0}, 2)
			coll := db.Collection(openhands.KeysCollection)
			// The key as the old secret's last reading left it, then
			// re-keyed in place: new apiKey and report id.
			if _, err := coll.UpdateByID(ctx, "k", bson.M{"$set": bson.M{
				"upstreamKeyId": "key_new", "totalSpend": tc.recorded,
				"lastSpendCheck": time.Now().UTC().Add(-time.Hour),
				"spendReadingOf": keysecret.Fingerprint("sk-test-the-old-secret-0123456789"),
			}}); err != nil {
				t.Fatal(err)
			}
			chk := adv16bChecker(t, db, "openai-costs", up.URL)
			sum, err := chk.Cycle(ctx)
			if err != nil {
				t.Fatal(err)
			}
			tot := sum.Total()
			if tot.Failed != 0 || tot.Rotated != tc.rotated {
				t.Fatalf("re-keyed key with the new secret at $%v (old secret's $%v recorded): summary %+v, failure %q; want checked, %d rotated",
					tc.report, tc.recorded, tot, sum.Pools[0].FailedExample, tc.rotated)
			}
			if tc.rotated == 0 {
				if got := keyDoc(t, setup{db: db}, "k")["totalSpend"]; got != tc.report {
					t.Errorf("totalSpend %v after the new secret's reading, want %v", got, tc.report)
				}
			}
		})
	}
}

// A key rejected once (401) with rotate-unauthorized on is asked again
// before it is called dead: LiteLLM answers 401 for any failure on its auth
// path. Re-keyed in place after the old secret's first rejection (the
// operator replacing a secret the upstream refused), the new secret's first
// 401 is taken for the second rejection of the old one and the key is
// rotated at once: the rejection (rejectedAt) was read as the new
// secret's. Now the rejection names its secret (spendRejectedOf).
func TestAdvReading_NewSecretsFirst401IsNotASecondRejection(t *testing.T) {
	clock := clockwork.NewFakeClockAt(t0)
	s := adaptiveSetup(t, map[string]float64{"k": 1.0, "other": 1.0}, clock, nil)
	coll := s.db.Collection(openhands.KeysCollection)
	cycle(t, s.chk) // read: spendReadingOf names the old secret
	clock.Advance(10 * time.Second)
	s.up.SetStatus(secret("k"), 401)
	setFields(t, s, "k", bson.M{"nextSpendCheck": clock.Now()})
	if ps := cycle(t, s.chk); ps.Rotated != 0 {
		t.Fatalf("rotated on the old secret's first rejection: %+v", ps)
	}
	// Another secret under "k"; its first answer is a (transient) 401.
	clock.Advance(10 * time.Second)
	newSecret := "sk-test-the-new-secret-0123456789"
	s.up.SetStatus(newSecret, 401)
	setFields(t, s, "k", bson.M{"apiKey": newSecret, "nextSpendCheck": clock.Now()})
	if ps := cycle(t, s.chk); ps.Rotated != 0 || countDocs(t, coll, bson.M{"_id": "k"}) != 1 {
		t.Fatalf("the new secret rotated on its first 401 (summary %+v): the old secret's rejection counted as its first", ps)
	}
}

// spendReadingOf pairs the key's reading (totalSpend, lastSpendCheck) with
// a secret; writes that are no reading leave it. But the write of a
// rejection with rotate-unauthorized off (and of a key held for its user's
// budget) moves lastSpendCheck while keeping the last spend. Re-keyed to a
// secret the upstream refuses and back (A→B→A), A's reading is taken for
// A's own again, now dated at B's rejection: A's spend over the whole
// stretch since its reading is divided by the few seconds since B's
// rejection. The rate is learned as the key's fastest and the pool's, and
// every key of the pool is planned at the minimum interval. (The same
// happens to a key rejected once by a transient 401 with
// rotate-unauthorized off, without any re-key.) Now rates count from the
// reading's own time (spendReadingAt).
func TestAdvReading_RejectionBetweenReadingsShortensTheRatesInterval(t *testing.T) {
	clock := clockwork.NewFakeClockAt(t0)
	s := hotAndSteadyWith(t, clock, map[string]float64{"swapped": 1.0, "steady": 1.0}, func(c *checker.Config) { c.Pools[0].RotateUnauthorized = false })
	s.up.AddSpend(secret("swapped"), 0.002*60)
	cycle(t, s.chk) // A read at t0, planned minutes ahead
	ahead := planned(t, s, "swapped")
	if ahead < 2*time.Minute {
		t.Fatalf("swapped planned %v ahead; the test needs a long plan", ahead)
	}
	// A spends at its usual $0.002/s until the plan is due; by then the
	// operator has put a secret under "swapped" that the upstream refuses.
	clock.Advance(ahead)
	s.up.AddSpend(secret("swapped"), 0.002*ahead.Seconds())
	refused := "sk-test-refused-secret-0123456789"
	s.up.SetStatus(refused, 401)
	setFields(t, s, "swapped", bson.M{"apiKey": refused})
	cycle(t, s.chk)
	// Put back: A again, idle meanwhile, read at the next check.
	clock.Advance(10 * time.Second)
	setFields(t, s, "swapped", bson.M{"apiKey": secret("swapped"), "nextSpendCheck": clock.Now()})
	setFields(t, s, "steady", bson.M{"nextSpendCheck": clock.Now()})
	cycle(t, s.chk)
	if r, _ := keyDoc(t, s, "swapped")["spendRate"].(float64); r > 0.0021 {
		t.Errorf("swapped (spending $0.002/s, idle since) stored spendRate %v $/s after A→B(401)→A", r)
	}
	// At its own rate (× the burst factor of 8) steady has over 9 minutes.
	if got := planned(t, s, "steady"); got < 5*time.Minute {
		t.Errorf("steady (headroom $8.8 at $0.002/s) planned %v ahead after a key was re-keyed to a refused secret and back", got)
	}
}

// Attacks that held: another secret put under the key while the old one is
// polled (its write-back lands on the new secret's document where the
// fence is checked on read, and is refused where it is in the filter), and
// a re-key back to the old secret (A→B→A) after B was read. In each case
// the next reading of the secret under the key learns no rate across two
// secrets, and the pool is not taught one.
func TestAdvReading_ReKeyedWhileOldSecretPolledAndBack(t *testing.T) {
	other := "sk-test-other-used-key-0123456789"
	for _, tc := range []struct {
		name  string
		fence checker.WriteFence
		back  bool // then put the old secret back, read again
	}{
		{"in flight, fence in filter", checker.FenceInFilter, false},
		{"in flight, fence on read", checker.FenceOnRead, false},
		{"in flight, fence on read, then back", checker.FenceOnRead, true},
		{"in flight, fence in filter, then back", checker.FenceInFilter, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := clockwork.NewFakeClockAt(t0)
			s := hotAndSteadyWith(t, clock, map[string]float64{"swapped": 0.1, "steady": 1.0}, func(c *checker.Config) { c.WriteFence = tc.fence })
			s.up.AddSpend(secret("swapped"), 0.12)
			cycle(t, s.chk) // A read: its reading names it
			clock.Advance(10 * time.Second)
			s.up.SetSpend(other, 9.0)
			var once sync.Once
			s.up.OnRequest = func(sec string) {
				if sec == secret("swapped") {
					once.Do(func() { setFields(t, s, "swapped", bson.M{"apiKey": other}) })
				}
			}
			setFields(t, s, "swapped", bson.M{"nextSpendCheck": clock.Now()})
			cycle(t, s.chk) // A polled; B put under the key meanwhile
			if d := keyDoc(t, s, "swapped"); d["apiKey"] != other {
				t.Fatalf("the re-key did not happen: %v", d)
			}
			want := other
			clock.Advance(10 * time.Second)
			setFields(t, s, "swapped", bson.M{"nextSpendCheck": clock.Now()})
			cycle(t, s.chk) // B read
			if tc.back {
				clock.Advance(10 * time.Second)
				s.up.AddSpend(secret("swapped"), 5.0) // A used elsewhere meanwhile
				setFields(t, s, "swapped", bson.M{"apiKey": secret("swapped"), "nextSpendCheck": clock.Now()})
				cycle(t, s.chk) // A read again
				want = secret("swapped")
			}
			d := keyDoc(t, s, "swapped")
			if r, _ := d["spendRate"].(float64); r > 0.01 {
				t.Errorf("stored spendRate %v $/s: a rate across two secrets", r)
			}
			if got := d["spendReadingOf"]; got != keysecret.Fingerprint(want) {
				t.Errorf("spendReadingOf %v, want the fingerprint of the secret under the key", got)
			}
			if got := steadyPlan(t, s, clock, 90); got < 5*time.Minute {
				t.Errorf("steady (headroom $8.8 at $0.002/s) planned %v ahead", got)
			}
		})
	}
}

// Attack that held: the new secret put under a key is already over the
// threshold. The check rotates it, and the crossing (learn) teaches the
// pool no rate from the old secret's spend to the new one's.
func TestAdvReading_ReKeyedOverThresholdRotatesAndTeachesNothing(t *testing.T) {
	clock := clockwork.NewFakeClockAt(t0)
	other := "sk-test-other-used-key-0123456789"
	s := hotAndSteady(t, clock, map[string]float64{"swapped": 0.1, "steady": 1.0})
	s.up.AddSpend(secret("swapped"), 0.12)
	cycle(t, s.chk)
	clock.Advance(10 * time.Second)
	s.up.SetSpend(other, 12.0)
	setFields(t, s, "swapped", bson.M{"apiKey": other, "nextSpendCheck": clock.Now()})
	if ps := cycle(t, s.chk); ps.Rotated != 1 {
		t.Fatalf("new secret at $12 of $9.95 not rotated: %+v", ps)
	}
	if got := steadyPlan(t, s, clock, 80); got < 5*time.Minute {
		t.Errorf("steady (headroom $8.8 at $0.002/s) planned %v ahead after a re-keyed key crossed", got)
	}
}
