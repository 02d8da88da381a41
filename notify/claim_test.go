package notify

import (
	"context"
	"log/slog"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/internal/mongotest"
)

// faultyStore is a claims collection reached through a proxy that can cut
// or hold commands, and the same collection reached directly (to look).
func faultyStore(t *testing.T) (*mongotest.Proxy, *mongo.Collection, *mongo.Collection) {
	t.Helper()
	mdb := mongotest.New(t)
	proxy := mdb.Proxy(t)
	client := mdb.NewClient(t, options.Client().ApplyURI(proxy.URI()))
	return proxy, client.Database(mdb.Name).Collection(Collection), mdb.Database.Collection(Collection)
}

type claimDoc struct {
	ID       string `bson:"_id"`
	State    string `bson:"state"`
	Instance string `bson:"instance"`
	Run      string `bson:"run"`
	Attempts int    `bson:"attempts"`
}

func claims(t *testing.T, coll *mongo.Collection) []claimDoc {
	t.Helper()
	cur, err := coll.Find(context.Background(), bson.M{})
	if err != nil {
		t.Fatal(err)
	}
	var out []claimDoc
	if err := cur.All(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// The claim's insert reaches the store but its reply is lost: the retry
// finds the claim. It is this delivery's own, so the delivery goes on: the
// event is sent once, not counted as a duplicate, and recorded sent.
func TestClaimReplyLost(t *testing.T) {
	proxy, coll, direct := faultyStore(t)
	rc := newReceiver(t, ok)
	h := newHarness(t, Config{Default: Route{Targets: []Target{{URL: rc.URL, Format: JSON}}}, Store: coll, MaxAttempts: 3})
	proxy.FailCommand(1, mongotest.After) // the claim's insert runs; its reply never arrives
	h.n.Notify(rotatedFixture())
	h.retry(t)
	h.close()
	if got := proxy.Commands(); len(got) == 0 || got[0] != "insert "+Collection {
		t.Fatalf("first store command %v, want the claim's insert", got)
	}
	if rc.count() != 1 {
		t.Errorf("receiver got %d requests, want 1", rc.count())
	}
	if got := h.counter("duplicate", "openhands", "json"); got != 0 {
		t.Errorf("duplicate = %v, want 0: the claim is this delivery's own", got)
	}
	if got := h.counter("sent", "openhands", "json"); got != 1 {
		t.Errorf("sent = %v, want 1", got)
	}
	cs := claims(t, direct)
	if len(cs) != 1 || cs[0].State != "sent" || cs[0].Instance != "replica-a" {
		t.Errorf("claims %+v, want one, sent, by replica-a", cs)
	}
}

// flaky is a receiver that answers 500 to its first `fails` requests and
// 200 after, and counts the ones it accepted.
type flaky struct {
	*receiver
	accepted atomic.Int64
}

func newFlaky(t *testing.T, fails int) *flaky {
	f := &flaky{}
	f.receiver = newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n <= fails {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		f.accepted.Add(1)
	})
	return f
}

// killedOwner runs replica-a until it has claimed the event and is waiting
// to retry it, then stops it as a kill would: cut off from the store, so it
// records nothing. Its claim stays `claimed` with its deadline.
func killedOwner(t *testing.T, proxy *mongotest.Proxy, cfg Config, ev Event, rc *flaky) *harness {
	t.Helper()
	a := newHarness(t, cfg)
	a.n.Notify(ev)
	rc.wait(t) // the first attempt, answered 500
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := a.clock.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal("the owner never waited to retry")
	}
	proxy.Pause()
	gone, stop := context.WithCancel(context.Background())
	stop()
	a.n.Close(gone)
	proxy.Resume()
	return a
}

func staleGauge(h *harness, pool string) float64 {
	var m dto.Metric
	_ = h.n.stale.WithLabelValues(pool).Write(&m)
	return m.GetGauge().GetValue()
}

