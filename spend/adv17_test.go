package spend_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spendchecker/spendchecker/spend"
)

// Adversarial review of issue 17 (branch adv17): each test fails on the
// reviewed code and passes once the defect it names is fixed.

// A budget refusal sent with status 429 (the code's own comment says some
// LiteLLM deployments do; LiteLLM's end-user refusals are seen with 429 in
// the wild) is retried as a rate limit and then reported as a transport
// failure: the body is never parsed, so the key that can no longer serve
// is never rotated and every cycle is partial for ever (issue 17, case 3).
// ParseLiteLLM alone gets it right ("budget refusal as a 429" in
// TestParsers); the provider, through the Client, does not.
func TestAdv17_BudgetRefusalAs429ReachesTheParser(t *testing.T) {
	for _, prov := range []string{"litellm", "openhands"} {
		t.Run(prov, func(t *testing.T) {
			srv, _ := spendServer(t, func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusTooManyRequests)
				fmt.Fprint(w, openhandsOver)
			})
			ft := newFakeTime()
			p, _ := spend.New(prov, srv.URL, &spend.Client{Now: ft.Now, Wait: ft.Wait})
			res, err := p.Spend(context.Background(), spend.Key{Secret: "sk-over"})
			if err != nil || !res.BudgetExceeded || res.Spend != 10.02 {
				t.Fatalf("got %+v, %v; want the budget refusal (spend 10.02) recognised", res, err)
			}
		})
	}
}

// LiteLLM pages: has_more false while total_pages says there are more
// (an upstream whose two fields disagree). The check stops at page 1 and
// reports page 1's $8 as the key's whole spend, a clean answer: a key at
// $12 is never rotated. It must read on (or call the answer unclear).
func TestAdv17_HasMoreFalseButTotalPagesSaysMore(t *testing.T) {
	pages := []float64{8, 3, 1}
	srv, _ := spendServer(t, func(w http.ResponseWriter, r *http.Request) {
		var page int
		fmt.Sscan(r.URL.Query().Get("page"), &page)
		if page < 1 || page > len(pages) {
			w.WriteHeader(400)
			return
		}
		fmt.Fprintf(w, `{"results":[],"metadata":{"total_spend":%v,"page":%d,"total_pages":%d,"has_more":false}}`, pages[page-1], page, len(pages))
	})
	p, _ := spend.New("openhands", srv.URL, &spend.Client{})
	res, err := p.Spend(context.Background(), spend.Key{Secret: "sk-k"})
	var uc *spend.UnclearError
	if err == nil && res.Spend != 12 {
		t.Fatalf("spend %v read as a clear answer; the key's three pages total 12", res.Spend)
	}
	if err != nil && !errors.As(err, &uc) {
		t.Fatalf("err %v", err)
	}
}

// One 503 (or 429) carrying a huge Retry-After pauses the whole host, or
// the key, for as long as it says: a year here. Every key of the pool then
// goes unchecked until the process restarts, while the proxy keeps
// spending on them. MaxHostBackoff (5 min) caps the doubling but not the
// Retry-After. An hour later the host must be asked again.
func TestAdv17_HugeRetryAfterBlocksTheHostForEver(t *testing.T) {
	for name, header := range map[string]func(now time.Time) string{
		"delay-seconds, one year":              func(time.Time) string { return "31536000" },
		"delay-seconds overflowing a Duration": func(time.Time) string { return "99999999999" },
		"HTTP-date a year ahead":               func(now time.Time) string { return now.AddDate(1, 0, 0).UTC().Format(http.TimeFormat) },
	} {
		t.Run(name, func(t *testing.T) {
			ft := newFakeTime()
			srv, calls := spendServer(t, func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("Authorization") == "Bearer first" {
					w.Header().Set("Retry-After", header(ft.Now()))
					w.WriteHeader(http.StatusServiceUnavailable)
					return
				}
				fmt.Fprint(w, openrouterOK)
			})
			c := &spend.Client{Now: ft.Now, Wait: ft.Wait, MaxAttempts: 1}
			p, _ := spend.New("openrouter", srv.URL, c)
			if _, err := p.Spend(context.Background(), spend.Key{Secret: "first"}); err == nil {
				t.Fatal("the 503 was not an error")
			}
			ft.Advance(time.Hour)
			before := calls.Load()
			_, errOther := p.Spend(context.Background(), spend.Key{Secret: "other"})
			_, errFirst := p.Spend(context.Background(), spend.Key{Secret: "first"})
			if calls.Load() == before {
				t.Fatalf("an hour later nothing is sent to the host (other key: %v; first key: %v)", errOther, errFirst)
			}
			if errOther != nil {
				t.Fatalf("an hour later another key is still refused: %v", errOther)
			}
		})
	}
}

