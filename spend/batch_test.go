package spend_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spendchecker/spendchecker/spend"
)

const adminKey = "sk-or-v1-mgmt-0123456789abcdef0123456789abcdef"

// openRouterKeyItem is one item of GET /api/v1/keys as the docs show it
// (openrouter.ai/docs/api/api-reference/api-keys/list, the ListData
// example), with the hash and usage varied.
func openRouterKeyItem(hash string, usage float64, disabled bool) string {
	return fmt.Sprintf(`{"hash":%q,"name":"My Production Key","label":"sk-or-v1-0e6...1c96","disabled":%v,"limit":100,"limit_remaining":%v,"limit_reset":"monthly","include_byok_in_limit":false,"usage":%v,"usage_daily":25.5,"usage_weekly":25.5,"usage_monthly":25.5,"byok_usage":17.38,"byok_usage_daily":17.38,"byok_usage_weekly":17.38,"byok_usage_monthly":17.38,"created_at":"2025-08-24T10:30:00Z","updated_at":"2025-08-24T15:45:00Z","creator_user_id":"user_2dHFtVWx2n56w6HkM0000000000","workspace_id":"0df9e665-d932-5740-b2c7-b52af166bc11"}`,
		hash, disabled, 100-usage, usage)
}

// openRouterKeys is a management-key upstream listing n keys, 100 a page
// by offset as documented; hash-i has usage i/100 and hash-3 is disabled.
// hook, when set, may answer a request itself.
type openRouterKeys struct {
	n        int
	requests atomic.Int64
	hook     func(w http.ResponseWriter, r *http.Request) bool
}

func (u *openRouterKeys) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.requests.Add(1)
	if u.hook != nil && u.hook(w, r) {
		return
	}
	if r.URL.Path != "/api/v1/keys" || r.Header.Get("Authorization") != "Bearer "+adminKey || r.URL.Query().Get("include_disabled") != "true" {
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":{"code":401,"message":"No auth credentials found"}}`)
		return
	}
	off, _ := strconv.Atoi(r.URL.Query().Get("offset"))
	var items []string
	for i := off; i < u.n && i < off+100; i++ {
		items = append(items, openRouterKeyItem(fmt.Sprintf("hash-%d", i), float64(i)/100, i == 3))
	}
	fmt.Fprintf(w, `{"data":[%s]}`, strings.Join(items, ","))
}

func fastClient(ft *fakeTime) *spend.Client {
	return &spend.Client{Now: ft.Now, Wait: ft.Wait}
}

// cycle asks for every key at once, as the checker's workers do, inside
// one Cycle, and returns each key's answer.
func cycle(t *testing.T, p spend.Provider, keys []spend.Key) ([]spend.Result, []error) {
	t.Helper()
	ctx := spend.WithCycle(context.Background(), spend.BeginCycle())
	res := make([]spend.Result, len(keys))
	errs := make([]error, len(keys))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i, k := range keys {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			res[i], errs[i] = p.Spend(ctx, k)
		}()
	}
	wg.Wait()
	return res, errs
}

func poolKeys(n int) []spend.Key {
	keys := make([]spend.Key, n)
	for i := range keys {
		keys[i] = spend.Key{Secret: fmt.Sprintf("sk-or-v1-pool-%040d", i), ID: fmt.Sprintf("k%d", i), UpstreamID: fmt.Sprintf("hash-%d", i)}
	}
	return keys
}

// A cycle over 250 keys reads the list once: 3 pages, not 250 calls.
func TestOpenRouterKeysOneReportPerCycle(t *testing.T) {
	up := &openRouterKeys{n: 250}
	srv := httptest.NewServer(up)
	defer srv.Close()
	p, err := spend.NewBatch("openrouter-keys", srv.URL, fastClient(newFakeTime()), spend.BatchConfig{AdminKey: adminKey})
	if err != nil {
		t.Fatal(err)
	}
	res, errs := cycle(t, p, poolKeys(250))
	if got := up.requests.Load(); got != 3 {
		t.Fatalf("%d upstream requests for 250 keys, want 3 pages", got)
	}
	for i := range res {
		switch {
		case i == 3:
			if !errors.Is(errs[i], spend.ErrUnauthorized) {
				t.Fatalf("disabled key: %v", errs[i])
			}
		case errs[i] != nil:
			t.Fatalf("key %d: %v", i, errs[i])
		case math.Abs(res[i].Spend-float64(i)/100) > 1e-9 || res[i].Budget == nil || *res[i].Budget != 100 || res[i].Lag != time.Minute:
			t.Fatalf("key %d: %+v", i, res[i])
		}
	}
	// The next cycle reads afresh.
	cycle(t, p, poolKeys(1))
	if got := up.requests.Load(); got != 6 {
		t.Fatalf("%d requests after a second cycle, want 6", got)
	}
}