// Claims across restarts. An earlier run of the same replica id is over,
// so its claim is resumed once stale, and the event sent once; a claim of
// another replica id is never taken over (that replica may be alive and
// may have sent it), only counted as stale. A graceful stop leaves its
// claim resumable at once.
func TestClaimsAcrossRestarts(t *testing.T) {
	type env struct {
		proxy        *mongotest.Proxy
		coll, direct *mongo.Collection
		rc           *flaky
		clock        *clockwork.FakeClock
		ev           Event
	}
	cfg := func(e *env, instance string) Config {
		return Config{Default: Route{Targets: []Target{{URL: e.rc.URL, Format: JSON}}}, Store: e.coll, Instance: instance,
			// A store call has a minute of real time (the fake clock's bound
			// grows with it; the tests move past it): after the owner's
			// store cut, the driver finds the server again in its own time.
			Clock: e.clock, MaxAttempts: 3, StoreTimeout: time.Minute}
	}
	for _, tc := range []struct {
		name string
		// long: another owner killed with the store cut; under -short
		// the first case stands for them.
		long bool
		run  func(t *testing.T, e *env)
	}{
		{"same replica id: resumed once stale, sent once", false, func(t *testing.T, e *env) {
			a := killedOwner(t, e.proxy, cfg(e, "replica-a"), e.ev, e.rc)
			b := newHarness(t, cfg(e, "replica-a")) // the restart
			b.n.sweep()
			b.n.Notify(e.ev) // a later cycle reports it again
			b.close()
			if e.rc.accepted.Load() != 0 || staleGauge(b, "openhands") != 0 {
				t.Fatalf("resumed before the claim was stale (accepted %d)", e.rc.accepted.Load())
			}
			e.clock.Advance(a.n.bound + time.Second)
			b = newHarness(t, cfg(e, "replica-a"))
			b.n.sweep()
			b.n.sweep() // a second sweep while the first resume is queued or done
			b.close()
			if e.rc.accepted.Load() != 1 {
				t.Fatalf("receiver accepted %d, want 1", e.rc.accepted.Load())
			}
			cs := claims(t, e.direct)
			if len(cs) != 1 || cs[0].State != "sent" || cs[0].Run != b.n.run {
				t.Fatalf("claims %+v, want one sent by the restarted run %s", cs, b.n.run)
			}
			b.n.sweep()
			if staleGauge(b, "openhands") != 0 {
				t.Fatal("the resumed claim still counts as stale")
			}
		}},
		{"same replica id: a later cycle's event takes the stale claim over", true, func(t *testing.T, e *env) {
			a := killedOwner(t, e.proxy, cfg(e, "replica-a"), e.ev, e.rc)
			e.clock.Advance(a.n.bound + time.Second)
			b := newHarness(t, cfg(e, "replica-a"))
			b.n.Notify(e.ev)
			b.close()
			if e.rc.accepted.Load() != 1 || b.counter("duplicate", "openhands", "json") != 0 {
				t.Fatalf("accepted %d, duplicate %v; want 1, 0", e.rc.accepted.Load(), b.counter("duplicate", "openhands", "json"))
			}
		}},
		{"same replica id: the take-over's reply is lost", true, func(t *testing.T, e *env) {
			a := killedOwner(t, e.proxy, cfg(e, "replica-a"), e.ev, e.rc)
			e.clock.Advance(a.n.bound + time.Second)
			b := newHarness(t, cfg(e, "replica-a"))
			e.proxy.FailCommand(2, mongotest.After) // 1: the sweep's find; 2: the take-over
			b.n.sweep()
			b.retry(t)
			b.close()
			if got := e.proxy.Commands(); len(got) < 2 || got[1] != "update "+Collection {
				t.Fatalf("store commands %v, want the take-over second", got)
			}
			if e.rc.accepted.Load() != 1 || b.counter("duplicate", "openhands", "json") != 0 {
				t.Fatalf("accepted %d, duplicate %v; want 1, 0", e.rc.accepted.Load(), b.counter("duplicate", "openhands", "json"))
			}
		}},
		{"another replica id: never taken over, counted stale", true, func(t *testing.T, e *env) {
			a := killedOwner(t, e.proxy, cfg(e, "replica-a"), e.ev, e.rc)
			e.clock.Advance(a.n.bound + time.Second)
			b := newHarness(t, cfg(e, "replica-b"))
			b.n.sweep()
			b.n.Notify(e.ev)
			b.close()
			if e.rc.accepted.Load() != 0 || b.counter("duplicate", "openhands", "json") != 1 {
				t.Fatalf("accepted %d, duplicate %v; want 0, 1", e.rc.accepted.Load(), b.counter("duplicate", "openhands", "json"))
			}
			if staleGauge(b, "openhands") != 1 {
				t.Fatalf("stale claims %v, want 1", staleGauge(b, "openhands"))
			}
			stale, err := StaleClaims(context.Background(), e.direct, e.clock.Now())
			if err != nil || len(stale) != 1 || stale[0].Instance != "replica-a" {
				t.Fatalf("StaleClaims = %+v, %v; want replica-a's", stale, err)
			}
		}},
		{"another live replica's claim: never doubled, even past its deadline", false, func(t *testing.T, e *env) {
			a := newHarness(t, cfg(e, "replica-a"))
			b := newHarness(t, cfg(e, "replica-b"))
			a.n.Notify(e.ev)
			e.rc.wait(t) // a claimed it; its first attempt failed
			b.n.Notify(e.ev)
			b.close()
			// a is frozen past its deadline (a paused VM): woken, it posts nothing.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if err := e.clock.BlockUntilContext(ctx, 1); err != nil {
				t.Fatal("a never waited to retry")
			}
			e.clock.Advance(a.n.bound)
			a.close()
			if e.rc.count() != 1 || b.counter("duplicate", "openhands", "json") != 1 {
				t.Fatalf("receiver got %d requests, duplicate %v; want 1, 1", e.rc.count(), b.counter("duplicate", "openhands", "json"))
			}
			cs := claims(t, e.direct)
			if len(cs) != 1 || cs[0].State != "failed" {
				t.Fatalf("claims %+v, want a's, failed", cs)
			}
		}},
		{"same replica id, receiver no longer configured: given up, counted failed", true, func(t *testing.T, e *env) {
			a := killedOwner(t, e.proxy, cfg(e, "replica-a"), e.ev, e.rc)
			e.clock.Advance(a.n.bound + time.Second)
			other := newReceiver(t, ok)
			c := cfg(e, "replica-a")
			c.Default.Targets = []Target{{URL: other.URL, Format: JSON}}
			b := newHarness(t, c)
			b.n.sweep()
			b.close()
			cs := claims(t, e.direct)
			if len(cs) != 1 || cs[0].State != "failed" || b.counter("failed", "openhands", "json") != 1 || other.count() != 0 {
				t.Fatalf("claims %+v, failed %v, other receiver %d; want failed, 1, 0", cs, b.counter("failed", "openhands", "json"), other.count())
			}
		}},
		{"same replica id, a claim from before claims held their event: given up", false, func(t *testing.T, e *env) {
			b := newHarness(t, cfg(e, "replica-a"))
			if _, err := e.direct.InsertOne(context.Background(), bson.M{"_id": claimID(b.n.all[0], e.ev), "event": e.ev.ID,
				"kind": "rotated", "pool": "openhands", "target": b.n.all[0].fp, "format": "json", "instance": "replica-a",
				"claimedAt": e.clock.Now().Add(-DefaultBound - time.Minute), "state": "claimed"}); err != nil {
				t.Fatal(err)
			}
			b.n.sweep()
			b.close()
			if cs := claims(t, e.direct); len(cs) != 1 || cs[0].State != "failed" || e.rc.count() != 0 {
				t.Fatalf("claims %+v, receiver %d; want failed, 0", cs, e.rc.count())
			}
		}},
		{"same replica id, a claim from before claims held their event: a later cycle's event takes it over", false, func(t *testing.T, e *env) {
			b := newHarness(t, cfg(e, "replica-a"))
			if _, err := e.direct.InsertOne(context.Background(), bson.M{"_id": claimID(b.n.all[0], e.ev), "event": e.ev.ID,
				"kind": "rotated", "pool": "openhands", "target": b.n.all[0].fp, "format": "json", "instance": "replica-a",
				"claimedAt": e.clock.Now().Add(-DefaultBound - time.Minute), "state": "claimed"}); err != nil {
				t.Fatal(err)
			}
			b.n.Notify(e.ev)
			b.retry(t) // the flaky receiver's first answer is a 500
			b.close()
			if cs := claims(t, e.direct); len(cs) != 1 || cs[0].State != "sent" || cs[0].Run != b.n.run || e.rc.accepted.Load() != 1 {
				t.Fatalf("claims %+v, accepted %d; want sent by run %s, 1", cs, e.rc.accepted.Load(), b.n.run)
			}
		}},
		{"graceful stop: the claim is resumable at once by the same id", false, func(t *testing.T, e *env) {
			a := newHarness(t, cfg(e, "replica-a"))
			a.n.Notify(e.ev)
			e.rc.wait(t)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if err := e.clock.BlockUntilContext(ctx, 1); err != nil {
				t.Fatal("a never waited to retry")
			}
			gone, stop := context.WithCancel(context.Background())
			stop()
			a.n.Close(gone) // the store is reachable: the claim is released
			e.clock.Advance(time.Second)
			b := newHarness(t, cfg(e, "replica-a"))
			b.n.sweep()
			b.close()
			if e.rc.accepted.Load() != 1 {
				t.Fatalf("receiver accepted %d, want 1", e.rc.accepted.Load())
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.long && testing.Short() {
				t.Skip("waits out a store cut")
			}
			e := &env{rc: newFlaky(t, 1), clock: clockwork.NewFakeClockAt(time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)), ev: rotatedFixture()}
			e.proxy, e.coll, e.direct = faultyStore(t)
			tc.run(t, e)
		})
	}
}

