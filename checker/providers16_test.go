package checker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/checker"
	"github.com/spendchecker/spendchecker/internal/fakeupstream"
	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation/history"
)

func balDoc(t *testing.T, w *world, id string) bson.M {
	t.Helper()
	var d bson.M
	if err := w.db.Collection(openhands.KeysCollection).FindOne(context.Background(), bson.M{"_id": id}).Decode(&d); err != nil {
		t.Fatal(err)
	}
	return d
}

// A balance provider: keys of one account are asked once per cycle; the
// balance is written (not a spend of 0); the keys rotate once what remains
// falls to --min-remaining; history records the balance.
func TestRemainingKind(t *testing.T) {
	keys := map[string]float64{"a0": 3, "a1": 3, "a2": 3, "solo": 3}
	w := newWorld(t, "deepseek", keys, 10)
	ctx := context.Background()
	if _, err := w.db.Collection(openhands.KeysCollection).UpdateMany(ctx, bson.M{"_id": bson.M{"$in": bson.A{"a0", "a1", "a2"}}},
		bson.M{"$set": bson.M{"spendAccount": "acme"}}); err != nil {
		t.Fatal(err)
	}
	chk := w.checker(t, func(c *checker.Config, p *checker.Pool) { p.MinRemaining = 1 })
	ps := cycle(t, chk)
	if ps.Checked != 4 || ps.Over != 0 || ps.LowestRemaining == nil || *ps.LowestRemaining != 3 || ps.LowestCurrency != "USD" {
		t.Fatalf("first cycle %+v", ps)
	}
	if n := w.up.TotalCalls(); n != 2 {
		t.Fatalf("%d balance requests for 3 keys of one account and 1 of its own, want 2", n)
	}
	d := balDoc(t, w, "a1")
	if d["spendRemaining"] != 3.0 || d["spendCurrency"] != "USD" {
		t.Fatalf("key document %v: want spendRemaining 3 USD", d)
	}
	if _, ok := d["totalSpend"]; ok {
		t.Fatalf("key document %v: a balance is not a spend", d)
	}
	// The account drains: every key of it is at the minimum.
	for _, id := range []string{"a0", "a1", "a2"} {
		w.up.SetSpend(secret(id), 0.75)
	}
	w.clock.Advance(31 * time.Minute)
	ps = cycle(t, chk)
	if ps.Rotated != 3 {
		t.Fatalf("second cycle %+v: want the account's 3 keys rotated", ps)
	}
	var h history.Record
	if err := w.db.Collection(openhands.HistoryCollection).FindOne(ctx, bson.M{"keyId": "a0"}).Decode(&h); err != nil {
		t.Fatal(err)
	}
	if h.Remaining == nil || *h.Remaining != 0.75 || h.Currency != "USD" || h.RotationReason != "low_remaining_0.75" {
		t.Fatalf("history %+v", h)
	}
	if balDoc(t, w, "solo")["spendRemaining"] != 3.0 {
		t.Fatal("the key of its own account changed")
	}
}

// The planner's headroom for a balance is what remains above the minimum:
// a key near it is checked again sooner than one far above it.
func TestRemainingKindPlans(t *testing.T) {
	w := newWorld(t, "deepseek", map[string]float64{"near": 1.2, "far": 500}, 2)
	chk := w.checker(t, func(c *checker.Config, p *checker.Pool) { p.MinRemaining = 1 })
	cycle(t, chk)
	w.up.SetSpend(secret("near"), 1.1)
	w.up.SetSpend(secret("far"), 499.9)
	w.clock.Advance(10 * time.Second)
	cycle(t, chk)
	next := func(id string) time.Time { return balDoc(t, w, id)["nextSpendCheck"].(bson.DateTime).Time() }
	if !next("near").Before(next("far")) {
		t.Fatalf("near the minimum planned %v, far above it %v", next("near"), next("far"))
	}
	if r := balDoc(t, w, "near")["spendRate"].(float64); r < 0.009 || r > 0.011 {
		t.Fatalf("rate learned from the balance's fall %v, want 0.01/s", r)
	}
}

