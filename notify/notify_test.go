package notify

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/spendchecker/spendchecker/internal/mongotest"
)

const apiKey = "sk-or-v1-0123456789abcdef0123456789abcdef"

func rotatedFixture() Event {
	return RotatedEvent(KeyRotation{Pool: "openhands", KeyID: "k1", NewKeyID: "b1", RotationID: "openhands.k1.ab12cd34",
		Reason: "proactive_threshold_9.97", Secret: apiKey, Spend: 9.97, Threshold: 9.95}, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
}

// receiver is an httptest webhook that records bodies and answers with
// answer(n) for the n-th request (from 1).
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	bodies [][]byte
	got    chan []byte
}

func newReceiver(t *testing.T, answer func(n int, w http.ResponseWriter, r *http.Request)) *receiver {
	rc := &receiver{got: make(chan []byte, 100)}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.bodies = append(rc.bodies, b)
		n := len(rc.bodies)
		rc.mu.Unlock()
		rc.got <- b
		answer(n, w, r)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.bodies)
}

func ok(int, http.ResponseWriter, *http.Request) {}

// wait returns the next body the receiver got, failing after a while
// rather than hanging.
func (rc *receiver) wait(t *testing.T) []byte {
	t.Helper()
	select {
	case b := <-rc.got:
		return b
	case <-time.After(2 * time.Minute):
		t.Fatal("the receiver got nothing")
		return nil
	}
}

type harness struct {
	n     *Notifier
	clock *clockwork.FakeClock
	reg   *prometheus.Registry
	mu    sync.Mutex
	waits []time.Duration
}

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	h := &harness{clock: clockwork.NewFakeClockAt(time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)), reg: prometheus.NewRegistry()}
	if fc, ok := cfg.Clock.(*clockwork.FakeClock); ok {
		h.clock = fc // shared with another harness
	} else if cfg.Clock == nil {
		cfg.Clock = h.clock
	}
	cfg.Registerer = h.reg
	if cfg.Jitter == nil {
		cfg.Jitter = func(time.Duration) time.Duration { return 0 }
	}
	if cfg.Instance == "" {
		cfg.Instance = "replica-a"
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n.onWait = func(d time.Duration) {
		h.mu.Lock()
		h.waits = append(h.waits, d)
		h.mu.Unlock()
	}
	h.n = n
	t.Cleanup(func() { n.Close(context.Background()) })
	return h
}

// retry lets the worker's next backoff elapse. It waits for the backoff
// timer as the clock's one waiter, so it cannot serve a notifier with a
// no_successful_cycle watcher: that ticker, armed by New, would count
// instead and the clock would move before the worker waits.
func (h *harness) retry(t *testing.T) {
	t.Helper()
	if h.n.cfg.NoCycleAfter > 0 {
		t.Fatal("retry: the watcher's ticker is also a waiter on the clock")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := h.clock.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal("the worker never waited for a retry")
	}
	// Exactly the wait (noted before the timer was armed): more could
	// pass the delivery's deadline.
	h.mu.Lock()
	wait := h.waits[len(h.waits)-1]
	h.mu.Unlock()
	h.clock.Advance(wait)
}

func (h *harness) close() { h.n.Close(context.Background()) }

func (h *harness) counter(name, pool, format string) float64 {
	var c *prometheus.CounterVec
	switch name {
	case "sent":
		c = h.n.sent
	case "failed":
		c = h.n.failed
	case "dropped":
		c = h.n.dropped
	case "duplicate":
		c = h.n.duplicate
	}
	var m dto.Metric
	_ = c.WithLabelValues(pool, format).Write(&m)
	return m.GetCounter().GetValue()
}

