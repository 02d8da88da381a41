package checker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/spendchecker/spendchecker/checker"
	"github.com/spendchecker/spendchecker/internal/fakeupstream"
	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/spend"
)

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// lines returns the logged records at level.
func (s *syncBuffer) lines(level string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(s.b.String()), "\n") {
		var rec struct{ Level string }
		if json.Unmarshal([]byte(l), &rec) == nil && rec.Level == level {
			out = append(out, l)
		}
	}
	return out
}

// world is a pool on a fake clock, with checkers (replicas) made on demand,
// each with its own upstream client.
type world struct {
	mdb   *mongotest.DB
	db    *mongo.Database
	up    *fakeupstream.Server
	clock *clockwork.FakeClock
	logs  *syncBuffer
	kind  string
}

func newWorld(t *testing.T, kind string, keys map[string]float64, backups int) *world {
	t.Helper()
	mdb := mongotest.New(t)
	w := &world{mdb: mdb, db: mdb.Database, up: fakeupstream.New(kind), logs: &syncBuffer{}, kind: kind,
		clock: clockwork.NewFakeClockAt(time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC))}
	t.Cleanup(w.up.Close)
	seedPool(t, w.db, w.up, openhands, keys, backups)
	return w
}

func (w *world) checker(t testing.TB, mutate func(*checker.Config, *checker.Pool)) *checker.Checker {
	t.Helper()
	prov, err := spend.New(w.kind, w.up.URL, &spend.Client{MaxAttempts: 2, Now: w.clock.Now,
		Wait: func(context.Context, time.Duration) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	pool := checker.Pool{Pool: openhands, Provider: prov, Threshold: 9.95, RotateUnauthorized: true}
	cfg := checker.Config{Instance: "test", Clock: w.clock, Adaptive: true, Concurrency: 4, WriteTimeout: testWriteTimeout,
		Logger: slog.New(slog.NewJSONHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	if mutate != nil {
		mutate(&cfg, &pool)
	}
	cfg.Pools = []checker.Pool{pool}
	chk, err := checker.New(w.db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := chk.EnsureIndexes(context.Background()); err != nil {
		t.Fatal(err)
	}
	return chk
}

func cycle(t *testing.T, chk *checker.Checker) checker.PoolSummary {
	t.Helper()
	sum, err := chk.Cycle(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return sum.Pools[0]
}

func tenKeys(prefix string, spend float64) map[string]float64 {
	m := map[string]float64{}
	for i := range 10 {
		m[fmt.Sprintf("%s%02d", prefix, i)] = spend
	}
	return m
}

// An upstream that rejects every key at once (an auth outage, a block, a
// wrong URL) must not burn the backup pool: no rotation, a failed cycle,
// and a reason. One dead key among live ones still rotates.
func TestSystemicRejectionRotatesNone(t *testing.T) {
	t.Run("all rejected", func(t *testing.T) {
		w := newWorld(t, "openhands", tenKeys("k", 0.5), 10)
		for id := range tenKeys("k", 0) {
			w.up.SetStatus(secret(id), 401)
		}
		chk := w.checker(t, nil)
		// The first rejection of each key is asked again at the minimum
		// interval; the second makes it dead, and the guard holds.
		if ps := cycle(t, chk); ps.Rotated != 0 || ps.FailedBy["rejected_once"] != 10 {
			t.Fatalf("first cycle: rotated %d, failed by %v; want every key asked again", ps.Rotated, ps.FailedBy)
		}
		w.clock.Advance(10 * time.Second)
		sum, err := chk.Cycle(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		ps := sum.Pools[0]
		if ps.Rotated != 0 || ps.Unauthorized != 10 {
			t.Fatalf("rotated %d of %d rejected keys, want none", ps.Rotated, ps.Unauthorized)
		}
		if sum.Clean() || len(ps.Errors) == 0 || !strings.Contains(ps.Errors[0], "10 of 10") {
			t.Errorf("cycle clean=%v, errors %q: want a failed cycle that says why", sum.Clean(), ps.Errors)
		}
		if n := countDocs(t, w.db.Collection(openhands.BackupsCollection), bson.M{"isUsed": true}); n != 0 {
			t.Errorf("%d backups used", n)
		}
		if len(w.logs.lines("ERROR")) != 1 {
			t.Errorf("want one error line, got %v", w.logs.lines("ERROR"))
		}
	})
	t.Run("one dead key", func(t *testing.T) {
		w := newWorld(t, "openhands", tenKeys("k", 0.5), 10)
		w.up.SetStatus(secret("k03"), 401)
		chk := w.checker(t, nil)
		cycle(t, chk)
		w.clock.Advance(10 * time.Second)
		ps := cycle(t, chk)
		if ps.Rotated != 1 || len(ps.Errors) != 0 {
			t.Fatalf("rotated %d, errors %q; want the dead key rotated", ps.Rotated, ps.Errors)
		}
	})
	t.Run("guard off", func(t *testing.T) {
		w := newWorld(t, "openhands", tenKeys("k", 0.5), 10)
		for id := range tenKeys("k", 0) {
			w.up.SetStatus(secret(id), 403)
		}
		chk := w.checker(t, func(c *checker.Config, _ *checker.Pool) { c.RejectShare = -1 })
		cycle(t, chk)
		w.clock.Advance(10 * time.Second)
		ps := cycle(t, chk)
		if ps.Rotated != 10 {
			t.Fatalf("rotated %d, want 10 with the guard off", ps.Rotated)
		}
	})
	t.Run("rejections add up over cycles", func(t *testing.T) {
		// With adaptive cadence a cycle polls few keys: the guard counts the
		// last RejectWindow, so an outage is caught after RejectMin-1 rotations.
		w := newWorld(t, "openhands", map[string]float64{"a": 0.5, "b": 0.5, "c": 0.5, "d": 0.5}, 10)
		chk := w.checker(t, nil)
		total := 0
		for _, id := range []string{"a", "b", "c", "d"} {
			w.up.SetStatus(secret(id), 401)
			// Only this key is due, twice (a key is dead on its second
			// rejection in a row).
			for range 2 {
				for _, other := range []string{"a", "b", "c", "d"} {
					// Not due, and within --max-check-interval (a plan beyond it is due).
					next := w.clock.Now().Add(10 * time.Minute)
					if other == id {
						next = w.clock.Now().Add(-time.Second)
					}
					_, _ = w.db.Collection(openhands.KeysCollection).UpdateOne(context.Background(), bson.M{"_id": other}, bson.M{"$set": bson.M{"nextSpendCheck": next}})
				}
				total += cycle(t, chk).Rotated
				w.clock.Advance(time.Minute)
			}
		}
		if total != 2 {
			t.Fatalf("rotated %d keys one cycle at a time, want 2 (then the guard trips)", total)
		}
	})
}

// A Retry-After is kept in the key's plan: no replica polls the key
// before it, in any later cycle.
func TestRetryAfterInThePlan(t *testing.T) {
	w := newWorld(t, "openhands", map[string]float64{"limited": 1, "free": 1}, 0)
	w.up.SetStatus(secret("limited"), 429)
	w.up.SetRetryAfter(secret("limited"), "600")
	start := w.clock.Now()
	ps := cycle(t, w.checker(t, nil))
	if ps.Failed != 1 || ps.FailedBy["retry_after"] != 1 {
		t.Fatalf("failed %d by %v, want the limited key", ps.Failed, ps.FailedBy)
	}
	calls := w.up.Calls(secret("limited"))
	var doc struct {
		Next time.Time `bson:"nextSpendCheck"`
	}
	if err := w.db.Collection(openhands.KeysCollection).FindOne(context.Background(), bson.M{"_id": "limited"}).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	if want := start.Add(600 * time.Second); !doc.Next.Equal(want) {
		t.Errorf("nextSpendCheck %v, want %v", doc.Next, want)
	}
	// Another replica, with a client that never saw the 429.
	other := w.checker(t, nil)
	for range 5 {
		w.clock.Advance(time.Minute)
		cycle(t, other)
	}
	if got := w.up.Calls(secret("limited")); got != calls {
		t.Fatalf("polled %d more times inside its Retry-After", got-calls)
	}
	w.clock.Advance(5 * time.Minute)
	w.up.SetStatus(secret("limited"), 0)
	cycle(t, other)
	if w.up.Calls(secret("limited")) != calls+1 {
		t.Fatal("not polled after its Retry-After")
	}
}

// An upstream outage is one warning per cycle, not a line per key, and the
// host is backed off: a cycle during the pause sends nothing.
func TestOutageIsOneLinePerCycle(t *testing.T) {
	w := newWorld(t, "openhands", tenKeys("k", 1), 0)
	for id := range tenKeys("k", 0) {
		w.up.SetStatus(secret(id), 503)
	}
	chk := w.checker(t, func(c *checker.Config, _ *checker.Pool) { c.Adaptive = false })
	ps := cycle(t, chk)
	if ps.Failed != 10 {
		t.Fatalf("failed %d, want 10", ps.Failed)
	}
	if warns := w.logs.lines("WARN"); len(warns) != 1 || !strings.Contains(warns[0], `"failed":10`) {
		t.Fatalf("warnings %d, want one summary: %v", len(warns), warns)
	}
	// At most the requests in flight when the host went down (4), twice each.
	first := w.up.TotalCalls()
	if first > 8 {
		t.Errorf("%d requests to a failing host for 10 keys", first)
	}
	w.clock.Advance(500 * time.Millisecond)
	cycle(t, chk)
	if w.up.TotalCalls() != first {
		t.Errorf("%d requests while the host backs off", w.up.TotalCalls()-first)
	}
	if warns := w.logs.lines("WARN"); len(warns) != 2 {
		t.Errorf("warnings %d after two cycles, want 2", len(warns))
	}
}

// The default provider reads a key's whole spend, every page of it.
func TestPaginatedSpendRotates(t *testing.T) {
	w := newWorld(t, "openhands", map[string]float64{"big": 12, "small": 3}, 2)
	w.up.SetPages(secret("big"), 3)
	w.up.SetPages(secret("small"), 3)
	ps := cycle(t, w.checker(t, nil))
	if ps.Rotated != 1 {
		t.Fatalf("rotated %d, want the $12 key", ps.Rotated)
	}
	if n := countDocs(t, w.db.Collection(openhands.KeysCollection), bson.M{"_id": "big"}); n != 0 {
		t.Error("the $12 key is still in service")
	}
	var doc struct {
		Spend float64 `bson:"totalSpend"`
	}
	if err := w.db.Collection(openhands.KeysCollection).FindOne(context.Background(), bson.M{"_id": "small"}).Decode(&doc); err != nil || doc.Spend != 3 {
		t.Errorf("small key's spend %v (%v), want 3", doc.Spend, err)
	}
}

// LiteLLM's own budget refusal (its real text) rotates with budget_exceeded.
func TestBudgetRefusalRotates(t *testing.T) {
	w := newWorld(t, "openhands", map[string]float64{"spent": 0.000015}, 1)
	w.up.SetBudget(secret("spent"), 0.00001)
	ps := cycle(t, w.checker(t, nil))
	if ps.Rotated != 1 {
		t.Fatalf("rotated %d, failed %d (%s)", ps.Rotated, ps.Failed, ps.FailedExample)
	}
	var h struct {
		Reason string  `bson:"rotationReason"`
		Spend  float64 `bson:"spend"`
	}
	if err := w.db.Collection(openhands.HistoryCollection).FindOne(context.Background(), bson.M{}).Decode(&h); err != nil {
		t.Fatal(err)
	}
	if h.Reason != "budget_exceeded_0.00" || h.Spend != 0.000015 {
		t.Errorf("history %+v, want budget_exceeded at 1.5e-05", h)
	}
}

// OpenRouter: --budget-ratio compares the limit with what was spent in the
// limit's period (limit − limit_remaining), not the lifetime usage.
func TestOpenRouterBudgetRatioUsesLimitRemaining(t *testing.T) {
	w := newWorld(t, "openrouter", map[string]float64{"quiet": 250, "busy": 250}, 2)
	for id, period := range map[string]float64{"quiet": 10, "busy": 85} {
		w.up.SetBudget(secret(id), 100)
		w.up.SetPeriodSpend(secret(id), period)
	}
	ps := cycle(t, w.checker(t, func(_ *checker.Config, p *checker.Pool) { p.Threshold = 1000; p.BudgetRatio = 0.8 }))
	if ps.Rotated != 1 {
		t.Fatalf("rotated %d, want only the key at 85%% of this month's limit", ps.Rotated)
	}
	if n := countDocs(t, w.db.Collection(openhands.KeysCollection), bson.M{"_id": "quiet"}); n != 1 {
		t.Error("the key at 10% of its monthly limit was rotated on its lifetime usage")
	}
}

// The measurement: 100 keys, an upstream answering 503, three
// cycles 10 s apart, with the daemon's settings (4 attempts, concurrency
// 16). Before: 1,200 requests and 300 warnings. Now the requests are
// bounded by those in flight when the host fails, and one warning a cycle.
func TestOutageAtScale(t *testing.T) {
	if testing.Short() {
		t.Skip("seeds 100 keys")
	}
	keys := map[string]float64{}
	for i := range 100 {
		keys[fmt.Sprintf("k%03d", i)] = 1
	}
	w := newWorld(t, "openhands", keys, 0)
	for id := range keys {
		w.up.SetStatus(secret(id), 503)
	}
	prov, _ := spend.New("openhands", w.up.URL, &spend.Client{Now: w.clock.Now, Wait: func(context.Context, time.Duration) error { return nil }})
	chk := w.checker(t, func(c *checker.Config, p *checker.Pool) { c.Adaptive, c.Concurrency, p.Provider = false, 16, prov })
	for range 3 {
		if ps := cycle(t, chk); ps.Failed != 100 {
			t.Fatalf("failed %d, want 100", ps.Failed)
		}
		w.clock.Advance(10 * time.Second)
	}
	t.Logf("%d requests, %d warnings", w.up.TotalCalls(), len(w.logs.lines("WARN")))
	if n := w.up.TotalCalls(); n > 3*16*4 {
		t.Errorf("%d requests, want at most the 16 in flight × 4 attempts per cycle", n)
	}
	if n := len(w.logs.lines("WARN")); n != 3 {
		t.Errorf("%d warnings, want 3", n)
	}
}
