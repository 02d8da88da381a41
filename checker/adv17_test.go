package checker_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/checker"
	"github.com/spendchecker/spendchecker/spend"
)

// Adversarial review of issue 17 (branch adv17): each test fails on the
// reviewed code and passes once the defect it names is fixed.

// front puts a server before the world's fake upstream: answer may answer
// a request itself (true) or let the fake upstream answer it.
func (w *world) front(t *testing.T, answer func(secret string, rw http.ResponseWriter) bool) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		sec := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		if answer(sec, rw) {
			return
		}
		req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, w.up.URL+r.URL.RequestURI(), nil)
		req.Header = r.Header.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			rw.WriteHeader(http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		rw.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
		rw.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(rw, resp.Body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func (w *world) provider(t *testing.T, url string) spend.Provider {
	t.Helper()
	p, err := spend.New(w.kind, url, &spend.Client{MaxAttempts: 2, Now: w.clock.Now,
		Wait: func(context.Context, time.Duration) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func usedBackups(t *testing.T, w *world) int64 {
	return countDocs(t, w.db.Collection(openhands.BackupsCollection), bson.M{"isUsed": true})
}

// LiteLLM answers 401 auth_error for ANY exception on its auth path, its
// database being unreachable included (litellm/proxy/auth/
// auth_exception_handler.py: ProxyException("Authentication Error, " +
// str(e), auth_error, 401)). A database blip during a cycle therefore
// rejects the keys whose objects were not cached: here 4 of 20 live keys,
// once. 4 of 20 is under the guard's share, so all 4 live keys are
// rotated on one transient answer: 4 backups burnt, the next blip burns
// more. A key is dead when the upstream keeps rejecting it (ask again
// before spending a backup), not on one answer.
func TestAdv17_TransientRejectionRotatesLiveKeys(t *testing.T) {
	keys := map[string]float64{}
	for i := range 20 {
		keys[fmt.Sprintf("k%02d", i)] = 0.5
	}
	w := newWorld(t, "openhands", keys, 20)
	flaky := map[string]bool{secret("k01"): true, secret("k05"): true, secret("k09"): true, secret("k13"): true}
	var mu sync.Mutex
	asked := map[string]int{}
	url := w.front(t, func(sec string, rw http.ResponseWriter) bool {
		mu.Lock()
		asked[sec]++
		n := asked[sec]
		mu.Unlock()
		if !flaky[sec] || n > 1 {
			return false
		}
		rw.Header().Set("Content-Type", "application/json")
		rw.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(rw, "{\"error\":{\"message\":\"Authentication Error, Can't reach database server at `db:5432` Please make sure your database server is running at `db:5432`.\",\"type\":\"auth_error\",\"param\":\"None\",\"code\":\"401\"}}")
		return true
	})
	chk := w.checker(t, func(c *checker.Config, p *checker.Pool) { c.Adaptive = false; p.Provider = w.provider(t, url) })
	rotated := 0
	for range 2 {
		rotated += cycle(t, chk).Rotated
		w.clock.Advance(10 * time.Second)
	}
	if rotated != 0 || usedBackups(t, w) != 0 {
		t.Fatalf("rotated %d live keys (%d backups used) on one transient 401 each; want none", rotated, usedBackups(t, w))
	}
}

// A budget refusal for a budget the keys share (LiteLLM's user budget:
// every key a LiteLLM user generates counts against the user's
// max_budget; "ExceededBudget: User=<id> over budget. Spend=…, Budget=…")
// is taken for each key's own: all 10 keys at $0.50 rotate in one cycle,
// 10 backups burnt, and the next keys, owned by the same user, are refused
// alike. The systemic-rejection guard holds only 401/403s; a pool-wide
// budget refusal must be held as well (at most --reject-min − 1 rotate).
func TestAdv17_SharedUserBudgetRefusalRotatesWholePool(t *testing.T) {
	w := newWorld(t, "litellm", tenKeys("k", 0.5), 10)
	url := w.front(t, func(_ string, rw http.ResponseWriter) bool {
		rw.Header().Set("Content-Type", "application/json")
		rw.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(rw, `{"error":{"message":"ExceededBudget: User=ops-team-user over budget. Spend=50.2, Budget=50.0","type":"budget_exceeded","param":null,"code":"400"}}`)
		return true
	})
	chk := w.checker(t, func(_ *checker.Config, p *checker.Pool) { p.Provider = w.provider(t, url) })
	ps := cycle(t, chk)
	if ps.Rotated > 2 {
		t.Fatalf("rotated %d of 10 keys at $0.50 on one shared budget's refusal (%d backups used)", ps.Rotated, usedBackups(t, w))
	}
}

// README: "One dead key among live ones still rotates." Not after a spell
// without backups: the guard counts rejection events, not keys, and records
// only cycles that had a rejection. A dead key that could not be rotated
// (no backup) is polled every cycle (no plan is written for it), so its
// own repeated 401s fill the 10-minute window; once the operator adds
// backups, the guard calls one dead key among 9 live ones "an outage" and
// holds it for ever, failing every cycle.
func TestAdv17_OneDeadKeyHeldForEverAfterNoBackup(t *testing.T) {
	w := newWorld(t, "openhands", tenKeys("k", 0.5), 0)
	w.up.SetStatus(secret("k03"), 401)
	chk := w.checker(t, nil)
	for i := range 20 {
		ps := cycle(t, chk)
		// A key is dead when rejected on two checks in a row (the first
		// rejection is asked again at the minimum interval; see
		// TestAdv17_TransientRejectionRotatesLiveKeys), so its rotation is
		// first tried in the second cycle.
		if i == 1 && ps.NoBackup != 1 {
			t.Fatalf("first cycle: no backup %d, want the dead key's rotation refused for want of a backup", ps.NoBackup)
		}
		w.clock.Advance(10 * time.Second)
	}
	// The operator adds backups.
	seedPool(t, w.db, w.up, openhands, nil, 3)
	var last checker.PoolSummary
	rotated := 0
	for range 3 {
		last = cycle(t, chk)
		rotated += last.Rotated
		w.clock.Advance(10 * time.Second)
	}
	if rotated != 1 {
		t.Fatalf("the one dead key among 9 live ones was not rotated once backups were back; errors %q", last.Errors)
	}
}

// A 429 with a Retry-After of a year (or a date a year ahead) becomes the
// key's nextSpendCheck as it is: the key, at $9.90 and spending, is not
// polled again for a year by any replica, although every other plan is
// clamped to --max-check-interval (30 min here).
func TestAdv17_RetryAfterPlanBeyondMaxInterval(t *testing.T) {
	w := newWorld(t, "openhands", map[string]float64{"hot": 9.9}, 1)
	w.up.SetStatus(secret("hot"), 429)
	w.up.SetRetryAfter(secret("hot"), "31536000")
	chk := w.checker(t, nil)
	cycle(t, chk)
	w.up.SetStatus(secret("hot"), 0)
	w.up.SetSpend(secret("hot"), 10.5)
	// A replica with a fresh client, after the longest plan there may be.
	other := w.checker(t, nil)
	w.clock.Advance(31 * time.Minute)
	ps := cycle(t, other)
	if ps.Rotated != 1 {
		var doc struct {
			Next time.Time `bson:"nextSpendCheck"`
		}
		_ = w.db.Collection(openhands.KeysCollection).FindOne(context.Background(), bson.M{"_id": "hot"}).Decode(&doc)
		t.Fatalf("31 min later the $10.50 key was not polled (due %d, nextSpendCheck %v)", ps.Due, doc.Next)
	}
}

// A key whose daily activity spans more pages than a check reads (50) is
// "unclear" for ever, even when the pages read already total far over the
// threshold: $1 a page over 60 pages is at least $50, yet the key is never
// rotated and every cycle is partial. Spend read so far is a lower bound.
func TestAdv17_KeyBeyondThePageCapNeverRotates(t *testing.T) {
	w := newWorld(t, "openhands", map[string]float64{"old": 60}, 1)
	w.up.SetPages(secret("old"), 60)
	ps := cycle(t, w.checker(t, nil))
	if ps.Rotated != 1 {
		t.Fatalf("rotated %d, failed %d (%s): a key at $60 (at least $50 read) never rotates", ps.Rotated, ps.Failed, ps.FailedExample)
	}
}

// A 401 that is not the provider's JSON (a gateway's plain-text page) is
// quoted, its first 60 bytes, into the error that becomes the cycle's
// warning line ("example"). Gateways and echo pages that repeat the token
// they were given put the whole key in the log (GUIDE: never log a full
// key). The quoted body must be masked.
func TestAdv17_ErrorBodyEchoingTheKeyIsLogged(t *testing.T) {
	w := newWorld(t, "openhands", map[string]float64{"k1": 1}, 0)
	url := w.front(t, func(sec string, rw http.ResponseWriter) bool {
		rw.Header().Set("Content-Type", "text/plain")
		rw.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintf(rw, "invalid token %s\n", sec)
		return true
	})
	chk := w.checker(t, func(_ *checker.Config, p *checker.Pool) { p.Provider = w.provider(t, url) })
	ps := cycle(t, chk)
	if ps.Failed != 1 {
		t.Fatalf("failed %d, want the key's check failed", ps.Failed)
	}
	w.logs.mu.Lock()
	logged := w.logs.b.String()
	w.logs.mu.Unlock()
	if strings.Contains(logged, secret("k1")) || strings.Contains(strings.Join(ps.Errors, " ")+ps.FailedExample, secret("k1")) {
		t.Fatalf("the full key is in the log or the summary:\n%s", logged)
	}
}

// The guard's 10-minute window lives in the process. The shipped
// spendchecker-once.timer runs `--once`, a fresh process each time (so do
// a restart, a deploy, a leader change): each run starts with an empty
// window. During an auth outage with adaptive cadence a run polls the few
// keys that are due, typically the two replacements the previous run made
// (a new key is due at once): 2 rejected < --reject-min, so both rotate
// again, and again at the next run, two backups a run until none is left.
// README: "during a slow outage at most --reject-min − 1 keys rotate
// before the guard holds".
func TestAdv17_OnceRunsForgetTheRejectionWindow(t *testing.T) {
	keys := tenKeys("k", 0.5)
	w := newWorld(t, "openhands", keys, 10)
	// The outage: every key the upstream is asked about is rejected.
	for id := range keys {
		w.up.SetStatus(secret(id), 401)
	}
	for i := range 10 {
		w.up.SetStatus(secret(fmt.Sprintf("%s-backup-%02d", openhands.Name, i)), 401)
	}
	ctx := context.Background()
	// Adaptive plans: only k00 and k01 are due now; the rest in an hour.
	if _, err := w.db.Collection(openhands.KeysCollection).UpdateMany(ctx, bson.M{"_id": bson.M{"$nin": bson.A{"k00", "k01"}}},
		bson.M{"$set": bson.M{"nextSpendCheck": w.clock.Now().Add(time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	rotated := 0
	for range 5 { // five runs of the timer (OnCalendar=*:0/5)
		rotated += cycle(t, w.checker(t, nil)).Rotated
		w.clock.Advance(5 * time.Minute)
	}
	if rotated > 2 {
		t.Fatalf("%d keys rotated (%d backups used) over five --once runs during an outage; want at most --reject-min - 1 = 2", rotated, usedBackups(t, w))
	}
}

// Issue 17 case 4, not addressed by the change: a plan is a wall-clock
// date written by one machine and compared on another. A replica whose
// clock ran an hour ahead (or a clock set back afterwards) leaves a plan
// an hour out, beyond anything --max-check-interval (30 min) allows: it
// must count as due now. Here the key is at $10.50 and stays in service.
func TestAdv17_PlanBeyondMaxIntervalIsDueNow(t *testing.T) {
	w := newWorld(t, "openhands", map[string]float64{"hot": 10.5}, 1)
	if _, err := w.db.Collection(openhands.KeysCollection).UpdateOne(context.Background(), bson.M{"_id": "hot"},
		bson.M{"$set": bson.M{"nextSpendCheck": w.clock.Now().Add(time.Hour), "lastSpendCheck": w.clock.Now().Add(time.Hour - 10*time.Second), "totalSpend": 9.8}}); err != nil {
		t.Fatal(err)
	}
	ps := cycle(t, w.checker(t, nil))
	if ps.Rotated != 1 {
		t.Fatalf("due %d, rotated %d: a plan an hour out (max interval 30 min) parks the $10.50 key", ps.Due, ps.Rotated)
	}
}

// A key over its threshold whose rotation cannot happen (no backup left)
// stays in service, yet its observation is never written back: totalSpend
// and lastSpendCheck keep the last value under the threshold, so
// `spendchecker status` and the proxy's admin pages show a key at $9.80,
// checked long ago, while it is at $10.50 and being polled every cycle.
func TestAdv17_OverThresholdWithoutBackupKeepsStaleSpend(t *testing.T) {
	w := newWorld(t, "openhands", map[string]float64{"hot": 9.8}, 0)
	chk := w.checker(t, nil)
	cycle(t, chk)
	w.up.SetSpend(secret("hot"), 10.5)
	w.clock.Advance(time.Minute)
	if ps := cycle(t, chk); ps.NoBackup != 1 {
		t.Fatalf("no backup %d, want the key's rotation refused for want of a backup", ps.NoBackup)
	}
	var doc struct {
		Spend float64   `bson:"totalSpend"`
		At    time.Time `bson:"lastSpendCheck"`
	}
	if err := w.db.Collection(openhands.KeysCollection).FindOne(context.Background(), bson.M{"_id": "hot"}).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	if doc.Spend != 10.5 || !doc.At.Equal(w.clock.Now()) {
		t.Fatalf("key document says $%v checked at %v; the upstream said $10.50 at %v", doc.Spend, doc.At, w.clock.Now())
	}
}

// OpenRouter reports a negative limit_remaining once a key overshoots its
// credit limit (it charges requests when they finish). The whole answer is
// then refused: the key at $10.25 lifetime usage, over the $9.95 threshold
// and over its limit, is never rotated; every cycle is partial for ever.
func TestAdv17_OpenRouterKeyOverItsLimitNeverRotates(t *testing.T) {
	w := newWorld(t, "openrouter", map[string]float64{"over": 10.25}, 1)
	url := w.front(t, func(_ string, rw http.ResponseWriter) bool {
		rw.Header().Set("Content-Type", "application/json")
		fmt.Fprint(rw, `{"data":{"label":"sk-or-v1-au7...890","limit":10,"limit_remaining":-0.25,"limit_reset":null,"usage":10.25,"is_free_tier":false}}`)
		return true
	})
	ps := cycle(t, w.checker(t, func(_ *checker.Config, p *checker.Pool) { p.Provider = w.provider(t, url); p.BudgetRatio = 0.9 }))
	if ps.Rotated != 1 {
		t.Fatalf("rotated %d, failed %d (%s): the key over its threshold and its limit is never rotated", ps.Rotated, ps.Failed, ps.FailedExample)
	}
}

// A host that answers 429 to every key (a CDN rate-limiting the checker's
// address, or the upstream's global limit) is not backed off: 429 does not
// count as the host failing, so every key is asked every attempt, and with
// a Retry-After of up to 30 s each key sleeps three times that inside the
// cycle (at 10,000 keys and 16 at a time, hours of cycle during which no
// hot key is checked). TestOutageAtScale bounds a 503 outage by the
// requests in flight; a 429 storm deserves the same.
func TestAdv17_TooManyRequestsEverywhereIsNotBackedOff(t *testing.T) {
	keys := map[string]float64{}
	for i := range 40 {
		keys[fmt.Sprintf("k%02d", i)] = 1
	}
	w := newWorld(t, "openhands", keys, 0)
	for id := range keys {
		w.up.SetStatus(secret(id), http.StatusTooManyRequests)
		w.up.SetRetryAfter(secret(id), "20")
	}
	var mu sync.Mutex
	var slept time.Duration
	prov, _ := spend.New("openhands", w.up.URL, &spend.Client{Now: w.clock.Now, Wait: func(_ context.Context, d time.Duration) error {
		mu.Lock()
		defer mu.Unlock()
		slept += d
		return nil
	}})
	chk := w.checker(t, func(c *checker.Config, p *checker.Pool) { c.Adaptive, c.Concurrency, p.Provider = false, 4, prov })
	if ps := cycle(t, chk); ps.Failed != 40 {
		t.Fatalf("failed %d, want 40", ps.Failed)
	}
	t.Logf("%d requests, %s slept in total", w.up.TotalCalls(), slept)
	if n := w.up.TotalCalls(); n > 2*4*4 {
		t.Fatalf("%d requests to a host answering 429 to every key (%s of sleeping inside one cycle); want the host backed off", n, slept)
	}
}

// A LiteLLM key restricted to the LLM routes (allowed_routes, a common
// hardening of keys handed to a proxy) is refused the spend endpoint with
// LiteLLM's own JSON: "Virtual key is not allowed to call this route. Only
// allowed to call routes: ['llm_api_routes']. Tried to call route: …"
// (litellm/proxy/auth/route_checks.py). The key is alive and serving; the
// checker calls it dead. With 3 such keys in 10 (under the guard's share)
// they rotate, their replacements (made the same way) are refused alike
// and rotate next cycle, and so on: three backups a cycle until none is
// left. A refusal of the route is not a statement that the key is dead.
func TestAdv17_RouteDeniedKeysRotateEveryCycle(t *testing.T) {
	w := newWorld(t, "openhands", tenKeys("k", 0.5), 12)
	restricted := func(sec string) bool {
		return strings.Contains(sec, "backup") || sec == secret("k00") || sec == secret("k01") || sec == secret("k02")
	}
	url := w.front(t, func(sec string, rw http.ResponseWriter) bool {
		if !restricted(sec) {
			return false
		}
		rw.Header().Set("Content-Type", "application/json")
		rw.WriteHeader(http.StatusForbidden)
		fmt.Fprint(rw, `{"error":{"message":"Authentication Error, Virtual key is not allowed to call this route. Only allowed to call routes: ['llm_api_routes']. Tried to call route: /user/daily/activity","type":"auth_error","param":"None","code":"403"}}`)
		return true
	})
	chk := w.checker(t, func(c *checker.Config, p *checker.Pool) { c.Adaptive = false; p.Provider = w.provider(t, url) })
	for range 3 {
		cycle(t, chk)
		w.clock.Advance(10 * time.Second)
	}
	if n := usedBackups(t, w); n != 0 {
		t.Fatalf("%d backups burnt in 3 cycles on live keys refused a route", n)
	}
}

// One key whose spend query always fails with a 5xx (LiteLLM answers 500
// for a key whose user row is gone, say) pauses the whole host after its
// last attempt, every cycle: the keys that come after it in the cursor's
// order, within the pause, fail with "host backing off". They get no plan,
// so the next cycle polls them in the same order, right after the same
// poisoned key, and they fail again: the same neighbours are never checked,
// cycle after cycle, while every other key is answered fine. Here each
// request takes 20 ms (a real upstream's latency, on the fake clock).
func TestAdv17_OnePoisonedKeyStarvesItsNeighboursForEver(t *testing.T) {
	w := newWorld(t, "openhands", map[string]float64{"a-poison": 1}, 0)
	w.up.SetStatus(secret("a-poison"), http.StatusInternalServerError)
	var ids []string
	for i := range 80 {
		id := fmt.Sprintf("k%02d", i)
		ids = append(ids, id)
		seedPool(t, w.db, w.up, openhands, map[string]float64{id: 1}, 0)
	}
	w.up.OnRequest = func(string) { w.clock.Advance(20 * time.Millisecond) }
	chk := w.checker(t, func(c *checker.Config, _ *checker.Pool) { c.Concurrency = 1 })
	for range 4 {
		cycle(t, chk)
		w.clock.Advance(10 * time.Second)
	}
	var never []string
	for _, id := range ids {
		if w.up.Calls(secret(id)) == 0 {
			never = append(never, id)
		}
	}
	if len(never) > 0 {
		t.Fatalf("%d healthy keys never asked about in 4 cycles (all behind the one failing key): %v", len(never), never)
	}
}