// A key exactly at a page boundary ends with an empty page.
func TestOpenRouterKeysPageBoundary(t *testing.T) {
	up := &openRouterKeys{n: 200}
	srv := httptest.NewServer(up)
	defer srv.Close()
	p, _ := spend.NewBatch("openrouter-keys", srv.URL, fastClient(newFakeTime()), spend.BatchConfig{AdminKey: adminKey})
	keys := poolKeys(200)
	res, errs := cycle(t, p, keys[199:])
	if errs[0] != nil || math.Abs(res[0].Spend-1.99) > 1e-9 || up.requests.Load() != 3 {
		t.Fatalf("%+v %v after %d requests", res[0], errs[0], up.requests.Load())
	}
}

// The report id comes from the document's upstreamKeyId, else the pool's
// mapping; a key with neither, or one the list does not name, is a failed
// check with its reason, never a spend of 0.
func TestBatchMapping(t *testing.T) {
	up := &openRouterKeys{n: 5}
	srv := httptest.NewServer(up)
	defer srv.Close()
	p, _ := spend.NewBatch("openrouter-keys", srv.URL, fastClient(newFakeTime()),
		spend.BatchConfig{AdminKey: adminKey, KeyIDs: map[string]string{"mapped": "hash-2", "gone": "hash-99"}})
	res, errs := cycle(t, p, []spend.Key{
		{Secret: "s1", ID: "mapped"},
		{Secret: "s2", ID: "doc", UpstreamID: "hash-4"},
		{Secret: "s3", ID: "unmapped"},
		{Secret: "s4", ID: "gone"},
	})
	if errs[0] != nil || res[0].Spend != 0.02 || errs[1] != nil || res[1].Spend != 0.04 {
		t.Fatalf("mapped: %+v %v; document: %+v %v", res[0], errs[0], res[1], errs[1])
	}
	var uc *spend.UnclearError
	if !errors.As(errs[2], &uc) || !strings.Contains(errs[2].Error(), "upstreamKeyId") {
		t.Fatalf("unmapped key: %v", errs[2])
	}
	if !errors.As(errs[3], &uc) || !strings.Contains(errs[3].Error(), "hash-99") {
		t.Fatalf("key missing from the list: %v", errs[3])
	}
	if up.requests.Load() != 1 {
		t.Fatalf("%d requests", up.requests.Load())
	}
}