func TestReceivers(t *testing.T) {
	for _, tc := range []struct {
		name    string
		answer  func(n int, w http.ResponseWriter, r *http.Request)
		hangs   bool // the receiver never answers: the request timeout ends each attempt
		retries int  // backoffs the worker waits before its outcome
		sent    float64
		failed  float64
		reqs    int
	}{
		{name: "200", answer: ok, sent: 1, reqs: 1},
		{name: "204 (Discord's answer)", answer: func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }, sent: 1, reqs: 1},
		{name: "500 every time", answer: func(_ int, w http.ResponseWriter, _ *http.Request) { http.Error(w, "oops", 500) }, retries: 2, failed: 1, reqs: 3},
		{name: "500 then 200", answer: func(n int, w http.ResponseWriter, _ *http.Request) {
			if n == 1 {
				http.Error(w, "oops", 500)
			}
		}, retries: 1, sent: 1, reqs: 2},
		{name: "hangs past the request timeout", answer: func(_ int, _ http.ResponseWriter, r *http.Request) {
			<-r.Context().Done() // the client gives up: the connection closes
		}, hangs: true, retries: 2, failed: 1, reqs: 3},
		{name: "closes the connection", answer: func(_ int, w http.ResponseWriter, _ *http.Request) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		}, retries: 2, failed: 1, reqs: 3},
		{name: "404 (revoked webhook) is not retried", answer: func(_ int, w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "no_service", http.StatusNotFound)
		}, failed: 1, reqs: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := newReceiver(t, tc.answer)
			// A receiver that answers gets all the time a loaded machine
			// needs: the timeout is real time, not the harness's clock.
			timeout := time.Minute
			if tc.hangs {
				timeout = 200 * time.Millisecond
			}
			h := newHarness(t, Config{Default: Route{Targets: []Target{{URL: rc.URL + "/hook", Format: JSON}}},
				MaxAttempts: 3, RequestTimeout: timeout})
			h.n.Notify(rotatedFixture()) // returns at once whatever the receiver does
			for range tc.retries {
				h.retry(t)
			}
			h.close()
			if got := h.counter("sent", "openhands", "json"); got != tc.sent {
				t.Errorf("sent = %v, want %v", got, tc.sent)
			}
			if got := h.counter("failed", "openhands", "json"); got != tc.failed {
				t.Errorf("failed = %v, want %v", got, tc.failed)
			}
			if rc.count() != tc.reqs {
				t.Errorf("requests = %d, want %d", rc.count(), tc.reqs)
			}
		})
	}
}

// A receiver that hangs must not block the caller: the queue fills, the
// next event is dropped and counted, Notify returns.
func TestFullQueueDropsWithoutBlocking(t *testing.T) {
	release := make(chan struct{})
	rc := newReceiver(t, func(_ int, _ http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	h := newHarness(t, Config{Default: Route{Targets: []Target{{URL: rc.URL, Format: Slack}}}, QueueSize: 1, RequestTimeout: time.Hour})
	ev := rotatedFixture()
	h.n.Notify(ev)
	rc.wait(t) // the worker is inside the first request
	h.n.Notify(ev)
	h.n.Notify(ev)
	if got := h.counter("dropped", "openhands", "slack"); got != 1 {
		t.Fatalf("dropped = %v, want 1", got)
	}
	close(release)
	h.close()
	if got := h.counter("sent", "openhands", "slack"); got != 2 {
		t.Fatalf("sent = %v, want 2", got)
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	for _, tc := range []struct {
		name, header string
		want         time.Duration
	}{
		{"seconds", "7", 7 * time.Second},
		{"fraction (Discord)", "1.5", 1500 * time.Millisecond},
		{"HTTP date", "Fri, 02 Jan 2026 03:00:30 GMT", 30 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
				if n == 1 {
					w.Header().Set("Retry-After", tc.header)
					w.WriteHeader(http.StatusTooManyRequests)
				}
			})
			h := newHarness(t, Config{Default: Route{Targets: []Target{{URL: rc.URL, Format: Discord}}}})
			h.n.Notify(rotatedFixture())
			h.retry(t)
			h.close()
			if len(h.waits) != 1 || h.waits[0] != tc.want {
				t.Fatalf("waits = %v, want [%s]", h.waits, tc.want)
			}
			if h.counter("sent", "openhands", "discord") != 1 {
				t.Fatal("not sent after the Retry-After")
			}
		})
	}
	t.Run("longer than the cap gives up", func(t *testing.T) {
		rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Retry-After", "3600")
			w.WriteHeader(http.StatusTooManyRequests)
		})
		h := newHarness(t, Config{Default: Route{Targets: []Target{{URL: rc.URL, Format: JSON}}}, MaxRetryAfter: time.Minute})
		h.n.Notify(rotatedFixture())
		h.close()
		if h.counter("failed", "openhands", "json") != 1 || rc.count() != 1 {
			t.Fatalf("failed = %v after %d requests, want 1 after 1", h.counter("failed", "openhands", "json"), rc.count())
		}
	})
}

