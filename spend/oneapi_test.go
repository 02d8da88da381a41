package spend_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spendchecker/spendchecker/spend"
)

// one-api / new-api answers. Sources (code corpus):
//   - songquanpeng/one-api and QuantumNous/new-api controller/billing.go:
//     GetSubscription answers OpenAISubscriptionResponse {"object":
//     "billing_subscription","has_payment_method":true,"soft_limit_usd",
//     "hard_limit_usd","system_hard_limit_usd","access_until"} with amount
//     = 100000000 for token.UnlimitedQuota; GetUsage answers {"object":"list",
//     "total_usage": amount*100}; both answer a failed lookup with HTTP 200
//     and {"error":{"message":…,"type":"one_api_error"}} (new-api:
//     "upstream_error" / "new_api_error").
//   - one-api model/token.go ValidateUserToken ("该令牌额度已用尽", older
//     "该 token 额度已用尽", "无效的令牌"), new-api's ("该令牌额度已用尽
//     TokenStatusExhausted[sk-abc***xyz]"), sent by middleware/utils.go
//     abortWithMessage as 401 {"error":{"message": message + " (request id:
//     …)","type":"one_api_error"}}.
const (
	oneapiSub          = `{"object":"billing_subscription","has_payment_method":true,"soft_limit_usd":10,"hard_limit_usd":10,"system_hard_limit_usd":10,"access_until":0}`
	oneapiSubUnlimited = `{"object":"billing_subscription","has_payment_method":true,"soft_limit_usd":100000000,"hard_limit_usd":100000000,"system_hard_limit_usd":100000000,"access_until":0}`
	oneapiUsage        = `{"object":"list","total_usage":425}`
	oneapiUsageZero    = `{"object":"list","total_usage":0}`
	oneapiErr200       = `{"error":{"message":"record not found","type":"one_api_error"}}`
	newapiErr200       = `{"error":{"message":"record not found","type":"upstream_error","param":"","code":null}}`
	oneapiExhausted    = `{"error":{"message":"该令牌额度已用尽 (request id: 20261125120000123456789)","type":"one_api_error"}}`
	newapiExhausted    = `{"error":{"message":"该令牌额度已用尽 TokenStatusExhausted[sk-abc***xyz]","type":"new_api_error"}}`
	oneapiOldExhausted = `{"error":{"message":"该 token 额度已用尽","type":"one_api_error"}}`
	oneapiInvalid      = `{"error":{"message":"无效的令牌 (request id: 20261125120000123456789)","type":"one_api_error"}}`
)

// answer is one canned upstream answer.
type answer struct {
	status int
	header http.Header
	body   string
}

// upstream serves answers by path, the nth call to a path getting the nth
// answer (the last one repeats), and counts calls per path.
type upstream struct {
	*httptest.Server
	calls map[string]*atomic.Int64
}