// The upstream misbehaving: every key of the cycle fails on one fetch (a
// few attempts), never as a dead key, and the admin key never shows.
func TestBatchReportFailures(t *testing.T) {
	cases := []struct {
		name     string
		answer   func(w http.ResponseWriter, r *http.Request, n int64) bool
		attempts int64
		want     string
	}{
		{"admin key refused", func(w http.ResponseWriter, _ *http.Request, _ int64) bool {
			w.WriteHeader(http.StatusUnauthorized)
			// An upstream echoing the credential it got.
			fmt.Fprintf(w, `{"error":{"code":401,"message":"Invalid key %s"}}`, adminKey)
			return true
		}, 1, "refused the admin key"},
		{"5xx", func(w http.ResponseWriter, _ *http.Request, _ int64) bool {
			w.WriteHeader(http.StatusBadGateway)
			return true
		}, 4, "502"},
		{"malformed JSON", func(w http.ResponseWriter, _ *http.Request, _ int64) bool {
			fmt.Fprint(w, `{"data":[{"hash":"hash-0","usage":`)
			return true
		}, 1, "malformed JSON"},
		{"huge body", func(w http.ResponseWriter, _ *http.Request, _ int64) bool {
			fmt.Fprint(w, `{"data":[`+strings.Repeat(" ", 33<<20)+`]}`)
			return true
		}, 1, "larger than"},
		{"no data", func(w http.ResponseWriter, _ *http.Request, _ int64) bool {
			fmt.Fprint(w, `{"error":{"message":"oops"}}`)
			return true
		}, 1, "data missing"},
		{"second page fails", func(w http.ResponseWriter, r *http.Request, _ int64) bool {
			if r.URL.Query().Get("offset") == "100" {
				w.WriteHeader(http.StatusServiceUnavailable)
				return true
			}
			return false
		}, 5, "503"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			up := &openRouterKeys{n: 150}
			up.hook = func(w http.ResponseWriter, r *http.Request) bool { return c.answer(w, r, up.requests.Load()) }
			srv := httptest.NewServer(up)
			defer srv.Close()
			p, _ := spend.NewBatch("openrouter-keys", srv.URL, fastClient(newFakeTime()), spend.BatchConfig{AdminKey: adminKey})
			_, errs := cycle(t, p, poolKeys(40))
			for i, err := range errs {
				if err == nil || errors.Is(err, spend.ErrUnauthorized) || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("key %d: %v, want a failed check about %q", i, err, c.want)
				}
				if strings.Contains(err.Error(), adminKey) {
					t.Fatalf("the admin key shows in %q", err)
				}
			}
			if got := up.requests.Load(); got != c.attempts {
				t.Fatalf("%d requests for 40 keys, want %d", got, c.attempts)
			}
		})
	}
}

// 429 with Retry-After: the report waits as asked (on the injected clock)
// and is read once for the cycle.
func TestBatchRetryAfter(t *testing.T) {
	up := &openRouterKeys{n: 120}
	up.hook = func(w http.ResponseWriter, r *http.Request) bool {
		if up.requests.Load() == 2 {
			w.Header().Set("Retry-After", "7")
			w.WriteHeader(http.StatusTooManyRequests)
			fmt.Fprint(w, `{"error":{"code":429,"message":"Rate limit exceeded"}}`)
			return true
		}
		return false
	}
	srv := httptest.NewServer(up)
	defer srv.Close()
	ft := newFakeTime()
	p, _ := spend.NewBatch("openrouter-keys", srv.URL, fastClient(ft), spend.BatchConfig{AdminKey: adminKey})
	res, errs := cycle(t, p, poolKeys(120))
	for i := range res {
		if i != 3 && (errs[i] != nil || math.Abs(res[i].Spend-float64(i)/100) > 1e-9) {
			t.Fatalf("key %d: %+v %v", i, res[i], errs[i])
		}
	}
	if w := ft.Waits(); len(w) != 1 || w[0] != 7*time.Second {
		t.Fatalf("waits %v, want one of 7s", w)
	}
	if got := up.requests.Load(); got != 3 {
		t.Fatalf("%d requests, want 3 (page 1, 429, page 2 again)", got)
	}
}

// Without a Cycle each call reads the report itself: correct, not cheap.
func TestBatchWithoutCycle(t *testing.T) {
	up := &openRouterKeys{n: 3}
	srv := httptest.NewServer(up)
	defer srv.Close()
	p, _ := spend.NewBatch("openrouter-keys", srv.URL, fastClient(newFakeTime()), spend.BatchConfig{AdminKey: adminKey, Lag: -1})
	for _, k := range poolKeys(2) {
		if r, err := p.Spend(context.Background(), k); err != nil || r.Lag != 0 {
			t.Fatal(r, err)
		}
	}
	if up.requests.Load() != 2 {
		t.Fatalf("%d requests", up.requests.Load())
	}
}