func TestBackoffIsExponentialWithJitter(t *testing.T) {
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { http.Error(w, "down", 502) })
	h := newHarness(t, Config{Default: Route{Targets: []Target{{URL: rc.URL, Format: JSON}}},
		MaxAttempts: 6, BaseBackoff: time.Second, MaxBackoff: 10 * time.Second})
	h.n.Notify(rotatedFixture())
	for range 5 {
		h.retry(t)
	}
	h.close()
	// Jitter 0: the fixed half of 1s, 2s, 4s, 8s, then the 10s cap.
	want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second}
	if len(h.waits) != len(want) {
		t.Fatalf("waits = %v, want %v", h.waits, want)
	}
	for i := range want {
		if h.waits[i] != want[i] {
			t.Fatalf("waits = %v, want %v", h.waits, want)
		}
	}
	// The default jitter stays within [d/2, d).
	n, err := New(Config{MaxBackoff: 8 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close(context.Background())
	seen := map[time.Duration]bool{}
	for range 200 {
		d := n.backoff(4) // 8s
		if d < 4*time.Second || d >= 8*time.Second {
			t.Fatalf("backoff(4) = %s, want within [4s, 8s)", d)
		}
		seen[d] = true
	}
	if len(seen) < 2 {
		t.Fatal("the default jitter never varies")
	}
}

func TestFormats(t *testing.T) {
	ev := rotatedFixture()
	ev.Message += " <@everyone> & co"
	for _, tc := range []struct {
		format Format
		check  func(t *testing.T, m map[string]any)
	}{
		{JSON, func(t *testing.T, m map[string]any) {
			for k, v := range map[string]any{"id": "rotated/openhands.k1.ab12cd34", "event": "rotated", "pool": "openhands",
				"keyId": "k1", "newKeyId": "b1", "rotationId": "openhands.k1.ab12cd34", "apiKeyMasked": "sk-or...cdef",
				"reason": "proactive_threshold_9.97", "spend": 9.97, "threshold": 9.95, "time": "2026-01-02T03:04:05Z"} {
				if m[k] != v {
					t.Errorf("%s = %v, want %v", k, m[k], v)
				}
			}
		}},
		{Slack, func(t *testing.T, m map[string]any) {
			text, _ := m["text"].(string)
			if len(m) != 1 || !strings.HasPrefix(text, "spendchecker rotated: pool openhands: key k1 (sk-or...cdef) rotated to b1") {
				t.Errorf("slack payload %v", m)
			}
			if !strings.Contains(text, "&lt;@everyone&gt; &amp; co") {
				t.Errorf("slack text not escaped: %q", text)
			}
		}},
		{Discord, func(t *testing.T, m map[string]any) {
			content, _ := m["content"].(string)
			if !strings.HasPrefix(content, "spendchecker rotated: pool openhands: key k1 (sk-or...cdef)") {
				t.Errorf("discord payload %v", m)
			}
			am, _ := m["allowed_mentions"].(map[string]any)
			if p, ok := am["parse"].([]any); !ok || len(p) != 0 {
				t.Errorf("allowed_mentions = %v, want parse []", m["allowed_mentions"])
			}
		}},
	} {
		t.Run(string(tc.format), func(t *testing.T) {
			b, err := tc.format.Encode(ev)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			tc.check(t, m)
		})
	}
	long := rotatedFixture()
	long.Message = strings.Repeat("é", 3000)
	b, _ := Discord.Encode(long)
	var m struct{ Content string }
	_ = json.Unmarshal(b, &m)
	if n := len([]rune(m.Content)); n != discordMax {
		t.Fatalf("discord content has %d characters, want %d", n, discordMax)
	}
	if _, err := ParseFormat("teams"); err == nil {
		t.Fatal("ParseFormat accepted teams")
	}
}

// No payload of any event, in any format, holds the secret.
func TestSecretsMasked(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	kr := KeyRotation{Pool: "p", KeyID: "k", NewKeyID: "n", RotationID: "r", Reason: "unauthorized", Secret: apiKey, Spend: 1, Threshold: 2}
	events := []Event{RotatedEvent(kr, at), NoBackupEvent(kr, at), KeyRejectedEvent("p", "k", apiKey, at),
		backupsLowEvent("p", 1, 3, at), noCycleEvent("i", at.Add(-time.Hour), at)}
	for _, ev := range events {
		for _, f := range Formats {
			b, err := f.Encode(ev)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(b), apiKey) || strings.Contains(string(b), apiKey[5:len(apiKey)-4]) {
				t.Errorf("%s %s payload holds the secret: %s", ev.Kind, f, b)
			}
		}
	}
	for _, ev := range events[:3] {
		if ev.APIKeyMasked != "sk-or...cdef" {
			t.Errorf("%s: apiKeyMasked = %q", ev.Kind, ev.APIKeyMasked)
		}
	}
}

