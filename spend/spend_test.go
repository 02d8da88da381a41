package spend_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spendchecker/spendchecker/spend"
)

// Answers as the providers give them. Sources:
//   - openhands (LiteLLM /user/daily/activity): SpendAnalyticsPaginatedResponse and
//     DailySpendMetadata built in litellm/proxy/management_endpoints/common_daily_activity.py
//     (get_daily_activity: total_spend over the page's rows, page, total_pages, has_more).
//   - budget refusals: litellm/exceptions.py BudgetExceededError ("Budget has been exceeded!
//     Current cost: {current_cost}, Max budget: {max_budget}") in LiteLLM's ProxyException
//     envelope {"error":{"message","type":"budget_exceeded","param","code"}};
//     docs/my-website/docs/proxy/users.md ("Authentication Error, ExceededTokenBudget: Current
//     spend for token: 7.2e-05; Max Budget for Token: 2e-07" and "ExceededBudget:
//     User=<user_id> over budget. Spend=3.7e-05, Budget=0.0", type budget_exceeded, code 400);
//     litellm/proxy/auth/auth_checks.py ("Budget has been exceeded! Team={team_id} Current
//     cost: …") and user_api_key_auth.py ("ExceededTokenBudget: Current Team Spend: …; Max
//     Budget for Team: …").
//   - litellm /key/info: {"key":…,"info":{"spend","max_budget",…}} (LiteLLM docs, virtual keys).
//   - openrouter: openrouter.ai/docs/api/api-reference/api-keys/get-current-key, its example.
const (
	openhandsOK       = `{"results":[{"date":"2026-11-20","metrics":{"spend":3.1,"prompt_tokens":1200,"completion_tokens":300,"total_tokens":1500,"api_requests":12,"successful_requests":12,"failed_requests":0},"breakdown":{"models":{},"providers":{},"api_keys":{}}}],"metadata":{"total_spend":9.97,"total_prompt_tokens":1200,"total_completion_tokens":300,"total_tokens":1500,"total_api_requests":120,"total_successful_requests":120,"total_failed_requests":0,"page":1,"total_pages":1,"has_more":false}}`
	openhandsOver     = `{"error":{"message":"Budget has been exceeded! Current cost: 10.02, Max budget: 10.0","type":"budget_exceeded","param":null,"code":"400"}}`
	litellmTokenOver  = `{"detail":"Authentication Error, ExceededTokenBudget: Current spend for token: 7.2e-05; Max Budget for Token: 2e-07"}`
	litellmUserOver   = `{"error":{"message":"ExceededBudget: User=<user_id> over budget. Spend=3.7e-05, Budget=0.0","type":"budget_exceeded","param":null,"code":"400"}}`
	litellmTeamOver   = `{"error":{"message":"Budget has been exceeded! Team=team-a Current cost: 51.2, Max budget: 50.0","type":"budget_exceeded","param":null,"code":"400"}}`
	litellmTeamOver2  = `{"error":{"message":"Authentication Error, ExceededTokenBudget: Current Team Spend: 51.2; Max Budget for Team: 50.0","type":"auth_error","param":"None","code":"401"}}`
	litellmAuthError  = `{"error":{"message":"Authentication Error, Invalid proxy server token passed. Received API Key = sk-...abcd, Key Hash (Token) =e3b0c442. Unable to find token in cache or LiteLLM_VerificationTokenTable","type":"auth_error","param":"None","code":"401"}}`
	litellmOK         = `{"key":"sk-...abcd","info":{"key_name":"sk-...abcd","spend":4.25,"max_budget":10.0,"models":[],"team_id":null}}`
	litellmNoCap      = `{"key":"sk-...abcd","info":{"spend":4.25,"max_budget":null}}`
	openrouterOK      = `{"data":{"label":"sk-or-v1-au7...890","limit":100,"limit_remaining":74.5,"limit_reset":"monthly","include_byok_in_limit":false,"usage":25.5,"usage_daily":25.5,"usage_weekly":25.5,"usage_monthly":25.5,"byok_usage":17.38,"is_free_tier":false,"is_provisioning_key":false}}`
	openrouterReset   = `{"data":{"label":"sk-or-v1-au7...890","limit":100,"limit_remaining":90,"limit_reset":"monthly","usage":250.5,"usage_monthly":10,"is_free_tier":false}}`
	openrouterNoReset = `{"data":{"label":"sk-or-v1-au7...890","limit":10,"limit_remaining":2.5,"limit_reset":null,"usage":7.5,"is_free_tier":false}}`
	// openrouter.ai/docs/api-reference/errors: {"error":{"code","message"}}.
	openrouterAuth = `{"error":{"message":"No auth credentials found","code":401}}`
	// Not the provider: a CDN's block page, and its RFC 9457 JSON variant.
	cdnBlockHTML = `<!DOCTYPE html><html><head><title>Attention Required! | Cloudflare</title></head><body><h1>Sorry, you have been blocked</h1></body></html>`
	cdnBlockJSON = `{"type":"https://developers.cloudflare.com/support/troubleshooting/http-status-codes/cloudflare-1xxx-errors/error-1020/","title":"Error 1020: Access denied","status":403,"detail":"The site owner has blocked access based on your browser's signature.","error_code":1020}`
)