func newUpstream(t *testing.T, wantAuth string, routes map[string][]answer) *upstream {
	u := &upstream{calls: map[string]*atomic.Int64{}}
	for p := range routes {
		u.calls[p] = &atomic.Int64{}
	}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		as, ok := routes[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if wantAuth != "" && r.Header.Get("Authorization") != wantAuth {
			t.Errorf("%s: Authorization %q", r.URL.Path, r.Header.Get("Authorization"))
		}
		n := int(u.calls[r.URL.Path].Add(1))
		a := as[min(n, len(as))-1]
		if a.status == -1 { // hang until the client gives up
			<-r.Context().Done()
			return
		}
		for k, v := range a.header {
			w.Header()[k] = v
		}
		w.WriteHeader(a.status)
		fmt.Fprint(w, a.body)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) n(path string) int64 { return u.calls[path].Load() }

const (
	subPath   = "/v1/dashboard/billing/subscription"
	usagePath = "/v1/dashboard/billing/usage"
)

func TestOneAPI(t *testing.T) {
	ok := func(b string) []answer { return []answer{{200, nil, b}} }
	tests := []struct {
		name       string
		sub, usage []answer
		want       spend.Result
		wantErr    string // "", "unclear", "unauthorized"
		usageCalls int64
	}{
		{"spend and budget", ok(oneapiSub), ok(oneapiUsage), spend.Result{Spend: 4.25, Budget: f(10)}, "", 1},
		{"unlimited, one-api counts nothing: no reading", ok(oneapiSubUnlimited), ok(oneapiUsageZero), spend.Result{NoReading: true}, "", 1},
		{"unlimited, new-api counts usage: a spend without budget", ok(oneapiSubUnlimited), ok(oneapiUsage), spend.Result{Spend: 4.25}, "", 1},
		{"200 with error on subscription", ok(oneapiErr200), ok(oneapiUsage), spend.Result{}, "unclear", 0},
		{"200 with error on usage (new-api)", ok(oneapiSub), ok(newapiErr200), spend.Result{}, "unclear", 1},
		{"exhausted (one-api)", []answer{{401, nil, oneapiExhausted}}, ok(oneapiUsage), spend.Result{Exhausted: true}, "", 0},
		{"exhausted (new-api)", []answer{{401, nil, newapiExhausted}}, ok(oneapiUsage), spend.Result{Exhausted: true}, "", 0},
		{"exhausted (old one-api)", ok(oneapiSub), []answer{{401, nil, oneapiOldExhausted}}, spend.Result{Exhausted: true}, "", 1},
		{"invalid token", []answer{{401, nil, oneapiInvalid}}, ok(oneapiUsage), spend.Result{}, "unauthorized", 0},
		{"exhausted text behind a block page is not believed", []answer{{401, nil, "<html>该令牌额度已用尽</html>"}}, ok(oneapiUsage), spend.Result{}, "unclear", 0},
		{"usage missing", ok(oneapiSub), ok(`{"object":"list"}`), spend.Result{}, "unclear", 1},
		{"usage as a string", ok(oneapiSub), ok(`{"object":"list","total_usage":"425"}`), spend.Result{}, "unclear", 1},
		{"negative usage", ok(oneapiSub), ok(`{"object":"list","total_usage":-1}`), spend.Result{}, "unclear", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := newUpstream(t, "Bearer sk-oneapi-test-0001", map[string][]answer{subPath: tt.sub, usagePath: tt.usage})
			ft := newFakeTime()
			p, err := spend.New("oneapi", u.URL, &spend.Client{Now: ft.Now, Wait: ft.Wait})
			if err != nil {
				t.Fatal(err)
			}
			got, err := p.Spend(context.Background(), spend.Key{Secret: "sk-oneapi-test-0001"})
			checkOutcome(t, got, err, tt.want, tt.wantErr)
			if u.n(usagePath) != tt.usageCalls {
				t.Errorf("usage asked %d times, want %d", u.n(usagePath), tt.usageCalls)
			}
		})
	}
}

func checkOutcome(t *testing.T, got spend.Result, err error, want spend.Result, wantErr string) {
	t.Helper()
	var uc *spend.UnclearError
	switch wantErr {
	case "":
		if err != nil {
			t.Fatalf("err %v", err)
		}
	case "unclear":
		if !errors.As(err, &uc) {
			t.Fatalf("got %+v, %v; want unclear", got, err)
		}
		return
	case "unauthorized":
		if !errors.Is(err, spend.ErrUnauthorized) {
			t.Fatalf("got %+v, %v; want unauthorized", got, err)
		}
		return
	case "failed":
		if err == nil || errors.As(err, &uc) || errors.Is(err, spend.ErrUnauthorized) {
			t.Fatalf("got %+v, %v; want a transport failure", got, err)
		}
		return
	}
	if got.Spend != want.Spend || !sameBudget(got.Budget, want.Budget) || !sameBudget(got.Remaining, want.Remaining) ||
		got.NoReading != want.NoReading || got.Exhausted != want.Exhausted || got.Currency != want.Currency ||
		!sameBudget(got.BudgetSpend, want.BudgetSpend) {
		t.Fatalf("got %s, want %s", show(got), show(want))
	}
}

func show(r spend.Result) string {
	p := func(v *float64) string {
		if v == nil {
			return "nil"
		}
		return fmt.Sprint(*v)
	}
	return fmt.Sprintf("{spend %v budget %s budgetSpend %s remaining %s %s noReading %v exhausted %v}",
		r.Spend, p(r.Budget), p(r.BudgetSpend), p(r.Remaining), r.Currency, r.NoReading, r.Exhausted)
}