// ParseURL refuses what is not an http(s) webhook, and its error names the
// URL as secret.RedactURL shows it.
func TestParseURL(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want string // in the error; "" accepts
	}{
		{"https://hooks.slack.com/services/T000/B000/XXXXSECRET", ""},
		{"http://alerts.internal:8080", ""},
		{"ftp://x/SECRETPATH", "notify URL ftp://x/xxxxx: want http:// or https://"},
		{"hooks.slack.com/services/SECRETPATH", "notify URL (unparsable URL): want http:// or https://"},
		{"https:///SECRETPATH", "notify URL (unparsable URL): no host"},
		{"http://[::1/SECRETPATH", "notify URL (unparsable URL): not a URL"},
		// Every delivery would fail to dial: bad configuration, not an outage.
		{"https://hooks.example:99999/SECRETPATH", "notify URL https://hooks.example:99999/xxxxx: port 99999 is not between 1 and 65535"},
		{"https://hooks.example:0/SECRETPATH", "notify URL https://hooks.example:0/xxxxx: port 0 is not between 1 and 65535"},
	} {
		_, err := ParseURL(tt.in)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("ParseURL(%q) = %v, want it accepted", tt.in, err)
		case tt.want != "" && (err == nil || err.Error() != tt.want):
			t.Errorf("ParseURL(%q) = %v, want %q", tt.in, err, tt.want)
		}
	}
}

// Errors and logs name the webhook without its secret.
func TestLogsMaskTheURL(t *testing.T) {
	var logs strings.Builder
	var mu sync.Mutex
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		conn, _, _ := w.(http.Hijacker).Hijack()
		conn.Close()
	})
	h := newHarness(t, Config{Default: Route{Targets: []Target{{URL: rc.URL + "/services/T0/B0/HOOKSECRET?k=QUERYSECRET", Format: Slack}}},
		MaxAttempts: 1, Logger: newTestLogger(&logs, &mu)})
	h.n.Notify(rotatedFixture())
	h.close()
	mu.Lock()
	defer mu.Unlock()
	out := logs.String()
	if !strings.Contains(out, "notification failed; giving up") {
		t.Fatalf("no failure logged:\n%s", out)
	}
	for _, s := range []string{"HOOKSECRET", "QUERYSECRET", apiKey} {
		if strings.Contains(out, s) {
			t.Fatalf("log holds %s:\n%s", s, out)
		}
	}
}

