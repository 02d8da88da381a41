package cli

import (
	"bytes"
	"context"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/checker"
	"github.com/spendchecker/spendchecker/internal/fakeupstream"
	"github.com/spendchecker/spendchecker/internal/fixture"
	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation"
)

// keyPlan is a key's last reading and its next check.
type keyPlan struct {
	Last time.Time `bson:"lastSpendCheck"`
	Next time.Time `bson:"nextSpendCheck"`
}

// plannedKey is a store with one key of the openhands pool, due now, whose
// last reading (100 s ago, at last) was spendThen with rate stored as its
// fastest and sustained rate (USD/s), and an upstream answering spendNow.
// Its run starts the daemon --once with extra flags and returns the key's
// plan.
type plannedKey struct {
	last time.Time
	up   *fakeupstream.Server
	run  func(extra ...string) keyPlan
}

const plannedSecret = "sk-secret-key-000000-abcdef"

func newPlannedKey(t *testing.T, spendThen, rate, spendNow float64) plannedKey {
	t.Helper()
	pool, err := rotation.Preset("openhands")
	if err != nil {
		t.Fatal(err)
	}
	mdb := mongotest.New(t)
	ctx := context.Background()
	now := time.Now().UTC()
	last := now.Add(-100 * time.Second)
	f := fixture.Pool{CreatedAt: now, Keys: []fixture.Key{{ID: "k", Secret: plannedSecret, Fields: bson.M{
		rotation.FieldTotalSpend: spendThen, checker.FieldLastCheck: last, checker.FieldNextCheck: now.Add(-time.Second),
		checker.FieldRate: rate, "spendRateSustained": rate, "spendReadingAt": last}}}}
	if err := fixture.Write(ctx, mdb.Database, pool, f); err != nil {
		t.Fatal(err)
	}
	releasedLease(t, mdb.Database)
	up := fakeupstream.New("openhands")
	t.Cleanup(up.Close)
	up.SetSpend(plannedSecret, spendNow)
	return plannedKey{last: last, up: up, run: func(extra ...string) keyPlan {
		t.Helper()
		var out bytes.Buffer
		args := append([]string{"--once", "--listen", "", "--mongo-uri", mdb.URI, "--database", mdb.Name, "--log-level", "error",
			"--provider-url", up.URL}, extra...)
		if code := Run(ctx, args, Env{Stdout: &out, Stderr: &out}); code != ExitOK {
			t.Fatalf("--once %v exit %d: %s", extra, code, out.String())
		}
		var p keyPlan
		if err := mdb.Database.Collection(pool.KeysCollection).FindOne(ctx, bson.M{"_id": "k"}).Decode(&p); err != nil {
			t.Fatal(err)
		}
		if !p.Last.After(last) {
			t.Fatalf("--once %v did not check the key: %s", extra, out.String())
		}
		return p
	}}
}

// --rate-prior and --burst-factor reach the planner, in their units: a key
// idle at $9 of $9.95 is planned for the prior (USD an hour), and a key
// spending $0.01 a second for its burst cover (the factor × that rate).
// Each key is in a pool of its own: the idle key would otherwise be planned
// for the spending key's rate, which the pool learns.
func TestPlannerSettingsReachThePlanner(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		spend    float64 // at the last reading, 100 s ago; now $9
		rate     float64 // stored: fastest and sustained, USD/s
		from, to time.Duration
	}{
		// The threshold an hour: 0.95 / 0.00276 USD/s, plus half the 10 s
		// minimum.
		{"idle, default prior", nil, 9, 0, 330 * time.Second, 370 * time.Second},
		// $36 an hour: 0.95 / 0.01 + 5 s.
		{"idle, --rate-prior 36", []string{"--rate-prior", "36"}, 9, 0, 90 * time.Second, 110 * time.Second},
		// A factor of 8: (0.95 + 0.4) / 0.08.
		{"spending, default factor", nil, 8, 0.01, 14 * time.Second, 20 * time.Second},
		// A factor of 2: (0.95 + 0.1) / 0.02.
		{"spending, --burst-factor 2", []string{"--burst-factor", "2"}, 8, 0.01, 45 * time.Second, 60 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPlannedKey(t, tt.spend, tt.rate, 9).run(tt.args...)
			if wait := p.Next.Sub(p.Last); wait < tt.from || wait > tt.to {
				t.Errorf("next check %v after the reading, want %v to %v", wait, tt.from, tt.to)
			}
		})
	}
}