func f(v float64) *float64 { return &v }

func TestParsers(t *testing.T) {
	type parser func(int, []byte) (spend.Result, error)
	tests := []struct {
		name    string
		parse   parser
		status  int
		body    string
		want    spend.Result
		wantErr string // "unclear", "unauthorized" or ""
	}{
		{"openhands ok", spend.ParseOpenHands, 200, openhandsOK, spend.Result{Spend: 9.97}, ""},
		{"openhands budget exceeded", spend.ParseOpenHands, 400, openhandsOver, spend.Result{Spend: 10.02, Budget: f(10), BudgetExceeded: true}, ""},
		{"token budget, exponent form, as a 401", spend.ParseOpenHands, 401, litellmTokenOver, spend.Result{Spend: 7.2e-05, Budget: f(2e-07), BudgetExceeded: true}, ""},
		// A key's owner's personal budget: the key's own unless another key
		// of the pool names the user (the rotator holds those).
		{"personal budget names its user", spend.ParseOpenHands, 400, litellmUserOver, spend.Result{Spend: 3.7e-05, Budget: f(0), BudgetExceeded: true, BudgetUser: "<user_id>"}, ""},
		{"Spend=1.5e-05 is not 1.5", spend.ParseLiteLLM, 400, `{"error":{"message":"Authentication Error, ExceededTokenBudget: Current spend for token: 1.5e-05; Max Budget for Token: 1e-05","type":"auth_error","param":"None","code":"401"}}`, spend.Result{Spend: 1.5e-05, Budget: f(1e-05), BudgetExceeded: true}, ""},
		{"budget refusal as a 429", spend.ParseLiteLLM, 429, openhandsOver, spend.Result{Spend: 10.02, Budget: f(10), BudgetExceeded: true}, ""},
		{"big figures in exponent form", spend.ParseOpenHands, 400, `{"error":{"message":"Budget has been exceeded! Current cost: 1e+16, Max budget: 10.0","type":"budget_exceeded","param":null,"code":"400"}}`, spend.Result{Spend: 1e16, Budget: f(10), BudgetExceeded: true}, ""},
		{"team budget does not rotate", spend.ParseOpenHands, 400, litellmTeamOver, spend.Result{}, "unclear"},
		{"team budget (token form) does not rotate", spend.ParseOpenHands, 401, litellmTeamOver2, spend.Result{}, "unclear"},
		{"budget inf refused", spend.ParseOpenHands, 400, `{"error":{"message":"Budget has been exceeded! Current cost: inf, Max budget: 10.0","type":"budget_exceeded","param":null,"code":"400"}}`, spend.Result{}, "unclear"},
		{"budget nan refused", spend.ParseOpenHands, 400, `{"error":{"message":"ExceededBudget: User=u over budget. Spend=nan, Budget=10.0","type":"budget_exceeded","param":null,"code":"400"}}`, spend.Result{}, "unclear"},
		{"openhands other 400", spend.ParseOpenHands, 400, `{"error":"bad date"}`, spend.Result{}, "unclear"},
		{"openhands 401", spend.ParseOpenHands, 401, litellmAuthError, spend.Result{}, "unauthorized"},
		{"openhands 403 empty body is not the provider", spend.ParseOpenHands, 403, ``, spend.Result{}, "unclear"},
		{"403 HTML block page is not the provider", spend.ParseOpenHands, 403, cdnBlockHTML, spend.Result{}, "unclear"},
		{"403 CDN JSON is not the provider", spend.ParseLiteLLM, 403, cdnBlockJSON, spend.Result{}, "unclear"},
		{"401 plain text is not the provider", spend.ParseOpenRouter, 401, `Unauthorized`, spend.Result{}, "unclear"},
		{"openrouter 401", spend.ParseOpenRouter, 401, openrouterAuth, spend.Result{}, "unauthorized"},
		{"openhands missing metadata", spend.ParseOpenHands, 200, `{"results":[]}`, spend.Result{}, "unclear"},
		{"openhands string spend", spend.ParseOpenHands, 200, `{"metadata":{"total_spend":"9.99"}}`, spend.Result{}, "unclear"},
		{"openhands null spend", spend.ParseOpenHands, 200, `{"metadata":{"total_spend":null}}`, spend.Result{}, "unclear"},
		{"openhands negative", spend.ParseOpenHands, 200, `{"metadata":{"total_spend":-1}}`, spend.Result{}, "unclear"},
		{"openhands NaN", spend.ParseOpenHands, 200, `{"metadata":{"total_spend":NaN}}`, spend.Result{}, "unclear"},
		{"openhands overflow", spend.ParseOpenHands, 200, `{"metadata":{"total_spend":1e999}}`, spend.Result{}, "unclear"},
		{"openhands truncated", spend.ParseOpenHands, 200, `{"metadata":{"total_sp`, spend.Result{}, "unclear"},
		{"openhands html", spend.ParseOpenHands, 200, `<html>502 Bad Gateway</html>`, spend.Result{}, "unclear"},
		{"budget_exceeded without figure", spend.ParseOpenHands, 400, `{"error":"budget_exceeded"}`, spend.Result{}, "unclear"},
		{"litellm ok", spend.ParseLiteLLM, 200, litellmOK, spend.Result{Spend: 4.25, Budget: f(10)}, ""},
		{"litellm no budget", spend.ParseLiteLLM, 200, litellmNoCap, spend.Result{Spend: 4.25}, ""},
		{"litellm budget string", spend.ParseLiteLLM, 200, `{"info":{"spend":1,"max_budget":"ten"}}`, spend.Result{}, "unclear"},
		{"litellm missing info", spend.ParseLiteLLM, 200, `{"key":"x"}`, spend.Result{}, "unclear"},
		{"openrouter ok", spend.ParseOpenRouter, 200, openrouterOK, spend.Result{Spend: 25.5, Budget: f(100), BudgetSpend: f(25.5)}, ""},
		{"openrouter limit resets: budget spend from limit_remaining", spend.ParseOpenRouter, 200, openrouterReset, spend.Result{Spend: 250.5, Budget: f(100), BudgetSpend: f(10)}, ""},
		{"openrouter limit never resets", spend.ParseOpenRouter, 200, openrouterNoReset, spend.Result{Spend: 7.5, Budget: f(10), BudgetSpend: f(7.5)}, ""},
		{"openrouter resetting limit without remaining: no budget", spend.ParseOpenRouter, 200, `{"data":{"usage":250,"limit":100,"limit_reset":"monthly"}}`, spend.Result{Spend: 250}, ""},
		{"openrouter unlimited", spend.ParseOpenRouter, 200, `{"data":{"usage":0.25,"limit":null}}`, spend.Result{Spend: 0.25}, ""},
		{"openrouter missing usage", spend.ParseOpenRouter, 200, `{"data":{"limit":10}}`, spend.Result{}, "unclear"},
		{"openrouter 404", spend.ParseOpenRouter, 404, `not found`, spend.Result{}, "unclear"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.parse(tt.status, []byte(tt.body))
			var uc *spend.UnclearError
			switch tt.wantErr {
			case "unclear":
				if !errors.As(err, &uc) {
					t.Fatalf("err %v, want unclear", err)
				}
				return
			case "unauthorized":
				if !errors.Is(err, spend.ErrUnauthorized) {
					t.Fatalf("err %v, want unauthorized", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Spend != tt.want.Spend || got.BudgetExceeded != tt.want.BudgetExceeded || got.BudgetUser != tt.want.BudgetUser ||
				!sameBudget(got.Budget, tt.want.Budget) || !sameBudget(got.BudgetSpend, tt.want.BudgetSpend) {
				t.Errorf("got %+v (budget %v, budget spend %v), want %+v", got, got.Budget, got.BudgetSpend, tt.want)
			}
		})
	}
}

func sameBudget(a, b *float64) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// noWait records the waits the client asked for instead of sleeping.
type noWait struct{ waits []time.Duration }

func (n *noWait) wait(_ context.Context, d time.Duration) error {
	n.waits = append(n.waits, d)
	return nil
}

func TestClientAgainstMisbehavingUpstream(t *testing.T) {
	tests := []struct {
		name      string
		handler   func(n int) (status int, header http.Header, body string)
		wantCalls int64
		wantErr   string // "unclear", "exhausted", "" (success)
		wantWaits []time.Duration
	}{
		{"429 with Retry-After then ok", func(n int) (int, http.Header, string) {
			if n == 1 {
				return 429, http.Header{"Retry-After": {"3"}}, `{"error":"rate limited"}`
			}
			return 200, nil, openhandsOK
		}, 2, "", []time.Duration{3 * time.Second}},
		{"500 twice then ok", func(n int) (int, http.Header, string) {
			if n <= 2 {
				return 500, nil, `oops`
			}
			return 200, nil, openhandsOK
		}, 3, "", nil},
		{"always 503", func(int) (int, http.Header, string) { return 503, nil, `` }, 4, "exhausted", []time.Duration{}},
		{"Retry-After too long", func(int) (int, http.Header, string) {
			return 429, http.Header{"Retry-After": {"3600"}}, ``
		}, 1, "exhausted", nil},
		{"huge body", func(int) (int, http.Header, string) {
			return 200, nil, `{"metadata":{"total_spend":1},"pad":"` + strings.Repeat("x", 9<<20) /* over the activity endpoint's 8 MiB cap */ + `"}`
		}, 1, "unclear", nil},
		{"401 not retried", func(int) (int, http.Header, string) { return 401, nil, litellmAuthError }, 1, "unauthorized", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n := calls.Add(1)
				if got := r.Header.Get("Authorization"); got != "Bearer sk-test-secret-key-0001" {
					t.Errorf("Authorization %q", got)
				}
				if r.URL.Path != "/user/daily/activity" || r.URL.Query().Get("page_size") != "1000" || r.URL.Query().Get("start_date") == "" {
					t.Errorf("request %s", r.URL)
				}
				status, h, body := tt.handler(int(n))
				for k, v := range h {
					w.Header()[k] = v
				}
				w.WriteHeader(status)
				_, _ = w.Write([]byte(body))
			}))
			defer srv.Close()
			nw := &noWait{}
			p, err := spend.New("openhands", srv.URL, &spend.Client{Wait: nw.wait, MaxBackoff: 30 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			res, err := p.Spend(context.Background(), spend.Key{Secret: "sk-test-secret-key-0001"})
			var uc *spend.UnclearError
			switch tt.wantErr {
			case "":
				if err != nil || res.Spend != 9.97 {
					t.Fatalf("got %+v, %v", res, err)
				}
			case "unclear":
				if !errors.As(err, &uc) {
					t.Fatalf("err %v, want unclear", err)
				}
			case "unauthorized":
				if !errors.Is(err, spend.ErrUnauthorized) {
					t.Fatalf("err %v, want unauthorized", err)
				}
			case "exhausted":
				if err == nil || errors.As(err, &uc) {
					t.Fatalf("err %v, want a retryable failure", err)
				}
			}
			if calls.Load() != tt.wantCalls {
				t.Errorf("%d calls, want %d", calls.Load(), tt.wantCalls)
			}
			// Every retry waits first: an exact Retry-After, or a jittered
			// backoff within [0, base·2^(n-1)].
			if len(nw.waits) != int(tt.wantCalls)-1 {
				t.Errorf("waited %v for %d calls, want one wait before each retry", nw.waits, tt.wantCalls)
			}
			for i, w := range nw.waits {
				switch {
				case i < len(tt.wantWaits):
					if w != tt.wantWaits[i] {
						t.Errorf("wait %d: %v, want %v", i, w, tt.wantWaits[i])
					}
				case w < 0 || w > 250*time.Millisecond<<i:
					t.Errorf("wait %d: %v, outside the backoff [0, %v]", i, w, 250*time.Millisecond<<i)
				}
			}
		})
	}
}

