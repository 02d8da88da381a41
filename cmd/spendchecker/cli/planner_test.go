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

// --rate-prior and --burst-factor reach the planner, in their units: a key
// idle at $9 of $9.95 is planned for the prior (USD an hour), and a key
// spending $0.01 a second for its burst cover (the factor × that rate).
func TestPlannerSettingsReachThePlanner(t *testing.T) {
	pool, err := rotation.Preset("openhands")
	if err != nil {
		t.Fatal(err)
	}
	// Each key in a pool of its own: the idle key would otherwise be
	// planned for the spending key's rate, which the pool learns.
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
			mdb := mongotest.New(t)
			ctx := context.Background()
			now := time.Now().UTC()
			last := now.Add(-100 * time.Second)
			f := fixture.Pool{CreatedAt: now, Keys: []fixture.Key{{ID: "k", Secret: "sk-secret-key-000000-abcdef", Fields: bson.M{
				rotation.FieldTotalSpend: tt.spend, checker.FieldLastCheck: last, checker.FieldNextCheck: now.Add(-time.Second),
				checker.FieldRate: tt.rate, "spendRateSustained": tt.rate, "spendReadingAt": last}}}}
			if err := fixture.Write(ctx, mdb.Database, pool, f); err != nil {
				t.Fatal(err)
			}
			releasedLease(t, mdb.Database)
			up := fakeupstream.New("openhands")
			t.Cleanup(up.Close)
			up.SetSpend("sk-secret-key-000000-abcdef", 9)
			var out bytes.Buffer
			args := append([]string{"--once", "--listen", "", "--mongo-uri", mdb.URI, "--database", mdb.Name, "--log-level", "error",
				"--provider-url", up.URL}, tt.args...)
			if code := Run(ctx, args, Env{Stdout: &out, Stderr: &out}); code != ExitOK {
				t.Fatalf("--once exit %d: %s", code, out.String())
			}
			var doc struct {
				Last time.Time `bson:"lastSpendCheck"`
				Next time.Time `bson:"nextSpendCheck"`
			}
			if err := mdb.Database.Collection(pool.KeysCollection).FindOne(ctx, bson.M{"_id": "k"}).Decode(&doc); err != nil {
				t.Fatal(err)
			}
			if !doc.Last.After(last) {
				t.Fatalf("the key was not checked: %s", out.String())
			}
			if wait := doc.Next.Sub(doc.Last); wait < tt.from || wait > tt.to {
				t.Errorf("next check %v after the reading, want %v to %v", wait, tt.from, tt.to)
			}
		})
	}
}
