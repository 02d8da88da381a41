package spend_test

// Adversarial review of the batch providers (issue 16, item 4). Each test
// shows one way the batch reports break; they fail on the code as
// reviewed, and the comment above each says what it shows and what it costs.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spendchecker/spendchecker/spend"
)

// Shows: the per-cycle memo is keyed by provider, URL and admin key only,
// not by report-since. Two pools of one OpenAI organization (same admin
// key, same URL) whose report-since differ share ONE report in a cycle:
// the pool checked second reads the first pool's window. Here pool A
// counts from 2 days ago and pool B from 30 days ago; key_a spent $1 a
// day, so B's key must read $30 and reads $2.
// Cost: the second pool's keys are judged on the wrong window — a shorter
// one hides spend (an over key is not rotated: budget overspent), a longer
// one adds spend from before the pool's start (keys rotated early: backups
// burnt). Which pool gets which depends on which key is checked first.
func TestAdv16b_MemoSharedAcrossPoolsWithDifferentSince(t *testing.T) {
	ft := newFakeTime()
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		start, _ := strconv.ParseInt(r.URL.Query().Get("start_time"), 10, 64)
		days := ft.Now().Sub(time.Unix(start, 0)).Hours() / 24
		// One bucket carrying the window's total: $1 a day for key_a.
		fmt.Fprintf(w, `{"object":"page","data":[{"object":"bucket","start_time":%d,"end_time":%d,"results":[{"object":"organization.costs.result","amount":{"value":%v,"currency":"usd"},"line_item":null,"project_id":null,"api_key_id":"key_a"}]}],"has_more":false,"next_page":null}`,
			start, ft.Now().Unix(), days)
	}))
	defer srv.Close()
	c := fastClient(ft)
	a, _ := spend.NewBatch("openai-costs", srv.URL, c, spend.BatchConfig{AdminKey: adminKey, Since: ft.Now().AddDate(0, 0, -2)})
	b, _ := spend.NewBatch("openai-costs", srv.URL, c, spend.BatchConfig{AdminKey: adminKey, Since: ft.Now().AddDate(0, 0, -30)})
	ctx := spend.WithCycle(context.Background(), spend.BeginCycle()) // one checker cycle over both pools
	ra, errA := a.Spend(ctx, spend.Key{ID: "pa", UpstreamID: "key_a"})
	rb, errB := b.Spend(ctx, spend.Key{ID: "pb", UpstreamID: "key_a"})
	if errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
	if ra.Spend != 2 || rb.Spend != 30 {
		t.Fatalf("pool A (since -2d) read $%v, pool B (since -30d) read $%v after %d report fetch(es); want $2 and $30",
			ra.Spend, rb.Spend, requests.Load())
	}
}

// Shows: the OpenRouter list stops only at a short page. An upstream (or a
// gateway in front of it) that ignores `offset` answers the same full page
// for ever; the loop fetches it 500 times per cycle before giving up,
// though the second page already lists only keys seen on the first.
// Cost: 500 upstream requests per cycle (every 10 s by default) instead of
// one, against a management key's rate limit, and every key's check fails
// anyway.
func TestAdv16b_OpenRouterRepeatedPageFetched500Times(t *testing.T) {
	up := &openRouterKeys{n: 100}
	up.hook = func(w http.ResponseWriter, r *http.Request) bool {
		// The first 100 keys whatever the offset.
		var items []string
		for i := range 100 {
			items = append(items, openRouterKeyItem(fmt.Sprintf("hash-%d", i), float64(i)/100, false))
		}
		fmt.Fprintf(w, `{"data":[%s]}`, strings.Join(items, ","))
		return true
	}
	srv := httptest.NewServer(up)
	defer srv.Close()
	p, _ := spend.NewBatch("openrouter-keys", srv.URL, fastClient(newFakeTime()), spend.BatchConfig{AdminKey: adminKey})
	_, errs := cycle(t, p, poolKeys(3))
	if got := up.requests.Load(); got > 3 {
		t.Fatalf("%d upstream requests in one cycle for a list that repeats its first page (err %v); want it to stop at the repeat", got, errs[0])
	}
}

// Shows: the stuck-cursor check compares next_page with the previous one
// only. A cursor that cycles (a → b → a → b …) is followed until the
// 500-page cap, summing the same buckets again on each lap.
// Cost: 500 upstream requests per cycle instead of 2, every cycle, then
// every key's check fails.
func TestAdv16b_OpenAICyclingCursorFollowed500Times(t *testing.T) {
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		next := "a"
		if r.URL.Query().Get("page") == "a" {
			next = "b"
		}
		fmt.Fprintf(w, `{"object":"page","data":[{"object":"bucket","start_time":1730419200,"end_time":1730505600,"results":[{"object":"organization.costs.result","amount":{"value":0.5,"currency":"usd"},"line_item":null,"project_id":null,"api_key_id":"key_a"}]}],"has_more":true,"next_page":%q}`, next)
	}))
	defer srv.Close()
	p, _ := spend.NewBatch("openai-costs", srv.URL, fastClient(newFakeTime()), spend.BatchConfig{AdminKey: adminKey})
	_, err := p.Spend(spend.WithCycle(context.Background(), spend.BeginCycle()), spend.Key{ID: "a", UpstreamID: "key_a"})
	if got := requests.Load(); got > 4 {
		t.Fatalf("%d requests for a cursor cycling a→b→a (err %v); want it refused once a cursor repeats", got, err)
	}
}