// The claim's insert is held in the network past its timeout and reaches
// the store late: before the retry (the retry finds this delivery's own
// claim and goes on) or after it (the late insert is refused by the claim
// the retry wrote). Either way the event is sent once and recorded sent.
func TestClaimInsertDeliveredLate(t *testing.T) {
	if testing.Short() {
		t.Skip("holds a command past its timeout (a lost reply: TestClaimReplyLost)")
	}
	for _, lateFirst := range []bool{true, false} {
		t.Run(map[bool]string{true: "late insert before the retry", false: "late insert after the delivery"}[lateFirst], func(t *testing.T) {
			proxy, coll, direct := faultyStore(t)
			rc := newReceiver(t, ok)
			h := newHarness(t, Config{Default: Route{Targets: []Target{{URL: rc.URL, Format: JSON}}}, Store: coll,
				MaxAttempts: 3, StoreTimeout: time.Second})
			held := proxy.HoldCommand(1)
			h.n.Notify(rotatedFixture())
			<-held.Arrived()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := h.clock.BlockUntilContext(ctx, 1); err != nil { // the insert timed out
				t.Fatal("the worker never waited to retry")
			}
			late := func() {
				reply, err := held.Deliver(ctx)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("late %s: %s", held.Command, reply)
			}
			if lateFirst {
				late()
			}
			h.retry(t)
			rc.wait(t)
			if !lateFirst {
				late()
			}
			h.close()
			if rc.count() != 1 || h.counter("sent", "openhands", "json") != 1 || h.counter("duplicate", "openhands", "json") != 0 {
				t.Errorf("receiver got %d, sent %v, duplicate %v; want 1, 1, 0", rc.count(), h.counter("sent", "openhands", "json"),
					h.counter("duplicate", "openhands", "json"))
			}
			if cs := claims(t, direct); len(cs) != 1 || cs[0].State != "sent" {
				t.Errorf("claims %+v, want one, sent", cs)
			}
		})
	}
}