// backups_low: once per crossing below the threshold, re-armed when the
// count is back at or above it — also across a failover to a replica on
// the same store.
func TestBackupsLowOncePerCrossing(t *testing.T) {
	rc := newReceiver(t, ok)
	coll := mongotest.New(t).Database.Collection(Collection)
	route := Route{Targets: []Target{{URL: rc.URL, Format: JSON}}, BackupsBelow: 3}
	a := newHarness(t, Config{Pools: map[string]Route{"factory": route}, Store: coll})
	for _, n := range []int64{5, 2, 1, 2, 0} { // one crossing
		a.n.Backups("factory", n)
	}
	a.close()
	if rc.count() != 1 {
		t.Fatalf("notified %d times for one crossing, want 1", rc.count())
	}
	var ev Event
	_ = json.Unmarshal(rc.wait(t), &ev)
	if ev.Kind != BackupsLow || *ev.BackupsLeft != 2 || *ev.BackupsBelow != 3 || ev.Pool != "factory" {
		t.Fatalf("event %+v", ev)
	}
	// A new leader during the same crossing does not repeat it.
	b := newHarness(t, Config{Pools: map[string]Route{"factory": route}, Store: coll, Instance: "replica-b"})
	b.n.Backups("factory", 1)
	b.n.Backups("factory", 3) // back at the threshold: re-armed
	b.n.Backups("factory", 2) // a new crossing
	b.n.Backups("factory", 2)
	b.close()
	if rc.count() != 2 {
		t.Fatalf("notified %d times in all, want 2 (one per crossing)", rc.count())
	}
	if b.counter("duplicate", "factory", "json") != 1 {
		t.Fatalf("duplicate = %v, want 1", b.counter("duplicate", "factory", "json"))
	}
	// Only the leader counts.
	c := newHarness(t, Config{Pools: map[string]Route{"factory": route}, Epoch: func() (int64, bool) { return 7, false }})
	c.n.Backups("factory", 0)
	c.close()
	if rc.count() != 2 {
		t.Fatal("a replica that is not the leader notified")
	}
}

// One event is sent once, whichever of two replicas on the same store
// reports it, however they race.
func TestDedupAcrossReplicas(t *testing.T) {
	rc := newReceiver(t, ok)
	slack := newReceiver(t, ok)
	coll := mongotest.New(t).Database.Collection(Collection)
	targets := []Target{{URL: rc.URL, Format: JSON}, {URL: slack.URL, Format: Slack}}
	a := newHarness(t, Config{Default: Route{Targets: targets}, Store: coll})
	b := newHarness(t, Config{Default: Route{Targets: targets}, Store: coll, Instance: "replica-b"})
	var wg sync.WaitGroup
	for _, h := range []*harness{a, b, a, b} {
		wg.Add(1)
		go func() { defer wg.Done(); h.n.Notify(rotatedFixture()) }()
	}
	wg.Wait()
	a.close()
	b.close()
	if rc.count() != 1 || slack.count() != 1 {
		t.Fatalf("json receiver got %d, slack receiver got %d; want 1 each", rc.count(), slack.count())
	}
	dups := a.counter("duplicate", "openhands", "json") + b.counter("duplicate", "openhands", "json")
	if dups != 3 {
		t.Fatalf("duplicates = %v, want 3", dups)
	}
	n, err := coll.CountDocuments(context.Background(), map[string]any{"state": "sent"})
	if err != nil || n != 2 {
		t.Fatalf("claims in state sent = %d (%v), want 2", n, err)
	}
}