// openAICosts answers GET /v1/organization/costs grouped by api_key_id
// with the documented shape (object "page", buckets of
// organization.costs.result with amount.value/currency; has_more,
// next_page), one bucket a page: key_a spends 0.5 a day, key_b 1.25 on
// the second day only; results without a key are the organization's.
func openAICosts(t *testing.T, days int, requests *atomic.Int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		q := r.URL.Query()
		if r.URL.Path != "/v1/organization/costs" || r.Header.Get("Authorization") != "Bearer "+adminKey ||
			q.Get("group_by") != "api_key_id" || q.Get("bucket_width") != "1d" || q.Get("start_time") == "" {
			t.Errorf("unexpected request %s %v", r.URL, r.Header)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		day := 0
		if pg := q.Get("page"); pg != "" {
			day, _ = strconv.Atoi(strings.TrimPrefix(pg, "page_"))
		}
		start := 1730419200 + day*86400
		results := []string{
			`{"object":"organization.costs.result","amount":{"value":0.5,"currency":"usd"},"line_item":null,"project_id":null,"api_key_id":"key_a"}`,
			`{"object":"organization.costs.result","amount":{"value":0.06,"currency":"usd"},"line_item":null,"project_id":null,"api_key_id":null}`,
		}
		if day == 1 {
			results = append(results, `{"object":"organization.costs.result","amount":{"value":1.25,"currency":"usd"},"line_item":null,"project_id":null,"api_key_id":"key_b"}`)
		}
		next, more := "null", "false"
		if day+1 < days {
			next, more = fmt.Sprintf(`"page_%d"`, day+1), "true"
		}
		fmt.Fprintf(w, `{"object":"page","data":[{"object":"bucket","start_time":%d,"end_time":%d,"results":[%s]}],"has_more":%s,"next_page":%s}`,
			start, start+86400, strings.Join(results, ","), more, next)
	})
}

func TestOpenAICosts(t *testing.T) {
	var requests atomic.Int64
	srv := httptest.NewServer(openAICosts(t, 4, &requests))
	defer srv.Close()
	p, err := spend.NewBatch("openai-costs", srv.URL, fastClient(newFakeTime()), spend.BatchConfig{AdminKey: adminKey})
	if err != nil {
		t.Fatal(err)
	}
	res, errs := cycle(t, p, []spend.Key{{ID: "a", UpstreamID: "key_a"}, {ID: "b", UpstreamID: "key_b"}, {ID: "c", UpstreamID: "key_c"}, {ID: "d"}})
	if errs[0] != nil || res[0].Spend != 2 || errs[1] != nil || res[1].Spend != 1.25 || res[0].Lag != time.Hour {
		t.Fatalf("a %+v %v; b %+v %v", res[0], errs[0], res[1], errs[1])
	}
	// A cost report lists only keys that spent.
	if errs[2] != nil || res[2].Spend != 0 {
		t.Fatalf("key absent from the report: %+v %v", res[2], errs[2])
	}
	if errs[3] == nil {
		t.Fatal("a key with no report id got a spend")
	}
	if requests.Load() != 4 {
		t.Fatalf("%d requests, want 4 pages", requests.Load())
	}
}

func TestOpenAICostsParse(t *testing.T) {
	for _, c := range []struct {
		body string
		ok   bool
	}{
		{`{"object":"page","data":[],"has_more":false,"next_page":null}`, true},
		{`{"object":"page","data":[{"results":[{"amount":{"value":1,"currency":"eur"},"api_key_id":"k"}]}],"has_more":false}`, false},
		{`{"object":"page","data":[{"results":[{"amount":{"value":"1","currency":"usd"},"api_key_id":"k"}]}],"has_more":false}`, false},
		{`{"object":"page","data":[{"results":[{"amount":{"value":-1,"currency":"usd"},"api_key_id":"k"}]}],"has_more":false}`, false},
		{`{"object":"page","data":[{"results":[{"api_key_id":"k"}]}],"has_more":false}`, false},
		{`{"object":"page","data":[]}`, false},
		{`{"error":{"message":"Invalid API key","type":"invalid_request_error"}}`, false},
	} {
		_, err := spend.ParseOpenAICosts(200, []byte(c.body))
		if (err == nil) != c.ok {
			t.Errorf("%s: %v", c.body, err)
		}
	}
	if _, err := spend.ParseOpenAICosts(401, []byte(`{"error":{"message":"Incorrect API key provided"}}`)); err == nil || errors.Is(err, spend.ErrUnauthorized) {
		t.Fatalf("admin 401: %v", err)
	}
}