// The daemon sweeps on its own, every SweepEvery: a claim another replica
// left (here one written before claims carried a deadline) shows in the
// gauge once stale, and DefaultBound is the default settings' bound.
func TestSweepEvery(t *testing.T) {
	if got := bound(withDefaults(Config{})); got != DefaultBound {
		t.Fatalf("DefaultBound = %s, bound of the defaults = %s", DefaultBound, got)
	}
	mdb := mongotest.New(t)
	coll := mdb.Database.Collection(Collection)
	clock := clockwork.NewFakeClockAt(time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC))
	if _, err := coll.InsertOne(context.Background(), bson.M{"_id": "no_backup/factory/k9/abcd@1234", "event": "no_backup/factory/k9/abcd",
		"kind": "no_backup", "pool": "factory", "target": "1234", "format": "json", "instance": "old-host-42",
		"claimedAt": clock.Now().Add(-DefaultBound + 90*time.Second), "state": "claimed"}); err != nil {
		t.Fatal(err)
	}
	swept := make(chan struct{}, 10)
	rc := newReceiver(t, ok)
	h := &harness{clock: clock, reg: prometheus.NewRegistry()}
	n, err := New(Config{Default: Route{Targets: []Target{{URL: rc.URL, Format: JSON}}}, Store: coll, Clock: clock,
		Instance: "replica-a", SweepEvery: time.Minute, Registerer: h.reg})
	if err != nil {
		t.Fatal(err)
	}
	n.onSweep = func() { swept <- struct{}{} }
	h.n = n
	t.Cleanup(h.close)
	for _, want := range []float64{0, 1} { // at 1 min it has 30 s left; at 2 min it is stale
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := clock.BlockUntilContext(ctx, 1); err != nil {
			t.Fatal("no sweep ticker")
		}
		cancel()
		clock.Advance(time.Minute)
		select {
		case <-swept:
		case <-time.After(30 * time.Second):
			t.Fatal("no sweep after SweepEvery")
		}
		if got := staleGauge(h, "factory"); got != want {
			t.Fatalf("at %s: stale claims %v, want %v", clock.Now().Format(time.TimeOnly), got, want)
		}
	}
	if rc.count() != 0 {
		t.Fatal("another replica's stale claim was sent")
	}
}