// Shows: a page that repeats buckets already read (same bucket start_time,
// new cursor) is summed twice: key_a spent $5 in its one day bucket, and
// reads $10 because the second page repeats that bucket.
// Cost: a false rotation (threshold 9.95): a backup burnt for a key at
// half its budget. Buckets are per time range; a bucket seen before must
// not add again (or the report must fail).
func TestAdv16b_OpenAIRepeatedBucketCountedTwice(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		more, next := "true", `"page_2"`
		if r.URL.Query().Get("page") == "page_2" {
			more, next = "false", "null"
		}
		fmt.Fprintf(w, `{"object":"page","data":[{"object":"bucket","start_time":1730419200,"end_time":1730505600,"results":[{"object":"organization.costs.result","amount":{"value":5,"currency":"usd"},"line_item":null,"project_id":null,"api_key_id":"key_a"}]}],"has_more":%s,"next_page":%s}`, more, next)
	}))
	defer srv.Close()
	p, _ := spend.NewBatch("openai-costs", srv.URL, fastClient(newFakeTime()), spend.BatchConfig{AdminKey: adminKey})
	r, err := p.Spend(spend.WithCycle(context.Background(), spend.BeginCycle()), spend.Key{ID: "a", UpstreamID: "key_a"})
	if err == nil && r.Spend != 5 {
		t.Fatalf("key_a read $%v from one $5 bucket repeated on two pages; want $5 or a failed report", r.Spend)
	}
}

// Shows: masking the error (secret.Redact) masks the admin key only where it appears whole, but
// reportStatus quotes the body cut at 120 bytes. A body echoing the admin
// key across that cut leaves all but its last characters in the error —
// which the checker logs ("example") and puts in the cycle summary.
// Cost: an admin key (which reads or manages every key of the account)
// in logs, 43 of its 46 characters here, where the policy allows 5 + 4.
func TestAdv16b_AdminKeyLeaksWhenEchoCrossesTheQuoteCut(t *testing.T) {
	body := `{"error":{"message":"`
	body += strings.Repeat("x", 120-(len(adminKey)-3)-len(body)) + adminKey + ` lacks the management scope"}}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, body)
	}))
	defer srv.Close()
	p, _ := spend.NewBatch("openrouter-keys", srv.URL, fastClient(newFakeTime()), spend.BatchConfig{AdminKey: adminKey})
	_, errs := cycle(t, p, poolKeys(1))
	if errs[0] == nil {
		t.Fatal("403 read as a report")
	}
	if leaked := adminKey[:len(adminKey)-3]; strings.Contains(errs[0].Error(), leaked) {
		t.Fatalf("error shows %d of the admin key's %d characters: %q", len(leaked), len(adminKey), errs[0])
	}
}

// Shows: the memo keeps whatever the first asker's fetch returned, its
// context's cancellation included. When the key that started the fetch
// has its context cancelled (a per-key deadline, a caller giving up) the
// cycle's other keys — whose contexts are alive — get "context canceled"
// from the memo for the rest of the cycle, with no new fetch.
// Cost: every key of the cycle fails its check because one caller gave
// up; today the checker hands every key the cycle's own context, so this
// bites as soon as anything derives a shorter context per key.
func TestAdv16b_CancelledFetchPoisonsTheCycle(t *testing.T) {
	arrived := make(chan struct{}, 4)
	hold := make(chan struct{})
	up := &openRouterKeys{n: 3}
	up.hook = func(w http.ResponseWriter, r *http.Request) bool {
		if up.requests.Load() == 1 {
			arrived <- struct{}{}
			select {
			case <-hold:
			case <-r.Context().Done():
			}
			return true
		}
		return false
	}
	srv := httptest.NewServer(up)
	defer srv.Close()
	defer close(hold)
	p, _ := spend.NewBatch("openrouter-keys", srv.URL, fastClient(newFakeTime()), spend.BatchConfig{AdminKey: adminKey})
	cycleCtx := spend.WithCycle(context.Background(), spend.BeginCycle())
	keyCtx, cancel := context.WithCancel(cycleCtx)
	done := make(chan error, 1)
	go func() {
		_, err := p.Spend(keyCtx, poolKeys(1)[0])
		done <- err
	}()
	<-arrived
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("the cancelled key: %v", err)
	}
	r, err := p.Spend(cycleCtx, poolKeys(2)[1])
	if err != nil {
		t.Fatalf("a key with a live context got %v (spend %v) from the memo after %d request(s); want a fresh fetch", err, r.Spend, up.requests.Load())
	}
}

// Shows: the client pauses a failing host only after several different
// keys failed there (HostFailKeys, 3), so one poisoned key cannot pause
// its neighbours. A batch report is asked with one credential, the admin
// key, so its failures count as one key's and the host is never paused:
// a report endpoint answering 503 gets the client's 4 attempts again at
// every cycle, for ever. Here five back-to-back cycles send 20 requests;
// a per-key pool failing the same way pauses the host (doubling the pause
// each time) once 3 of its keys failed. The report's failure is every
// key's failure.
// Cost: a failing upstream hammered at 4 requests per cycle (24 a
// minute at the 10 s default) with no backoff between cycles.
func TestAdv16b_FailingReportNeverBacksOffTheHost(t *testing.T) {
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, `{"error":{"code":503,"message":"overloaded"}}`)
	}))
	defer srv.Close()
	p, _ := spend.NewBatch("openrouter-keys", srv.URL, fastClient(newFakeTime()), spend.BatchConfig{AdminKey: adminKey})
	for range 5 {
		cycle(t, p, poolKeys(10))
	}
	if got := requests.Load(); got > 8 {
		t.Fatalf("%d requests over 5 back-to-back cycles to a report endpoint answering 503; want the host paused after the first cycles", got)
	}
}