// The provider paces itself under one-api's and new-api's per-IP limits
// (480 and 180 requests per 180 s), whatever --host-rate says.
func TestOneAPIPace(t *testing.T) {
	u := newUpstream(t, "", map[string][]answer{subPath: {{200, nil, oneapiSub}}, usagePath: {{200, nil, oneapiUsage}}})
	ft := newFakeTime()
	c := &spend.Client{Now: ft.Now, Wait: ft.Wait, HostRate: 50, HostBurst: 16}
	p, err := spend.New("oneapi", u.URL, c)
	if err != nil {
		t.Fatal(err)
	}
	start := ft.Now()
	const checks = 100
	for i := range checks {
		if _, err := p.Spend(context.Background(), spend.Key{Secret: fmt.Sprintf("sk-%04d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	elapsed := ft.Now().Sub(start)
	// 200 requests; new-api allows 180 per 180 s.
	perWindow := float64(2*checks) / elapsed.Seconds() * 180
	if perWindow > 180 {
		t.Fatalf("%d requests in %s: %.0f per 180 s, over new-api's 180", 2*checks, elapsed, perWindow)
	}
	if elapsed > time.Duration(2*checks)*spend.OneAPIInterval {
		t.Fatalf("%s for %d requests: slower than the pace", elapsed, 2*checks)
	}
}

// Every new provider against an upstream that misbehaves: Retry-After is
// honoured, 5xx retried then failed, a hang times out, and malformed JSON,
// a body over the cap and a 200 carrying an error are failed checks, never
// a figure.
func TestNewProvidersMisbehavingUpstream(t *testing.T) {
	type prov struct {
		name, path, ok string
		custom         *spend.CustomSpec
	}
	provs := []prov{
		{"oneapi", subPath, oneapiSub, nil},
		{"deepseek", "/user/balance", deepseekOK, nil},
		{"moonshot", "/v1/users/me/balance", moonshotOK, nil},
		{"siliconflow", "/v1/user/info", siliconflowOK, nil},
		{"custom", "/balance", `{"data":{"left":"12.5"}}`, &spend.CustomSpec{Remaining: "data.left"}},
	}
	huge := `{"pad":"` + strings.Repeat("x", 2<<20) + `"}`
	cases := []struct {
		name    string
		answers []answer
		wantErr string
		calls   int64
	}{
		{"429 with Retry-After, then ok", nil, "", 2},
		{"503 every time", []answer{{503, nil, "upstream connect error"}}, "failed", 4},
		{"hangs", []answer{{-1, nil, ""}}, "failed", 2},
		{"malformed JSON", []answer{{200, nil, `{"data":`}}, "unclear", 1},
		{"huge body", []answer{{200, nil, huge}}, "unclear", 1},
		{"200 with an error", []answer{{200, nil, `{"error":{"message":"internal error","type":"server_error"}}`}}, "unclear", 1},
	}
	for _, pv := range provs {
		for _, tc := range cases {
			t.Run(pv.name+"/"+tc.name, func(t *testing.T) {
				answers := tc.answers
				if answers == nil {
					answers = []answer{{429, http.Header{"Retry-After": {"2"}}, `{"error":{"message":"rate limited"}}`}, {200, nil, pv.ok}}
				}
				routes := map[string][]answer{pv.path: answers}
				if pv.name == "oneapi" {
					routes[usagePath] = []answer{{200, nil, oneapiUsage}}
				}
				u := newUpstream(t, "", routes)
				ft := newFakeTime()
				// A generous timeout: a 2 MiB body read under -race on a busy
				// machine must not time out and be retried.
				c := &spend.Client{Now: ft.Now, Wait: ft.Wait, RequestTimeout: 10 * time.Second, MaxAttempts: 4}
				if tc.name == "hangs" {
					c.RequestTimeout, c.MaxAttempts = 100*time.Millisecond, 2
				}
				var p spend.Provider
				var err error
				if pv.custom != nil {
					spec := *pv.custom
					spec.URL = u.URL + pv.path
					p, err = spend.NewCustom(spec, c)
				} else {
					p, err = spend.New(pv.name, u.URL, c)
				}
				if err != nil {
					t.Fatal(err)
				}
				got, err := p.Spend(context.Background(), spend.Key{Secret: "sk-misbehave-0001"})
				if tc.wantErr == "" {
					if err != nil || (got.Remaining == nil && got.Spend == 0) {
						t.Fatalf("got %s, %v", show(got), err)
					}
					if w := ft.Waits(); len(w) == 0 || w[0] != 2*time.Second {
						t.Errorf("waits %v, want the Retry-After of 2s first", w)
					}
				} else {
					checkOutcome(t, got, err, spend.Result{}, tc.wantErr)
				}
				// A hung attempt may time out before the upstream saw it.
				if n := u.n(pv.path); n != tc.calls && !(tc.name == "hangs" && n >= 1 && n <= tc.calls) {
					t.Errorf("%d calls, want %d", n, tc.calls)
				}
			})
		}
	}
}