// A has_more that never moves on is not followed for ever.
func TestOpenAICostsStuckCursor(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"object":"page","data":[],"has_more":true,"next_page":"same"}`)
	}))
	defer srv.Close()
	p, _ := spend.NewBatch("openai-costs", srv.URL, fastClient(newFakeTime()), spend.BatchConfig{AdminKey: adminKey})
	if _, err := p.Spend(context.Background(), spend.Key{UpstreamID: "k"}); err == nil || !strings.Contains(err.Error(), "next_page") {
		t.Fatal(err)
	}
}

// Anthropic's analytics cost report: x-api-key, anthropic-version and the
// beta header (no bearer), group_by[]=api_key_id, windows of at most 31
// days, pages by next_page, amounts in fractional cents as decimal strings
// (platform.claude.com/docs/en/api/go/beta/organization/analytics/cost).
func TestAnthropicCost(t *testing.T) {
	ft := newFakeTime() // 2026-11-25 12:00 UTC
	var requests atomic.Int64
	var mu sync.Mutex
	windows := map[string]bool{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		q := r.URL.Query()
		if r.URL.Path != "/v1/organizations/analytics/cost" || r.Header.Get("X-Api-Key") != adminKey || r.Header.Get("Authorization") != "" ||
			r.Header.Get("Anthropic-Version") != "2023-06-01" || r.Header.Get("Anthropic-Beta") != "analytics-usage-cost-2026-08-24" ||
			q.Get("group_by[]") != "api_key_id" {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"type":"error","error":{"type":"invalid_request_error","message":"bad request"}}`)
			return
		}
		from, err1 := time.Parse(time.RFC3339, q.Get("starting_at"))
		to, err2 := time.Parse(time.RFC3339, q.Get("ending_at"))
		if err1 != nil || err2 != nil || to.Sub(from) > 31*24*time.Hour || from.Before(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) || to.After(ft.Now()) {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"type":"error","error":{"type":"invalid_request_error","message":"bad range"}}`)
			return
		}
		mu.Lock()
		windows[q.Get("starting_at")] = true
		mu.Unlock()
		row := func(id, cents string) string {
			return fmt.Sprintf(`{"starting_at":%q,"ending_at":%q,"group":{"api_key_id":%s},"cost":{"amount":%s,"currency":"USD","list_amount":%s,"requests":12}}`,
				q.Get("starting_at"), q.Get("ending_at"), id, cents, cents)
		}
		if q.Get("page") == "" {
			fmt.Fprintf(w, `{"data":[%s,%s],"has_more":true,"next_page":"page_Mg=="}`, row(`"apikey_01A"`, `"150.5"`), row(`null`, `"999"`))
			return
		}
		fmt.Fprintf(w, `{"data":[%s],"has_more":false,"next_page":null}`, row(`"apikey_01B"`, `25`))
	}))
	defer srv.Close()
	p, err := spend.NewBatch("anthropic-costs", srv.URL, fastClient(ft), spend.BatchConfig{AdminKey: adminKey, Since: ft.Now().AddDate(0, 0, -40)})
	if err != nil {
		t.Fatal(err)
	}
	res, errs := cycle(t, p, []spend.Key{{ID: "a", UpstreamID: "apikey_01A"}, {ID: "b", UpstreamID: "apikey_01B"}})
	// Two windows (31 + 9 days), two pages each.
	if errs[0] != nil || math.Abs(res[0].Spend-3.01) > 1e-9 || errs[1] != nil || res[1].Spend != 0.5 || res[0].Lag != time.Hour+5*time.Minute {
		t.Fatalf("a %+v %v; b %+v %v", res[0], errs[0], res[1], errs[1])
	}
	if requests.Load() != 4 || len(windows) != 2 {
		t.Fatalf("%d requests over windows %v", requests.Load(), windows)
	}
}

func TestAnthropicCostParse(t *testing.T) {
	for _, c := range []struct {
		body string
		ok   bool
		want float64
	}{
		{`{"data":[{"group":{"api_key_id":"k"},"cost":{"amount":"1234.5","currency":"USD"}}],"has_more":false,"next_page":null}`, true, 12.345},
		{`{"data":[{"group":{"api_key_id":"k"},"cost":{"amount":1e2,"currency":"USD"}}],"has_more":false}`, true, 1},
		{`{"data":[{"group":{"api_key_id":"k"},"cost":{"amount":"0x10","currency":"USD"}}],"has_more":false}`, false, 0},
		{`{"data":[{"group":{"api_key_id":"k"},"cost":{"amount":"NaN","currency":"USD"}}],"has_more":false}`, false, 0},
		{`{"data":[{"group":{"api_key_id":"k"},"cost":{"amount":"","currency":"USD"}}],"has_more":false}`, false, 0},
		{`{"data":[{"group":{"api_key_id":"k"},"cost":{"amount":"1","currency":"EUR"}}],"has_more":false}`, false, 0},
		{`{"data":[{"group":{"api_key_id":"k"}}],"has_more":false}`, false, 0},
		{`{"type":"error","error":{"type":"not_found_error","message":"Not found"}}`, false, 0},
	} {
		pg, err := spend.ParseAnthropicCost(200, []byte(c.body))
		if (err == nil) != c.ok || (err == nil && math.Abs(pg.Rows[0].Spend-c.want) > 1e-9) {
			t.Errorf("%s: %+v %v", c.body, pg, err)
		}
	}
}

// batchSeeds are FuzzParsers' seeds for the report parsers.
func batchSeeds() []string {
	return []string{
		`{"data":[` + openRouterKeyItem("hash-1", 25.5, false) + `]}`,
		`{"data":[{"hash":"h","usage":1,"limit":null,"disabled":true}]}`,
		`{"object":"page","data":[{"object":"bucket","start_time":1730419200,"end_time":1730505600,"results":[{"object":"organization.costs.result","amount":{"value":0.06,"currency":"usd"},"line_item":null,"project_id":null,"api_key_id":"key_a"}]}],"has_more":true,"next_page":"page_1"}`,
		`{"data":[{"starting_at":"2026-11-01T00:00:00Z","ending_at":"2026-11-02T00:00:00Z","group":{"api_key_id":"apikey_01"},"cost":{"amount":"150.5","currency":"USD"}}],"has_more":false,"next_page":null}`,
		`{"data":[{"group":{"api_key_id":"k"},"cost":{"amount":"1e309","currency":"USD"}}],"has_more":false}`,
	}
}

// fuzzBatch checks the report parsers on one input: a clear page is
// finite, non-negative figures for non-empty ids, and no answer about the
// admin key is ever taken for a dead pool key.
func fuzzBatch(t *testing.T, status int, body []byte) {
	finite := func(v float64) bool { return v >= 0 && v == v && v <= math.MaxFloat64 }
	for _, parse := range []func(int, []byte) (spend.ReportPage, error){spend.ParseOpenRouterKeys, spend.ParseOpenAICosts, spend.ParseAnthropicCost} {
		pg, err := parse(status, body)
		if errors.Is(err, spend.ErrUnauthorized) {
			t.Fatalf("a report answer (%d) taken for a dead key", status)
		}
		if err != nil {
			continue
		}
		if status != 200 {
			t.Fatalf("status %d read as a report", status)
		}
		for _, r := range pg.Rows {
			if r.ID == "" || !finite(r.Spend) || (r.Budget != nil && !finite(*r.Budget)) || (r.BudgetSpend != nil && !finite(*r.BudgetSpend)) {
				t.Fatalf("accepted row %+v from %q", r, body)
			}
		}
		if !json.Valid(body) {
			t.Fatalf("accepted invalid JSON %q", body)
		}
	}
}

// Every batch provider under the same misbehaviour: a long Retry-After
// parks every key of the cycle until then after one request; a 5xx fails
// them after the client's attempts; an error body echoing the admin key
// never shows it.
func TestBatchProvidersMisbehave(t *testing.T) {
	for _, name := range spend.BatchNames {
		for _, c := range []struct {
			what     string
			answer   func(w http.ResponseWriter)
			requests int64
			check    func(error) bool
		}{
			{"429 with a long Retry-After", func(w http.ResponseWriter) {
				w.Header().Set("Retry-After", "120")
				w.WriteHeader(http.StatusTooManyRequests)
				fmt.Fprint(w, `{"error":{"message":"Rate limit reached"}}`)
			}, 1, func(err error) bool {
				var ra *spend.RetryAfterError
				return errors.As(err, &ra) && ra.Until.Equal(newFakeTime().Now().Add(2*time.Minute))
			}},
			{"503", func(w http.ResponseWriter) {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprint(w, `{"error":{"message":"overloaded"}}`)
			}, 4, func(err error) bool { return err != nil && strings.Contains(err.Error(), "503") }},
			{"403 echoing the admin key", func(w http.ResponseWriter) {
				w.WriteHeader(http.StatusForbidden)
				fmt.Fprintf(w, `{"type":"error","error":{"type":"permission_error","message":"key %s lacks read:analytics"}}`, adminKey)
			}, 1, func(err error) bool {
				var uc *spend.UnclearError
				return errors.As(err, &uc) && !strings.Contains(err.Error(), adminKey) && strings.Contains(err.Error(), "sk-or...cdef")
			}},
		} {
			t.Run(name+"/"+c.what, func(t *testing.T) {
				var requests atomic.Int64
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					requests.Add(1)
					c.answer(w)
				}))
				defer srv.Close()
				p, err := spend.NewBatch(name, srv.URL, fastClient(newFakeTime()), spend.BatchConfig{AdminKey: adminKey})
				if err != nil {
					t.Fatal(err)
				}
				_, errs := cycle(t, p, poolKeys(30))
				for i, err := range errs {
					if !c.check(err) || errors.Is(err, spend.ErrUnauthorized) {
						t.Fatalf("key %d: %v", i, err)
					}
				}
				if requests.Load() != c.requests {
					t.Fatalf("%d requests for 30 keys, want %d", requests.Load(), c.requests)
				}
			})
		}
	}
}

func TestNewBatchRefuses(t *testing.T) {
	for _, c := range []struct{ name, url, key string }{
		{"openrouter", "", adminKey},
		{"openrouter-keys", "", " "},
		{"openai-costs", "ftp://x", adminKey},
	} {
		if _, err := spend.NewBatch(c.name, c.url, nil, spend.BatchConfig{AdminKey: c.key}); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	if !spend.IsBatch("anthropic-costs") || spend.IsBatch("openrouter") {
		t.Fatal("IsBatch")
	}
}

// A cost report that would start in the future is refused, not read as
// every key spending nothing.
func TestCostReportSinceInTheFuture(t *testing.T) {
	ft := newFakeTime()
	for _, name := range []string{"openai-costs", "anthropic-costs"} {
		var requests atomic.Int64
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { requests.Add(1) }))
		p, _ := spend.NewBatch(name, srv.URL, fastClient(ft), spend.BatchConfig{AdminKey: adminKey, Since: ft.Now().Add(time.Hour)})
		_, err := p.Spend(context.Background(), spend.Key{UpstreamID: "k"})
		srv.Close()
		if err == nil || !strings.Contains(err.Error(), "not in the past") || requests.Load() != 0 {
			t.Errorf("%s: %v after %d requests", name, err, requests.Load())
		}
	}
}

// A cost report whose costs carry no api_key_id at all (the grouping not
// applied, or an organization whose rows are not attributed to keys) says
// nothing about any key: every key fails its check, none reads as $0.
func TestCostReportWithoutAttribution(t *testing.T) {
	bodies := map[string]string{
		"openai-costs":    `{"object":"page","data":[{"object":"bucket","start_time":1730419200,"end_time":1730505600,"results":[{"object":"organization.costs.result","amount":{"value":12.5,"currency":"usd"},"line_item":null,"project_id":null}]}],"has_more":false,"next_page":null}`,
		"anthropic-costs": `{"data":[{"starting_at":"2026-11-01T00:00:00Z","ending_at":"2026-11-02T00:00:00Z","group":{"api_key_id":null},"cost":{"amount":"1250","currency":"USD"}}],"has_more":false,"next_page":null}`,
	}
	for name, body := range bodies {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, body) }))
		p, _ := spend.NewBatch(name, srv.URL, fastClient(newFakeTime()), spend.BatchConfig{AdminKey: adminKey, Since: newFakeTime().Now().AddDate(0, 0, -3)})
		r, err := p.Spend(context.Background(), spend.Key{UpstreamID: "key_a"})
		srv.Close()
		var uc *spend.UnclearError
		if !errors.As(err, &uc) || !strings.Contains(err.Error(), "puts no cost to any API key") {
			t.Errorf("%s: %+v %v", name, r, err)
		}
	}
}
