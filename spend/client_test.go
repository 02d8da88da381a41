package spend_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/spendchecker/spendchecker/spend"
)

// fakeTime is a clock that moves only when told, and records the waits the
// client asks for instead of sleeping. A wait advances the clock by as
// much, as a real sleep would.
type fakeTime struct {
	mu    sync.Mutex
	now   time.Time
	waits []time.Duration
}

func newFakeTime() *fakeTime { return &fakeTime{now: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)} }

func (f *fakeTime) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeTime) Wait(_ context.Context, d time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.waits = append(f.waits, d)
	f.now = f.now.Add(d)
	return nil
}

func (f *fakeTime) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
}

func (f *fakeTime) Waits() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Duration(nil), f.waits...)
}

// activityPage answers one page of LiteLLM's /user/daily/activity
// (litellm/proxy/management_endpoints/common_daily_activity.py: metadata
// totals only the page's rows; has_more = page·page_size < total rows).
func activityPage(spend float64, page, pages int) string {
	return fmt.Sprintf(`{"results":[{"date":"2025-03-0%d","metrics":{"spend":%v,"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"api_requests":1,"successful_requests":1,"failed_requests":0},"breakdown":{"models":{},"providers":{},"api_keys":{}}}],"metadata":{"total_spend":%v,"total_prompt_tokens":10,"total_completion_tokens":5,"total_tokens":15,"total_api_requests":1,"total_successful_requests":1,"total_failed_requests":0,"page":%d,"total_pages":%d,"has_more":%v}}`,
		page, spend, spend, page, pages, page < pages)
}

// A key at $12 whose spend spans three pages, some of it from before the
// key document's createdAt (a migrated key), reads as $12, not page 1's $8.
func TestOpenHandsReadsEveryPage(t *testing.T) {
	pages := []float64{8, 3, 1}
	var starts []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		starts = append(starts, q.Get("start_date"))
		var page int
		fmt.Sscan(q.Get("page"), &page)
		if page < 1 || page > len(pages) {
			t.Errorf("asked for page %q", q.Get("page"))
			w.WriteHeader(400)
			return
		}
		fmt.Fprint(w, activityPage(pages[page-1], page, len(pages)))
	}))
	defer srv.Close()
	p, err := spend.New("openhands", srv.URL, &spend.Client{})
	if err != nil {
		t.Fatal(err)
	}
	created := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	res, err := p.Spend(context.Background(), spend.Key{Secret: "sk-k", CreatedAt: created})
	if err != nil {
		t.Fatal(err)
	}
	if res.Spend != 12 {
		t.Errorf("spend %v, want 12 (all three pages)", res.Spend)
	}
	if len(starts) != 3 {
		t.Errorf("%d requests, want 3", len(starts))
	}
	for _, s := range starts {
		if d, err := time.Parse(time.DateOnly, s); err != nil || !d.Before(created) {
			t.Errorf("start_date %q does not precede the key document's createdAt", s)
		}
	}
}

func TestOpenHandsPagingMisbehaves(t *testing.T) {
	for name, answer := range map[string]func(page int) string{
		"endless pages":     func(page int) string { return activityPage(1, page, 100000) },
		"has_more for ever": func(page int) string { return activityPage(1, 1, 2) },
		"spend not a number": func(page int) string {
			return `{"metadata":{"total_spend":"1","page":1,"total_pages":2,"has_more":true}}`
		},
	} {
		t.Run(name, func(t *testing.T) {
			var calls atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
				var page int
				fmt.Sscan(r.URL.Query().Get("page"), &page)
				fmt.Fprint(w, answer(page))
			}))
			defer srv.Close()
			p, _ := spend.New("openhands", srv.URL, &spend.Client{})
			res, err := p.Spend(context.Background(), spend.Key{Secret: "sk-k"})
			var uc *spend.UnclearError
			// Past the page cap the pages read are a lower bound (AtLeast),
			// never a whole answer.
			if !errors.As(err, &uc) && !(err == nil && res.AtLeast) {
				t.Fatalf("got %+v, %v, want unclear or a lower bound", res, err)
			}
			if calls.Load() > 50 {
				t.Errorf("%d requests for one check", calls.Load())
			}
		})
	}
}

