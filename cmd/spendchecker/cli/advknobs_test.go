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

// A higher --rate-prior or --burst-factor at a restart pulls forward the
// plans the last run made under the lower one (docs/design.md, "When the
// prior rises"): the key is not polled again, its stored plan is made again.
func TestAdvKnobs_RaisedAtARestartPullsPlansForward(t *testing.T) {
	pool, err := rotation.Preset("openhands")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name          string
		rate          float64 // stored fastest and sustained, USD/s; $1 under it 100 s ago, $6 now
		first, second []string
		after         time.Duration // the second run's plan, at most, after the reading
	}{
		// Idle: 3.95 / 0.00276 ≈ 1430 s under the default prior; at 360
		// USD an hour (0.1 USD/s), (3.95 + 0.5) / 0.1 ≈ 45 s.
		{"idle, --rate-prior raised", 0, nil, []string{"--rate-prior", "360"}, 60 * time.Second},
		{"idle, --rate-prior 36 then 360", 0, []string{"--rate-prior", "36"}, []string{"--rate-prior", "360"}, 60 * time.Second},
		// Spending at 0.01 USD/s: factor 1, about 400 s; factor 32, (3.95 +
		// 1.6) / 0.32 ≈ 17 s.
		{"spending, --burst-factor 1 then 32", 0.01, []string{"--burst-factor", "1"}, []string{"--burst-factor", "32"}, 30 * time.Second},
		// The learned default (8): (3.95 + 0.4) / 0.08 ≈ 54 s.
		{"spending, --burst-factor 1 then learned", 0.01, []string{"--burst-factor", "1"}, nil, 60 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mdb := mongotest.New(t)
			ctx := context.Background()
			now := time.Now().UTC()
			last := now.Add(-100 * time.Second)
			const secret = "sk-secret-key-000000-abcdef"
			spendThen := 6.0 - tt.rate*100
			f := fixture.Pool{CreatedAt: now, Keys: []fixture.Key{{ID: "k", Secret: secret, Fields: bson.M{
				rotation.FieldTotalSpend: spendThen, checker.FieldLastCheck: last, checker.FieldNextCheck: now.Add(-time.Second),
				checker.FieldRate: tt.rate, "spendRateSustained": tt.rate, "spendReadingAt": last}}}}
			if err := fixture.Write(ctx, mdb.Database, pool, f); err != nil {
				t.Fatal(err)
			}
			releasedLease(t, mdb.Database)
			up := fakeupstream.New("openhands")
			t.Cleanup(up.Close)
			up.SetSpend(secret, 6)
			type plan struct {
				Last time.Time `bson:"lastSpendCheck"`
				Next time.Time `bson:"nextSpendCheck"`
			}
			run := func(extra []string) plan {
				t.Helper()
				var out bytes.Buffer
				args := append([]string{"--once", "--listen", "", "--mongo-uri", mdb.URI, "--database", mdb.Name, "--log-level", "error",
					"--provider-url", up.URL}, extra...)
				if code := Run(ctx, args, Env{Stdout: &out, Stderr: &out}); code != ExitOK {
					t.Fatalf("--once %v exit %d: %s", extra, code, out.String())
				}
				var p plan
				if err := mdb.Database.Collection(pool.KeysCollection).FindOne(ctx, bson.M{"_id": "k"}).Decode(&p); err != nil {
					t.Fatal(err)
				}
				return p
			}
			p1 := run(tt.first)
			if !p1.Last.After(last) {
				t.Fatal("the first run did not check the key")
			}
			if w := p1.Next.Sub(p1.Last); w < 2*tt.after {
				t.Fatalf("the first run planned the key %v after its reading: the test needs it later than %v", w, 2*tt.after)
			}
			calls := up.Calls(secret)
			p2 := run(tt.second)
			if got := up.Calls(secret); got != calls {
				t.Errorf("the second run polled the key %d times, want none (it is not due)", got-calls)
			}
			if w := p2.Next.Sub(p2.Last); w > tt.after {
				t.Errorf("after %v then %v the key is planned %v after its reading, want at most %v", tt.first, tt.second, w, tt.after)
			}
		})
	}
}
