// Package fakeupstream is a local upstream that answers spend queries as the
// providers document them, for tests, benchmarks and the demo.
package fakeupstream

import (
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Server answers for one provider kind: openhands, litellm, openrouter,
// oneapi (one-api/new-api billing endpoints) or deepseek (a balance: a
// key's "spend" set here is what remains of its account's balance).
type Server struct {
	URL  string
	srv  *httptest.Server
	kind string

	// Latency delays every answer (for throughput benchmarks).
	Latency time.Duration
	// OnRequest, if set, runs before a key's answer is computed. Calls are
	// serialised, so a hook may keep state without locking; it may call the
	// server's methods.
	OnRequest func(secret string)
	hookMu    sync.Mutex

	mu     sync.Mutex
	spend  map[string]float64
	budget map[string]float64
	status map[string]int
	calls  map[string]int
	served map[string]float64 // the highest spend answered per key
	pages  map[string]int     // openhands: pages a key's daily activity spans
	period map[string]float64 // openrouter: spend in the limit's current period
	retry  map[string]string  // Retry-After sent with a key's status
	unlim  map[string]bool    // oneapi: tokens with unlimited quota
	// defSpend answers keys never set, when hasDef (large benchmarks).
	defSpend float64
	hasDef   bool

	inflight, maxInflight atomic.Int64
	total                 atomic.Int64
	answering             atomic.Int64 // ns spent in queries, from handler entry to return

	// adm is the key-management API (admin.go), off until EnableAdmin.
	adm admin
}

// New starts a server on loopback.
func New(kind string) *Server {
	s := &Server{kind: kind, spend: map[string]float64{}, budget: map[string]float64{}, status: map[string]int{}, calls: map[string]int{}, served: map[string]float64{},
		pages: map[string]int{}, period: map[string]float64{}, retry: map[string]string{}, unlim: map[string]bool{}}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	return s
}

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

// SetSpend sets a key's spend; AddSpend adds to it.
func (s *Server) SetSpend(secret string, v float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.spend[secret] = v
}

// SetDefaultSpend makes keys never set answer v instead of 401.
func (s *Server) SetDefaultSpend(v float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.defSpend, s.hasDef = v, true
}

// AddSpend adds to a key's spend.
func (s *Server) AddSpend(secret string, v float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Upstreams report spend to a fixed precision; keep repeated additions
	// from drifting into float noise (9.980000000000008).
	s.spend[secret] = math.Round((s.spend[secret]+v)*1e9) / 1e9
}

// Spend returns a key's current spend.
func (s *Server) Spend(secret string) float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.spend[secret]
}

// SetBudget sets a key's budget; a key at or over it is refused with
// LiteLLM's budget_exceeded error.
func (s *Server) SetBudget(secret string, v float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.budget[secret] = v
}

// SetPages spreads a key's daily activity over n pages (openhands): each
// page's metadata.total_spend is that page's share, as LiteLLM totals only
// the rows of the page asked for.
func (s *Server) SetPages(secret string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pages[secret] = n
}

// SetPeriodSpend gives a key (openrouter) a monthly-resetting limit of
// which v is spent this month: limit_remaining is budget − v, while usage
// stays the lifetime spend.
func (s *Server) SetPeriodSpend(secret string, v float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.period[secret] = v
}

// SetRetryAfter sends a Retry-After header with a key's status (SetStatus).
func (s *Server) SetRetryAfter(secret, v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.retry[secret] = v
}

// SetUnlimited gives a oneapi token unlimited quota: hard_limit_usd
// 100000000 and, as one-api counts nothing for it, a usage of 0.
func (s *Server) SetUnlimited(secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unlim[secret] = true
}

// SetStatus makes every answer for a key use this HTTP status (0 resets).
func (s *Server) SetStatus(secret string, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status[secret] = status
}

// Calls returns how often a key was queried.
func (s *Server) Calls(secret string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[secret]
}

// MaxServed returns the highest spend ever answered for a key: a rotation
// recording more than that acted on a number the upstream never gave.
func (s *Server) MaxServed(secret string) float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.served[secret]
}

// TotalCalls returns the number of queries.
func (s *Server) TotalCalls() int64 { return s.total.Load() }

// Answering returns the time spent answering queries, summed from each
// handler's entry to its return (Latency included), and their number: a
// benchmark tells the upstream's share of a call from the network's and
// the caller's.
func (s *Server) Answering() (time.Duration, int64) {
	return time.Duration(s.answering.Load()), s.total.Load()
}