// LiteLLM's customer ("End User") budget is global to the deployment and
// shared by every virtual key (LiteLLM docs, proxy/users.md: "Customer
// budgets are global per deployment ... shares one budget across every
// virtual key"); its refusal is "ExceededBudget: End User=<id> over
// budget. Spend=…, Budget=…" (litellm/proxy/auth/auth_checks.py). The
// parser takes it for this key's own refusal: every key refused for that
// shared budget rotates, and the systemic-rejection guard does not apply
// to budget refusals.
func TestAdv17_SharedBudgetRefusalsAreNotTheKeys(t *testing.T) {
	for name, body := range map[string]string{
		"end user (docs, 401)": `{"error":{"message":"ExceededBudget: End User=ishaan3 over budget. Spend=0.0008869999999999999, Budget=0.0001","type":"auth_error","param":"None","code":401}}`,
		"end user (400)":       `{"error":{"message":"ExceededBudget: End User=user@example.com_premium_models over budget. Spend=300.16, Budget=300.0","type":"budget_exceeded","param":null,"code":"400"}}`,
		"global proxy budget":  `{"error":{"message":"Authentication Error, ExceededBudget: LiteLLM Proxy has exceeded its budget. Current spend: 1000.5; Max Budget: 1000.0","type":"auth_error","param":"None","code":"401"}}`,
	} {
		t.Run(name, func(t *testing.T) {
			for _, parse := range []func(int, []byte) (spend.Result, error){spend.ParseOpenHands, spend.ParseLiteLLM} {
				res, err := parse(401, []byte(body))
				if err == nil && res.BudgetExceeded {
					t.Fatalf("a shared budget's refusal read as this key's: %+v", res)
				}
				if errors.Is(err, spend.ErrUnauthorized) {
					t.Fatalf("a shared budget's refusal read as a dead key")
				}
			}
		})
	}
}

// OpenRouter charges a request when it finishes, so a key overshoots its
// credit limit and GET /api/v1/key reports a negative limit_remaining
// (openrouter.ai/docs/api_reference/limits: "OpenRouter charges a request
// when it finishes, so many requests running at the same time could commit
// more than your balance covers"). The parser refuses the negative figure
// and with it the whole answer: the key over its limit, the one most in
// need of rotation, is "check failed" for ever, even when its usage is
// over --threshold too.
func TestAdv17_OpenRouterNegativeLimitRemaining(t *testing.T) {
	body := `{"data":{"label":"sk-or-v1-au7...890","limit":10,"limit_remaining":-0.25,"limit_reset":null,"include_byok_in_limit":false,"usage":10.25,"usage_daily":1.5,"usage_weekly":4,"usage_monthly":10.25,"is_free_tier":false}}`
	res, err := spend.ParseOpenRouter(200, []byte(body))
	if err != nil {
		t.Fatalf("a key over its OpenRouter limit reads as %v", err)
	}
	if res.Spend != 10.25 || res.Budget == nil || *res.Budget != 10 || res.BudgetSpend == nil || *res.BudgetSpend < 10 {
		t.Fatalf("got %+v; want spend 10.25, budget 10, budget spend at least 10", res)
	}
}

// LiteLLM groups /user/daily/activity by date, and each date carries a
// breakdown by model, model group, provider and API key, each with its own
// metrics (litellm/proxy/management_endpoints/common_daily_activity.py,
// SpendAnalyticsPaginatedResponse / BreakdownMetrics). A page of the 1,000
// rows the check asks for (page_size=1000) is well over the 1 MiB body cap
// for a key used daily with two models for 500 days: the answer is
// refused as "body larger than 1048576 bytes", and the key, at $12 here,
// is never rotated (check failed on every cycle, for ever).
func TestAdv17_FullActivityPageExceedsTheBodyCap(t *testing.T) {
	metrics := func(spend float64) string {
		return fmt.Sprintf(`{"spend":%v,"prompt_tokens":123456,"completion_tokens":23456,"cache_read_input_tokens":34567,"cache_creation_input_tokens":4567,"total_tokens":186046,"successful_requests":42,"failed_requests":1,"api_requests":43}`, spend)
	}
	const hash = "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b"
	keyBreakdown := func(spend float64) string {
		return fmt.Sprintf(`{"%s":{"metrics":%s,"metadata":{"key_alias":null,"team_id":null}}}`, hash, metrics(spend))
	}
	var results []string
	const days = 500 // two models a day: 1,000 rows
	per := 12.0 / days
	for d := range days {
		date := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, d).Format(time.DateOnly)
		models := ""
		for i, m := range []string{"anthropic/claude-sonnet-4-20250514", "openai/gpt-4o-2024-08-06"} {
			if i > 0 {
				models += ","
			}
			models += fmt.Sprintf(`"%s":{"metrics":%s,"metadata":{},"api_key_breakdown":%s}`, m, metrics(per/2), keyBreakdown(per/2))
		}
		results = append(results, fmt.Sprintf(`{"date":"%s","metrics":%s,"breakdown":{"models":{%s},"model_groups":{%s},"mcp_servers":{},"providers":{"anthropic":{"metrics":%s,"metadata":{},"api_key_breakdown":%s},"openai":{"metrics":%s,"metadata":{},"api_key_breakdown":%s}},"api_keys":{"%s":{"metrics":%s,"metadata":{"key_alias":null,"team_id":null}}},"entities":{}}}`,
			date, metrics(per), models, models, metrics(per/2), keyBreakdown(per/2), metrics(per/2), keyBreakdown(per/2), hash, metrics(per)))
	}
	body := `{"results":[` + strings.Join(results, ",") + `],"metadata":{"total_spend":12.0,"total_prompt_tokens":123456000,"total_completion_tokens":23456000,"total_tokens":186046000,"total_api_requests":43000,"total_successful_requests":42000,"total_failed_requests":1000,"page":1,"total_pages":1,"has_more":false}}`
	t.Logf("one page of 1,000 rows: %d bytes", len(body))
	srv, _ := spendServer(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, body) })
	p, _ := spend.New("openhands", srv.URL, &spend.Client{})
	res, err := p.Spend(context.Background(), spend.Key{Secret: "sk-k"})
	if err != nil || res.Spend != 12 {
		t.Fatalf("got %+v, %v; want the key's $12", res, err)
	}
}
