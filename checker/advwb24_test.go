package checker_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/checker"
)

// Adversarial (the write-back, docs/design.md "Lease"). While a key is
// polled, its document comes to hold another secret under the same _id: re-keyed
// in place, or rotated away and another key put under its id (put back by
// hand, or a backup whose id is the old key's). The observation is of the
// secret the cycle read; written by _id, it lands on the other secret's
// document: that key shows the old secret's spend, rate and plan. The
// fresh document carries no spendEpoch or lastSpendCheck (or older ones),
// so the fence lets it through. Where the fence is in the filter, the
// filter can name the secret too, as RecordBudgetUser does.
func TestAdvWB24_ObservationNeverLandsOnAnotherSecret(t *testing.T) {
	ctx := context.Background()
	const other = "sk-test-someone-else-0123456789"
	tests := []struct {
		name   string
		change func(t *testing.T, s setup)
	}{
		{"re-keyed in place", func(t *testing.T, s setup) {
			setFields(t, s, "k", bson.M{"apiKey": other, "totalSpend": 0.0})
		}},
		{"rotated away, another key under its id", func(t *testing.T, s setup) {
			keys := s.db.Collection(openhands.KeysCollection)
			if _, err := keys.DeleteOne(ctx, bson.M{"_id": "k"}); err != nil {
				t.Fatal(err)
			}
			if _, err := keys.InsertOne(ctx, bson.D{{Key: "_id", Value: "k"}, {Key: "apiKey", Value: other},
				{Key: "status", Value: "healthy"}, {Key: "totalSpend", Value: 0.0}, {Key: "createdAt", Value: t0}}); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSetup(t, map[string]float64{"k": 8}, 0, func(c *checker.Config) {
				c.Clock = clockwork.NewFakeClockAt(t0)
				c.WriteFence = checker.FenceInFilter
			})
			var once sync.Once
			s.up.OnRequest = func(sec string) {
				if sec == secret("k") {
					once.Do(func() { tt.change(t, s) })
				}
			}
			if _, err := s.chk.Cycle(ctx); err != nil {
				t.Fatal(err)
			}
			d := keyDoc(t, s, "k")
			if d["apiKey"] != other {
				t.Fatalf("the change did not happen: %v", d)
			}
			if d["totalSpend"] != 0.0 || d["spendEpoch"] != nil || d["lastSpendCheck"] != nil {
				t.Fatalf("the observation of the secret read ($8) landed on another secret's key: %v", d)
			}
		})
	}
}

// Adversarial (docs/design.md "Lease"). A newer leader writes its
// observation after this cycle read the key and before its write-back
// (here: while the key is polled). With the fence in the filter (MongoDB)
// the older epoch's write is refused; with the fence checked on read
// (FerretDB v1) it lands, the loss the design names.
func TestAdvWB24_WriteRacingNewerLeader(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name  string
		fence checker.WriteFence
		kept  bool
	}{
		{"in filter", checker.FenceInFilter, true},
		{"on read", checker.FenceOnRead, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSetup(t, map[string]float64{"k": 8}, 0, func(c *checker.Config) {
				c.Clock = clockwork.NewFakeClockAt(t0)
				c.WriteFence = tt.fence
			})
			var once sync.Once
			s.up.OnRequest = func(sec string) {
				once.Do(func() {
					// The newer leader (epoch 4) saw $9 a minute earlier by
					// its clock: the epoch decides, not the time.
					setFields(t, s, "k", bson.M{"totalSpend": 9.0, "spendEpoch": int64(4), "lastSpendCheck": t0.Add(-time.Minute)})
				})
			}
			if _, err := s.chk.Cycle(ctx); err != nil {
				t.Fatal(err)
			}
			d := keyDoc(t, s, "k")
			if kept := d["totalSpend"] == 9.0 && d["spendEpoch"] == int64(4); kept != tt.kept {
				t.Fatalf("newer leader's observation kept=%v, want %v: %v", kept, tt.kept, d)
			}
		})
	}
}