// A provider URL that redirects to another host must not turn into a 401
// there (Go drops the bearer token across hosts): the redirect is refused.
func TestCrossHostRedirectRefused(t *testing.T) {
	var otherCalls atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		otherCalls.Add(1)
		w.WriteHeader(401)
		fmt.Fprint(w, litellmAuthError)
	}))
	defer other.Close()
	otherURL := strings.Replace(other.URL, "127.0.0.1", "localhost", 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/moved/api/v1/key" {
			fmt.Fprint(w, openrouterOK)
			return
		}
		if r.Header.Get("X-Same") != "" {
			http.Redirect(w, r, "/moved"+r.URL.Path, http.StatusFound)
			return
		}
		http.Redirect(w, r, otherURL+r.URL.Path, http.StatusFound)
	}))
	defer srv.Close()
	p, _ := spend.New("openrouter", srv.URL, &spend.Client{})
	_, err := p.Spend(context.Background(), spend.Key{Secret: "sk-or-k"})
	if errors.Is(err, spend.ErrUnauthorized) {
		t.Fatal("a cross-host redirect made the key look dead")
	}
	var uc *spend.UnclearError
	if !errors.As(err, &uc) || !strings.Contains(err.Error(), "redirect") {
		t.Fatalf("err %v, want a refused redirect", err)
	}
	if otherCalls.Load() != 0 {
		t.Errorf("the other host was asked %d times", otherCalls.Load())
	}
	// A redirect on the same host is followed.
	hc := &http.Client{Transport: headerTransport{"X-Same", "1"}}
	p, _ = spend.New("openrouter", srv.URL, &spend.Client{HTTP: hc})
	if res, err := p.Spend(context.Background(), spend.Key{Secret: "sk-or-k"}); err != nil || res.Spend != 25.5 {
		t.Fatalf("same-host redirect: %+v, %v", res, err)
	}
}

type headerTransport struct{ k, v string }

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(h.k, h.v)
	return http.DefaultTransport.RoundTrip(r)
}

func spendServer(t *testing.T, handler func(w http.ResponseWriter, r *http.Request)) (*httptest.Server, *atomic.Int64) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		handler(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &calls
}

// --rate-limit (Client.Limiter) and the per-host rate space requests out:
// each request waits for its token on the client's clock.
func TestRateLimits(t *testing.T) {
	srvA, _ := spendServer(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, openrouterOK) })
	srvB, _ := spendServer(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, openrouterOK) })
	urlB := strings.Replace(srvB.URL, "127.0.0.1", "localhost", 1)
	t.Run("global", func(t *testing.T) {
		ft := newFakeTime()
		c := &spend.Client{Limiter: rate.NewLimiter(2, 1), Now: ft.Now, Wait: ft.Wait}
		pa, _ := spend.New("openrouter", srvA.URL, c)
		pb, _ := spend.New("openrouter", urlB, c)
		for _, p := range []spend.Provider{pa, pb, pa} {
			if _, err := p.Spend(context.Background(), spend.Key{Secret: "k"}); err != nil {
				t.Fatal(err)
			}
		}
		if got := ft.Waits(); fmt.Sprint(got) != "[500ms 500ms]" {
			t.Errorf("waits %v, want [500ms 500ms]: 2 requests a second across hosts", got)
		}
	})
	t.Run("per host", func(t *testing.T) {
		ft := newFakeTime()
		c := &spend.Client{HostRate: 4, HostBurst: 1, Now: ft.Now, Wait: ft.Wait}
		pa, _ := spend.New("openrouter", srvA.URL, c)
		pb, _ := spend.New("openrouter", urlB, c)
		for _, p := range []spend.Provider{pa, pa, pb, pa} {
			if _, err := p.Spend(context.Background(), spend.Key{Secret: "k"}); err != nil {
				t.Fatal(err)
			}
		}
		// Host A waits for its second and third token; host B has its own.
		if got := ft.Waits(); fmt.Sprint(got) != "[250ms 250ms]" {
			t.Errorf("waits %v, want [250ms 250ms]", got)
		}
	})
}