// A crossing's claim insert is held in the network and reaches the store
// only after the count rose back and the re-arm cleared the claim: the
// late insert must not stand for the cleared crossing, or the next one is
// taken for it and never notified.
func TestLateClaimInsertAfterTheRearm(t *testing.T) {
	if testing.Short() {
		t.Skip("holds a command past its timeout (a lost reply: TestClaimReplyLost)")
	}
	proxy, coll, direct := faultyStore(t)
	rc := newReceiver(t, ok)
	route := Route{Targets: []Target{{URL: rc.URL, Format: JSON}}, BackupsBelow: 3}
	a := newHarness(t, Config{Pools: map[string]Route{"factory": route}, Store: coll, MaxAttempts: 3, StoreTimeout: time.Second})
	held := proxy.HoldCommand(1)
	a.n.Backups("factory", 1) // the first crossing
	<-held.Arrived()
	a.retry(t) // the insert timed out; the retry's insert claims it
	rc.wait(t)
	a.n.Backups("factory", 5) // back above: re-armed
	a.close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reply, err := held.Deliver(ctx) // the first insert, late
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("late %s: %s", held.Command, reply)
	// The second crossing, seen by the next leader.
	b := newHarness(t, Config{Pools: map[string]Route{"factory": route}, Store: coll, Instance: "replica-b", Clock: a.clock})
	b.n.Backups("factory", 2)
	b.close()
	if rc.count() != 2 || b.counter("duplicate", "factory", "json") != 0 {
		t.Fatalf("receiver got %d, duplicate %v; want 2 (one per crossing), 0; claims %+v",
			rc.count(), b.counter("duplicate", "factory", "json"), claims(t, direct))
	}
	if stale, err := StaleClaims(ctx, direct, a.clock.Now().Add(DefaultBound+time.Hour)); err != nil || len(stale) != 0 {
		t.Fatalf("stale claims %+v (%v), want none", stale, err)
	}
}

// signalHandler is a log handler that reports each record whose message
// is msg: a test waits for a step that only logs.
type signalHandler struct {
	slog.Handler
	msg string
	ch  chan struct{}
}

func (signalHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h signalHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.ch <- struct{}{}
	}
	return nil
}

// The receiver accepted the event but the store was unreachable when the
// delivery recorded `sent`: the daemon records it when the store is back
// (its next sweep), so the claim never reads as stale and a restart of the
// same replica does not send the event again.
func TestSentButUnrecordedIsRecordedLater(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out a store cut")
	}
	proxy, coll, direct := faultyStore(t)
	rc := newReceiver(t, func(int, http.ResponseWriter, *http.Request) { proxy.Pause() })
	clock := clockwork.NewFakeClockAt(time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC))
	failed := signalHandler{Handler: slog.DiscardHandler, msg: "could not record the notification's outcome; its claim will show as stale", ch: make(chan struct{}, 1)}
	cfg := Config{Default: Route{Targets: []Target{{URL: rc.URL, Format: JSON}}}, Store: coll, Clock: clock, StoreTimeout: 2 * time.Second}
	c := cfg
	c.Logger = slog.New(failed)
	a := newHarness(t, c)
	a.n.Notify(rotatedFixture())
	select {
	case <-failed.ch:
	case <-time.After(30 * time.Second):
		t.Fatal("the outcome's record never failed")
	}
	proxy.Resume()
	a.n.sweep() // the store is back
	clock.Advance(a.n.bound + time.Minute)
	a.n.sweep()
	if got := staleGauge(a, "openhands"); got != 0 {
		t.Errorf("stale claims %v, want 0: the event was sent", got)
	}
	a.close()
	b := newHarness(t, cfg) // a restart of the same replica
	b.n.sweep()
	b.close()
	if rc.count() != 1 {
		t.Errorf("receiver got %d requests, want 1", rc.count())
	}
	if cs := claims(t, direct); len(cs) != 1 || cs[0].State != "sent" {
		t.Errorf("claims %+v, want one, sent", cs)
	}
}
