package checker_test

import (
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/checker"
	keysecret "github.com/spendchecker/spendchecker/rotation/secret"
)

// A key re-keyed in place (the proxy's operator puts another secret under
// the same _id, leaving totalSpend and lastSpendCheck as they were; or, on
// a store where the fence is checked on read, the old secret's reading
// written back just after): a check of the new secret would measure a
// "rate" from the old secret's spend to the new one's, a figure no key
// spent at. Under the threshold it was learned as the key's fastest
// (stored, so reloaded at every restart) and as the pool's, and every key
// of the pool was then planned at the minimum interval. The reading names
// its secret (spendReadingOf): the new secret is measured afresh, and
// figures written that are not its reading (a rejection with
// rotate-unauthorized off keeps the old spend) do not make the old reading
// its own.
func TestReKeyedInPlaceTeachesNoRateAcrossSecrets(t *testing.T) {
	other := "sk-test-other-used-key-0123456789"
	for _, tc := range []struct {
		name string
		// rejectedFirst: the new secret is first rejected (401) with
		// rotate-unauthorized off, then answers.
		rejectedFirst bool
	}{
		{"read at once", false},
		{"rejected first, rotate-unauthorized off", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := clockwork.NewFakeClockAt(t0)
			s := hotAndSteadyWith(t, clock, map[string]float64{"swapped": 0.1, "steady": 1.0},
				func(c *checker.Config) { c.Pools[0].RotateUnauthorized = !tc.rejectedFirst })
			cycle(t, s.chk) // "swapped" read once: its reading names its secret
			if got, want := keyDoc(t, s, "swapped")["spendReadingOf"], keysecret.Fingerprint(secret("swapped")); got != want {
				t.Fatalf("spendReadingOf after a reading = %v, want %v", got, want)
			}
			// Another secret, one already used to $9, put under "swapped".
			clock.Advance(10 * time.Second)
			s.up.SetSpend(other, 9.0)
			setFields(t, s, "swapped", bson.M{"apiKey": other, "nextSpendCheck": clock.Now()})
			if tc.rejectedFirst {
				s.up.SetStatus(other, 401)
				cycle(t, s.chk)
				s.up.SetStatus(other, 0)
				clock.Advance(10 * time.Second)
				setFields(t, s, "swapped", bson.M{"nextSpendCheck": clock.Now()})
			}
			cycle(t, s.chk)
			d := keyDoc(t, s, "swapped")
			if r, _ := d["spendRate"].(float64); r > 0.01 {
				t.Errorf("re-keyed key stored spendRate %v $/s: a rate across two secrets", r)
			}
			if got := planned(t, s, "swapped"); got != 10*time.Second {
				t.Errorf("re-keyed key planned %v ahead, want the minimum interval (its rate unknown)", got)
			}
			if got, want := d["spendReadingOf"], keysecret.Fingerprint(other); got != want {
				t.Errorf("spendReadingOf after the new secret's reading = %v, want %v", got, want)
			}
			// The pool learned nothing from it: a steady key far from its
			// threshold is not pulled to the minimum.
			s.up.AddSpend(other, 0.02)
			if got := steadyPlan(t, s, clock, 80); got < time.Minute {
				t.Errorf("steady (headroom $8.8 at $0.002/s) planned %v ahead after another secret was put under a key's _id", got)
			}
			// From its own readings on, the new secret has a rate again.
			if r, _ := keyDoc(t, s, "swapped")["spendRate"].(float64); r < 0.0019 || r > 0.0021 {
				t.Errorf("new secret's rate over its own two readings stored as %v, want 0.002", r)
			}
		})
	}
}