// no_successful_cycle: once per outage, after NoCycleAfter, from the
// replica that was polling; a success re-arms it.
func TestNoSuccessfulCycleOncePerOutage(t *testing.T) {
	rc := newReceiver(t, ok)
	h := newHarness(t, Config{Default: Route{Targets: []Target{{URL: rc.URL, Format: JSON}}}, NoCycleAfter: 10 * time.Minute})
	standby := newHarness(t, Config{Default: Route{Targets: []Target{{URL: rc.URL, Format: JSON}}}, NoCycleAfter: 10 * time.Minute,
		Clock: h.clock, Instance: "replica-b"})
	// New returns with both watchers' tickers on the clock: a ticker armed
	// later (when its goroutine first runs) would miss the advances below
	// and fire a whole period late. A cancelled context makes this a check
	// of the present count, not a wait.
	armed, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h.clock.BlockUntilContext(armed, 2); err != nil {
		t.Fatal("New returned before the no_successful_cycle watchers armed their tickers")
	}
	h.n.CycleStarted()
	h.n.CycleEnded(false)
	h.clock.Advance(9 * time.Minute)
	h.n.checkCycles()
	standby.n.checkCycles()
	if rc.count() != 0 {
		t.Fatal("notified before NoCycleAfter")
	}
	h.clock.Advance(time.Minute) // the ticker fires too
	var ev Event
	_ = json.Unmarshal(rc.wait(t), &ev)
	// Its time is the check that found the outage: one made at 9 minutes
	// (and still on its way when the count above was read) would show.
	if ev.Kind != NoSuccessfulCycle || ev.Instance != "replica-a" || !ev.LastSuccess.Equal(time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)) ||
		!ev.Time.Equal(time.Date(2026, 1, 2, 3, 10, 0, 0, time.UTC)) {
		t.Fatalf("event %+v", ev)
	}
	h.clock.Advance(time.Hour)
	h.n.checkCycles()
	h.n.CycleEnded(true) // re-armed
	h.clock.Advance(10 * time.Minute)
	h.n.checkCycles()
	standby.n.checkCycles()
	h.close()
	standby.close()
	if rc.count() != 2 {
		t.Fatalf("notified %d times for two outages, want 2", rc.count())
	}
	_ = json.Unmarshal(rc.wait(t), &ev)
	if ev.Instance != "replica-a" || !ev.LastSuccess.Equal(time.Date(2026, 1, 2, 4, 10, 0, 0, time.UTC)) {
		t.Fatalf("second event %+v", ev)
	}
}

// A replica that loses the lease and gets it back must not trust what it
// remembered of the count: the crossing it saw may have ended and a new one
// begun meanwhile, under another leader.
func TestBackupsLowAfterRegainingTheLease(t *testing.T) {
	rc := newReceiver(t, ok)
	coll := mongotest.New(t).Database.Collection(Collection)
	route := Route{Targets: []Target{{URL: rc.URL, Format: JSON}}, BackupsBelow: 3}
	var aEpoch atomic.Int64
	aEpoch.Store(1)
	a := newHarness(t, Config{Default: route, Store: coll, Epoch: func() (int64, bool) { return aEpoch.Load(), true }})
	b := newHarness(t, Config{Default: route, Store: coll, Instance: "replica-b", Epoch: func() (int64, bool) { return 2, true }})
	a.n.Backups("openhands", 1) // crossing 1, reported by a
	rc.wait(t)                  // its claim is in the store
	// a loses the lease; b leads through the end of crossing 1 and all of crossing 2.
	for _, n := range []int64{3, 1, 3} {
		b.n.Backups("openhands", n)
	}
	b.close()
	// a leads again: crossing 3.
	aEpoch.Store(3)
	a.n.Backups("openhands", 2)
	a.close()
	if rc.count() != 3 {
		t.Fatalf("notified %d times for three crossings, want 3", rc.count())
	}
}