// A Retry-After longer than the client waits is remembered: the key is
// not asked about again before it, by this client, in any later cycle.
func TestRetryAfterRemembered(t *testing.T) {
	srv, calls := spendServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "Bearer limited" {
			w.Header().Set("Retry-After", "120")
			w.WriteHeader(429)
			fmt.Fprint(w, `{"error":{"message":"Rate limit exceeded","code":429}}`)
			return
		}
		fmt.Fprint(w, openrouterOK)
	})
	ft := newFakeTime()
	start := ft.Now()
	c := &spend.Client{Now: ft.Now, Wait: ft.Wait, MaxBackoff: 30 * time.Second}
	p, _ := spend.New("openrouter", srv.URL, c)
	_, err := p.Spend(context.Background(), spend.Key{Secret: "limited"})
	var ra *spend.RetryAfterError
	if !errors.As(err, &ra) || !ra.Until.Equal(start.Add(120*time.Second)) {
		t.Fatalf("err %v, want retry after %v", err, start.Add(120*time.Second))
	}
	ft.Advance(60 * time.Second)
	if _, err := p.Spend(context.Background(), spend.Key{Secret: "limited"}); !errors.As(err, &ra) {
		t.Fatalf("inside Retry-After: err %v", err)
	}
	if calls.Load() != 1 {
		t.Fatalf("%d requests inside Retry-After, want 1", calls.Load())
	}
	if _, err := p.Spend(context.Background(), spend.Key{Secret: "other"}); err != nil {
		t.Fatalf("another key: %v", err)
	}
	ft.Advance(61 * time.Second)
	_, _ = p.Spend(context.Background(), spend.Key{Secret: "limited"})
	if calls.Load() != 3 {
		t.Fatalf("%d requests, want the key asked again after its Retry-After", calls.Load())
	}
}

// While a host fails, it is left alone for a pause that doubles, up to a
// cap; keys are not polled into it. One success ends the backoff.
func TestHostBackoff(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	srv, calls := spendServer(t, func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			w.WriteHeader(503)
			return
		}
		fmt.Fprint(w, openrouterOK)
	})
	ft := newFakeTime()
	// HostFailKeys 1: the pause after the first failed key (by default the
	// host pauses after 3 different keys failed in a row; TestHostFailKeys).
	c := &spend.Client{Now: ft.Now, Wait: ft.Wait, MaxAttempts: 1, HostBackoff: time.Second, MaxHostBackoff: 4 * time.Second, HostFailKeys: 1}
	p, _ := spend.New("openrouter", srv.URL, c)
	get := func() error {
		_, err := p.Spend(context.Background(), spend.Key{Secret: fmt.Sprint("k", ft.Now().UnixNano())})
		return err
	}
	var hb *spend.HostBackoffError
	for i, pause := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second} {
		before := calls.Load()
		if err := get(); err == nil || errors.As(err, &hb) {
			t.Fatalf("probe %d: err %v, want the 503", i, err)
		}
		for range 10 {
			if err := get(); !errors.As(err, &hb) {
				t.Fatalf("probe %d: err %v, want host backing off", i, err)
			}
		}
		if calls.Load() != before+1 {
			t.Fatalf("probe %d: %d requests while backing off", i, calls.Load()-before)
		}
		ft.Advance(pause - time.Millisecond)
		if err := get(); !errors.As(err, &hb) {
			t.Fatalf("probe %d: backoff ended before %v", i, pause)
		}
		ft.Advance(time.Millisecond)
	}
	down.Store(false)
	for range 3 {
		if err := get(); err != nil {
			t.Fatalf("after recovery: %v", err)
		}
	}
}

// One key the upstream cannot answer (a 500 for it alone) must not pause
// the host for its neighbours: the host pauses only once HostFailKeys
// different keys failed in a row.
func TestHostFailKeys(t *testing.T) {
	srv, _ := spendServer(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.Header.Get("Authorization"), "Bearer bad") {
			w.WriteHeader(500)
			return
		}
		fmt.Fprint(w, openrouterOK)
	})
	ft := newFakeTime()
	c := &spend.Client{Now: ft.Now, Wait: ft.Wait, MaxAttempts: 2}
	p, _ := spend.New("openrouter", srv.URL, c)
	var hb *spend.HostBackoffError
	for range 5 {
		if _, err := p.Spend(context.Background(), spend.Key{Secret: "bad-1"}); err == nil || errors.As(err, &hb) {
			t.Fatalf("poisoned key: %v, want its own 500", err)
		}
		if _, err := p.Spend(context.Background(), spend.Key{Secret: "good"}); err != nil {
			t.Fatalf("neighbour of one failing key: %v", err)
		}
	}
	for _, k := range []string{"bad-1", "bad-2", "bad-3"} {
		_, _ = p.Spend(context.Background(), spend.Key{Secret: k})
	}
	if _, err := p.Spend(context.Background(), spend.Key{Secret: "good"}); !errors.As(err, &hb) {
		t.Fatalf("after 3 different keys failed in a row: %v, want the host backing off", err)
	}
	// After the pause the poisoned key, probing first, does not pause the
	// host again on its own.
	ft.Advance(time.Minute)
	_, _ = p.Spend(context.Background(), spend.Key{Secret: "bad-1"})
	if _, err := p.Spend(context.Background(), spend.Key{Secret: "good"}); err != nil {
		t.Fatalf("after the pause, one failing probe paused the host again: %v", err)
	}
}