func TestClientTimeout(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(block)
	nw := &noWait{}
	p, _ := spend.New("openrouter", srv.URL, &spend.Client{Wait: nw.wait, RequestTimeout: 50 * time.Millisecond, MaxAttempts: 2})
	_, err := p.Spend(context.Background(), spend.Key{Secret: "k"})
	if err == nil || !strings.Contains(err.Error(), "after 2 attempts") {
		t.Fatalf("err %v, want timeout after 2 attempts", err)
	}
}

func TestNewValidates(t *testing.T) {
	for _, tc := range []struct{ name, url string }{{"litellm", ""}, {"nope", "http://x"}, {"openhands", "ftp://x"}, {"openrouter", "::"}} {
		if _, err := spend.New(tc.name, tc.url, &spend.Client{}); err == nil {
			t.Errorf("New(%q, %q) accepted", tc.name, tc.url)
		}
	}
}

func FuzzParsers(f *testing.F) {
	for _, s := range append([]string{openhandsOK, openhandsOver, litellmTokenOver, litellmUserOver, litellmTeamOver, litellmTeamOver2,
		litellmAuthError, litellmOK, litellmNoCap, openrouterOK, openrouterReset, openrouterNoReset, openrouterAuth,
		cdnBlockHTML, cdnBlockJSON, activityPage(3.5, 2, 3), `{"metadata":{"total_spend":-0}}`, `{"info":{"spend":1e308}}`,
		`Spend=1.5`, `Spend=1.5e-05, Budget=inf`, `Current cost: nan, Max budget: 1`, `{"error":{"message":null}}`,
		`{"data":{"usage":1,"limit":5,"limit_remaining":9}}`,
		oneapiSub, oneapiSubUnlimited, oneapiUsage, oneapiErr200, newapiErr200, oneapiExhausted, newapiExhausted, oneapiInvalid,
		deepseekOK, deepseekTwo, deepseekEmpty, deepseekAuth, moonshotOK, moonshotDebt, moonshotFailed, moonshotAuth,
		siliconflowOK, siliconflowFailed, `{"code":20000,"status":true,"data":{"totalBalance":"1e999"}}`,
		`{"is_available":true,"balance_infos":[{"currency":"USD","total_balance":" -0x1p3 "}]}`,
		`{"s":"12.5","b":"100","r":"-3","c":"USD","ok":true}`}, batchSeeds()...) {
		for _, status := range []int{200, 400, 401, 403, 429} {
			f.Add(status, []byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		fuzzBatch(t, status, body)
		finite := func(v float64) bool { return v >= 0 && v == v && v <= math.MaxFloat64 }
		if _, pg, err := spend.ParseOpenHandsPage(status, body); err == nil && pg.HasMore && pg.Page < 0 {
			t.Logf("page %+v", pg) // any page number is fine; the reader checks it
		}
		unl := 1e8
		customSpend := spend.CustomSpec{URL: "http://x/", Spend: "s", Budget: "b", BudgetRemaining: "r", Currency: "c", OK: "ok", Scale: 0.01, Unlimited: &unl,
			ExhaustedStatuses: []int{401, 402}, ExhaustedMatch: "额度已用尽"}
		customRemaining := spend.CustomSpec{URL: "http://x/", Remaining: "r", Currency: "c"}
		parsers := []func(int, []byte) (spend.Result, error){spend.ParseOpenHands, spend.ParseLiteLLM, spend.ParseOpenRouter,
			spend.ParseOneAPISubscription, spend.ParseOneAPIUsage, spend.ParseDeepSeek, spend.ParseMoonshot, spend.ParseSiliconFlow,
			func(s int, b []byte) (spend.Result, error) { return spend.ParseCustom(customSpend, s, b) },
			func(s int, b []byte) (spend.Result, error) { return spend.ParseCustom(customRemaining, s, b) }}
		for _, parse := range parsers {
			r, err := parse(status, body)
			if err == nil && r.Exhausted {
				// Only an error status says a key's quota is used up.
				if status < 400 || r.Remaining != nil || r.Spend != 0 {
					t.Fatalf("status %d %q gave %+v", status, body, r)
				}
				continue
			}
			if err == nil && r.Remaining != nil {
				// A remaining balance may be negative (a debt), never infinite or NaN.
				if v := *r.Remaining; v != v || math.IsInf(v, 0) || status != 200 || r.Spend != 0 || r.Budget != nil || r.NoReading {
					t.Fatalf("status %d %q gave remaining %+v", status, body, r)
				}
				continue
			}
			if err == nil && r.NoReading && (status != 200 || r.Spend != 0 || r.Budget != nil) {
				t.Fatalf("status %d %q gave no reading %+v", status, body, r)
			}
			if errors.Is(err, spend.ErrUnauthorized) {
				// A rejection is an error status (never a cooldown) with a
				// JSON object the upstream wrote.
				var v map[string]any
				if status < 400 || status == 429 || status == 529 || json.Unmarshal(body, &v) != nil {
					t.Fatalf("status %d %q taken for a dead key", status, body)
				}
			}
			if err != nil {
				continue
			}
			// A clear answer is always a finite, non-negative figure.
			if !finite(r.Spend) {
				t.Fatalf("accepted spend %v from %q", r.Spend, body)
			}
			if r.Budget != nil && !finite(*r.Budget) {
				t.Fatalf("accepted budget %v", *r.Budget)
			}
			if r.BudgetSpend != nil && (!finite(*r.BudgetSpend) || r.Budget == nil) {
				t.Fatalf("accepted budget spend %v", *r.BudgetSpend)
			}
			if r.BudgetExceeded != (status != 200) {
				t.Fatalf("status %d gave %+v", status, r)
			}
		}
	})
}