// oneapi: a token whose quota is used up is rotated with reason
// exhausted; an unlimited token is no reading (status says so, its spend is
// not written as 0); others are spends.
func TestOneAPIInChecker(t *testing.T) {
	w := newWorld(t, "oneapi", map[string]float64{"spent": 2, "unlimited": 7, "fine": 4.25}, 3)
	w.up.SetBudget(secret("spent"), 2)
	w.up.SetUnlimited(secret("unlimited"))
	chk := w.checker(t, nil)
	ps := cycle(t, chk)
	if ps.Rotated != 1 || ps.NoReading != 1 || ps.Checked != 3 {
		t.Fatalf("cycle %+v", ps)
	}
	var h history.Record
	if err := w.db.Collection(openhands.HistoryCollection).FindOne(context.Background(), bson.M{"keyId": "spent"}).Decode(&h); err != nil || h.RotationReason != "exhausted" {
		t.Fatalf("history %+v, %v", h, err)
	}
	u := balDoc(t, w, "unlimited")
	if u["spendCheckError"] != "no_reading" {
		t.Fatalf("unlimited key %v: want spendCheckError no_reading", u)
	}
	if _, ok := u["totalSpend"]; ok {
		t.Fatalf("unlimited key %v", u)
	}
	if f := balDoc(t, w, "fine"); f["totalSpend"] != 4.25 || f["spendBudget"] != 10.0 {
		t.Fatalf("fine key %v", f)
	}
}

// BenchmarkCallsPerCycle counts the upstream requests of one full cycle over
// 1,000 due keys: per-key providers (litellm 1 a key, oneapi 2 a key)
// against a balance provider whose keys name no account (1 a key) and one
// whose keys belong to 10 accounts (1 an account). BENCHMARKS.md.
func BenchmarkCallsPerCycle(b *testing.B) {
	const n, accounts = 1000, 10
	for _, tc := range []struct {
		name, kind string
		accounts   bool
	}{{"litellm", "litellm", false}, {"oneapi", "oneapi", false}, {"deepseek-no-account", "deepseek", false}, {"deepseek-10-accounts", "deepseek", true}} {
		b.Run(tc.name, func(b *testing.B) {
			keys := map[string]float64{}
			for i := range n {
				keys[fmt.Sprintf("k%04d", i)] = 5
			}
			w := &world{db: mongotest.New(b).Database, up: fakeupstream.New(tc.kind), logs: &syncBuffer{}, kind: tc.kind,
				clock: clockwork.NewFakeClockAt(time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC))}
			b.Cleanup(w.up.Close)
			seedPool(b, w.db, w.up, openhands, keys, 0)
			if tc.accounts {
				for a := range accounts {
					ids := bson.A{}
					for i := a; i < n; i += accounts {
						ids = append(ids, fmt.Sprintf("k%04d", i))
					}
					if _, err := w.db.Collection(openhands.KeysCollection).UpdateMany(context.Background(), bson.M{"_id": bson.M{"$in": ids}},
						bson.M{"$set": bson.M{"spendAccount": fmt.Sprintf("acct-%d", a)}}); err != nil {
						b.Fatal(err)
					}
				}
			}
			chk := w.checker(b, func(c *checker.Config, p *checker.Pool) { c.Adaptive = false; c.Concurrency = 16 })
			b.ResetTimer()
			for range b.N {
				before := w.up.TotalCalls()
				sum, err := chk.Cycle(context.Background())
				if err != nil || sum.Pools[0].Checked != n {
					b.Fatalf("%+v, %v", sum.Pools[0], err)
				}
				b.ReportMetric(float64(w.up.TotalCalls()-before), "calls/cycle")
			}
		})
	}
}

// A dry run decides for a balance as for a spend, and writes nothing.
func TestRemainingKindDryRun(t *testing.T) {
	w := newWorld(t, "deepseek", map[string]float64{"low": 0.5, "ok": 20}, 2)
	chk := w.checker(t, func(c *checker.Config, p *checker.Pool) { p.MinRemaining = 1; c.DryRun = true })
	ps := cycle(t, chk)
	if ps.Over != 1 || ps.Rotated != 0 || ps.Checked != 2 {
		t.Fatalf("dry run %+v", ps)
	}
	if _, ok := balDoc(t, w, "low")["spendRemaining"]; ok {
		t.Fatal("a dry run wrote the balance")
	}
	if n := countDocs(t, w.db.Collection(openhands.HistoryCollection), bson.M{}); n != 0 {
		t.Fatalf("%d history records after a dry run", n)
	}
}