// MaxInFlight returns the most queries that were ever being answered at once.
func (s *Server) MaxInFlight() int64 { return s.maxInflight.Load() }

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if s.serveAdmin(w, r) {
		return
	}
	start := time.Now()
	defer func() { s.answering.Add(int64(time.Since(start))) }()
	n := s.inflight.Add(1)
	defer s.inflight.Add(-1)
	for {
		m := s.maxInflight.Load()
		if n <= m || s.maxInflight.CompareAndSwap(m, n) {
			break
		}
	}
	s.total.Add(1)
	secret := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if s.refused(secret) {
		// A key disabled or deleted through the management API.
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":{"message":"User not found.","code":401}}`)
		return
	}
	if s.OnRequest != nil {
		s.hookMu.Lock()
		s.OnRequest(secret)
		s.hookMu.Unlock()
	}
	if s.Latency > 0 {
		t := time.NewTimer(s.Latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	s.mu.Lock()
	s.calls[secret]++
	spend, known := s.spend[secret]
	if !known && s.hasDef {
		spend, known = s.defSpend, true
	}
	budget, hasBudget := s.budget[secret]
	status := s.status[secret]
	pages := max(s.pages[secret], 1)
	period, resets := s.period[secret]
	retry := s.retry[secret]
	unlimited := s.unlim[secret]
	if known && status == 0 {
		s.served[secret] = max(s.served[secret], spend)
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch {
	case status != 0:
		if retry != "" {
			w.Header().Set("Retry-After", retry)
		}
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"error":{"message":"status %d","code":"%d"}}`, status, status)
		return
	case !known && s.kind == "oneapi":
		// one-api middleware/utils.go abortWithMessage, model/token.go.
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":{"message":"无效的令牌 (request id: 20261125120000000000001)","type":"one_api_error"}}`)
		return
	case s.kind == "oneapi" && hasBudget && spend >= budget && !unlimited:
		// one-api marks the token exhausted and refuses it on every route.
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":{"message":"该令牌额度已用尽 (request id: 20261125120000000000001)","type":"one_api_error"}}`)
		return
	case !known && s.kind == "openrouter":
		// openrouter.ai/docs/api-reference/errors: {"error":{"code","message"}}.
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":{"message":"No auth credentials found","code":401}}`)
		return
	case !known:
		// LiteLLM's ProxyException for an unknown key
		// (litellm/proxy/auth/user_api_key_auth.py, auth_error).
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":{"message":"Authentication Error, Invalid proxy server token passed. Unable to find token in cache or LiteLLM_VerificationTokenTable","type":"auth_error","param":"None","code":"401"}}`)
		return
	case hasBudget && spend >= budget && s.kind != "openrouter" && s.kind != "deepseek":
		// litellm/exceptions.py BudgetExceededError's message in LiteLLM's
		// ProxyException envelope; figures as Python's str(float) prints them.
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"error":{"message":"Budget has been exceeded! Current cost: %s, Max budget: %s","type":"budget_exceeded","param":null,"code":"400"}}`, pyFloat(spend), pyFloat(budget))
		return
	}
	budgetJSON := "null"
	if hasBudget {
		budgetJSON = fmt.Sprint(budget)
	}
	switch s.kind {
	case "oneapi":
		// one-api controller/billing.go: GetSubscription, GetUsage (cents).
		if strings.HasSuffix(r.URL.Path, "/subscription") {
			limit := 10.0
			if hasBudget {
				limit = budget - spend // one-api: the token's remaining quota
			}
			if unlimited {
				limit = 100000000
			}
			fmt.Fprintf(w, `{"object":"billing_subscription","has_payment_method":true,"soft_limit_usd":%v,"hard_limit_usd":%v,"system_hard_limit_usd":%v,"access_until":0}`, limit, limit, limit)
			return
		}
		if unlimited {
			spend = 0
		}
		fmt.Fprintf(w, `{"object":"list","total_usage":%v}`, math.Round(spend*100*1e6)/1e6)
	case "deepseek":
		// api-docs.deepseek.com/api/get-user-balance: amounts as strings.
		fmt.Fprintf(w, `{"is_available":%v,"balance_infos":[{"currency":"USD","total_balance":"%.2f","granted_balance":"0.00","topped_up_balance":"%.2f"}]}`, spend > 0, spend, spend)
	case "litellm":
		fmt.Fprintf(w, `{"key":"sk-...","info":{"spend":%v,"max_budget":%s,"models":[]}}`, spend, budgetJSON)
	case "openrouter":
		// openrouter.ai/docs/api/api-reference/api-keys/get-current-key
		remaining, reset := "null", "null"
		if hasBudget {
			used := spend
			if resets {
				used, reset = period, `"monthly"`
			}
			remaining = fmt.Sprint(max(budget-used, 0))
		}
		fmt.Fprintf(w, `{"data":{"label":"sk-or-v1-...","usage":%v,"limit":%s,"limit_remaining":%s,"limit_reset":%s,"is_free_tier":false}}`, spend, budgetJSON, remaining, reset)
	default:
		// LiteLLM's /user/daily/activity: metadata totals the page's rows
		// only (litellm/proxy/management_endpoints/common_daily_activity.py).
		page, _ := strconv.Atoi(r.URL.Query().Get("page"))
		page = max(page, 1)
		share := 0.0
		if page <= pages {
			share = spend / float64(pages)
			if page == pages {
				share = spend - share*float64(pages-1)
			}
		}
		fmt.Fprintf(w, `{"results":[],"metadata":{"total_spend":%v,"total_api_requests":1,"page":%d,"total_pages":%d,"has_more":%v}}`, share, page, pages, page < pages)
	}
}

// pyFloat prints v as Python's repr(float) does: 10.0, 10.02, 1.5e-05,
// 1e+16 (exponent form below 1e-4 and from 1e16).
func pyFloat(v float64) string {
	if a := math.Abs(v); a != 0 && (a < 1e-4 || a >= 1e16) {
		return strconv.FormatFloat(v, 'e', -1, 64)
	}
	s := strconv.FormatFloat(v, 'f', -1, 64)
	if !strings.Contains(s, ".") {
		s += ".0"
	}
	return s
}
