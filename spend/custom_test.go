package spend_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/spendchecker/spendchecker/spend"
)

func outcome(r spend.Result, err error) string {
	var uc *spend.UnclearError
	switch {
	case errors.Is(err, spend.ErrUnauthorized):
		return "unauthorized"
	case errors.As(err, &uc):
		return "unclear"
	case err != nil:
		return "failed"
	}
	return show(r) + fmt.Sprint(r.BudgetExceeded)
}

// The three built-in HTTP providers are expressible as configured ones:
// against the same upstream, the same answers give the same results.
// (OpenHands' activity endpoint is paged: its spec reads one page, which is
// the whole answer here; the built-in follows every page. OpenRouter's
// resetting limit without limit_remaining drops the budget in the built-in
// only.)
func TestCustomExpressesBuiltIns(t *testing.T) {
	type tc struct {
		builtin, path string
		spec          spend.CustomSpec
		answers       []answer
	}
	const today = "2100-01-01"
	cases := []tc{
		{"litellm", "/key/info", spend.CustomSpec{URL: "{{.Base}}/key/info", Spend: "info.spend", Budget: "info.max_budget", Numbers: "number"},
			[]answer{{200, nil, litellmOK}, {200, nil, litellmNoCap}, {401, nil, litellmAuthError}, {400, nil, openhandsOver},
				{400, nil, litellmTeamOver}, {403, nil, cdnBlockHTML}, {200, nil, `{"info":{"spend":"4"}}`}, {200, nil, `{"info":{}}`}}},
		{"openrouter", "/api/v1/key", spend.CustomSpec{URL: "{{.Base}}/api/v1/key", Spend: "data.usage", Budget: "data.limit", BudgetRemaining: "data.limit_remaining", Numbers: "number"},
			[]answer{{200, nil, openrouterOK}, {200, nil, openrouterReset}, {200, nil, openrouterNoReset}, {401, nil, openrouterAuth},
				{200, nil, `{"data":{"usage":1,"limit":null}}`}, {200, nil, `{"data":{"usage":1,"limit":5,"limit_remaining":9}}`}}},
		{"openhands", "/user/daily/activity", spend.CustomSpec{URL: "{{.Base}}/user/daily/activity?start_date=2023-01-01&end_date=" + today + "&page=1&page_size=1000", Spend: "metadata.total_spend", Numbers: "number"},
			[]answer{{200, nil, openhandsOK}, {400, nil, openhandsOver}, {401, nil, litellmAuthError}, {200, nil, `{"metadata":{}}`}}},
	}
	for _, c := range cases {
		for i, a := range c.answers {
			t.Run(fmt.Sprintf("%s/%d", c.builtin, i), func(t *testing.T) {
				u := newUpstream(t, "Bearer sk-same-upstream-0001", map[string][]answer{c.path: {a}})
				b, err := spend.New(c.builtin, u.URL, &spend.Client{MaxAttempts: 1})
				if err != nil {
					t.Fatal(err)
				}
				spec := c.spec
				spec.URL = u.URL + spec.URL[len("{{.Base}}"):]
				cp, err := spend.NewCustom(spec, &spend.Client{MaxAttempts: 1})
				if err != nil {
					t.Fatal(err)
				}
				k := spend.Key{Secret: "sk-same-upstream-0001"}
				want := outcome(b.Spend(context.Background(), k))
				got := outcome(cp.Spend(context.Background(), k))
				if got != want {
					t.Fatalf("configured %s, built-in %s", got, want)
				}
			})
		}
	}
}

func TestCustomSpec(t *testing.T) {
	cents := 0.01
	unl := 1e8
	tests := []struct {
		name    string
		spec    spend.CustomSpec
		a       answer
		want    spend.Result
		wantErr string
	}{
		{"remaining as a string, with currency", spend.CustomSpec{Remaining: "data.balance_infos.0.total_balance", Currency: "data.balance_infos.0.currency"},
			answer{200, nil, `{"data":{"balance_infos":[{"currency":"CNY","total_balance":"110.00"}]}}`}, spend.Result{Remaining: f(110), Currency: "CNY"}, ""},
		{"cents scaled", spend.CustomSpec{Spend: "total_usage", Scale: cents}, answer{200, nil, oneapiUsage}, spend.Result{Spend: 4.25}, ""},
		{"unlimited sentinel on the spend", spend.CustomSpec{Spend: "v", Unlimited: &unl}, answer{200, nil, `{"v":100000000}`}, spend.Result{NoReading: true}, ""},
		{"unlimited sentinel on the budget", spend.CustomSpec{Spend: "s", Budget: "b", Unlimited: &unl}, answer{200, nil, `{"s":1,"b":1e9}`}, spend.Result{Spend: 1}, ""},
		{"ok flag true", spend.CustomSpec{Remaining: "data.totalBalance", OK: "status"}, answer{200, nil, siliconflowOK}, spend.Result{Remaining: f(88.88)}, ""},
		{"ok flag false", spend.CustomSpec{Remaining: "data.totalBalance", OK: "status"}, answer{200, nil, siliconflowFailed}, spend.Result{}, "unclear"},
		{"ok value", spend.CustomSpec{Remaining: "data.available_balance", OK: "code", OKValue: json.RawMessage(`0`)}, answer{200, nil, moonshotOK}, spend.Result{Remaining: f(49.58894)}, ""},
		{"ok value differs", spend.CustomSpec{Remaining: "data.available_balance", OK: "code", OKValue: json.RawMessage(`0`)}, answer{200, nil, moonshotFailed}, spend.Result{}, "unclear"},
		{"error on 200", spend.CustomSpec{Spend: "total_usage", Scale: cents}, answer{200, nil, oneapiErr200}, spend.Result{}, "unclear"},
		{"error check off", spend.CustomSpec{Spend: "s", Error: "-"}, answer{200, nil, `{"s":2,"error":"ignored"}`}, spend.Result{Spend: 2}, ""},
		{"error check elsewhere", spend.CustomSpec{Spend: "s", Error: "meta.failed"}, answer{200, nil, `{"s":2,"meta":{"failed":true}}`}, spend.Result{}, "unclear"},
		{"exhausted status and text", spend.CustomSpec{Spend: "s", ExhaustedStatuses: []int{401, 402}, ExhaustedMatch: "额度已用尽"}, answer{401, nil, oneapiExhausted}, spend.Result{Exhausted: true}, ""},
		{"exhausted status, other text", spend.CustomSpec{Spend: "s", ExhaustedStatuses: []int{401}, ExhaustedMatch: "额度已用尽"}, answer{401, nil, oneapiInvalid}, spend.Result{}, "unauthorized"},
		{"exhausted status, any JSON object", spend.CustomSpec{Spend: "s", ExhaustedStatuses: []int{402}}, answer{402, nil, `{"error":"payment required"}`}, spend.Result{Exhausted: true}, ""},
		{"exhausted status, not JSON", spend.CustomSpec{Spend: "s", ExhaustedStatuses: []int{402, 403}}, answer{403, nil, `<html><title>Attention Required! | Cloudflare</title></html>`}, spend.Result{}, "unclear"},
		{"negative spend", spend.CustomSpec{Spend: "s"}, answer{200, nil, `{"s":-1}`}, spend.Result{}, "unclear"},
		{"negative remaining is a debt", spend.CustomSpec{Remaining: "r"}, answer{200, nil, `{"r":"-2.5"}`}, spend.Result{Remaining: f(-2.5)}, ""},
		{"missing", spend.CustomSpec{Spend: "a.b.c"}, answer{200, nil, `{"a":{"b":[1]}}`}, spend.Result{}, "unclear"},
		{"index out of range", spend.CustomSpec{Spend: "a.3"}, answer{200, nil, `{"a":[1]}`}, spend.Result{}, "unclear"},
		{"boolean", spend.CustomSpec{Spend: "a"}, answer{200, nil, `{"a":true}`}, spend.Result{}, "unclear"},
		{"two documents", spend.CustomSpec{Spend: "a"}, answer{200, nil, `{"a":1}{"a":2}`}, spend.Result{}, "unclear"},
		{"string refused as configured", spend.CustomSpec{Spend: "a", Numbers: "number"}, answer{200, nil, `{"a":"1"}`}, spend.Result{}, "unclear"},
		{"number refused as configured", spend.CustomSpec{Spend: "a", Numbers: "string"}, answer{200, nil, `{"a":1}`}, spend.Result{}, "unclear"},
		{"huge figure", spend.CustomSpec{Spend: "a"}, answer{200, nil, `{"a":1e400}`}, spend.Result{}, "unclear"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := newUpstream(t, "", map[string][]answer{"/q": {tt.a}})
			spec := tt.spec
			spec.URL = u.URL + "/q"
			p, err := spend.NewCustom(spec, &spend.Client{MaxAttempts: 1})
			if err != nil {
				t.Fatal(err)
			}
			got, err := p.Spend(context.Background(), spend.Key{Secret: "sk-custom-test-0001"})
			checkOutcome(t, got, err, tt.want, tt.wantErr)
		})
	}
}

// Templates put the key where the upstream wants it; a configured header
// replaces the bearer token; min-interval paces the host.
func TestCustomTemplatesAndPace(t *testing.T) {
	var seen []string
	srv, calls := spendServer(t, func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.URL.RawQuery+"|"+r.Header.Get("X-Api-Key")+"|"+r.Header.Get("Authorization"))
		fmt.Fprint(w, `{"left":3}`)
	})
	ft := newFakeTime()
	p, err := spend.NewCustom(spend.CustomSpec{
		URL:         srv.URL + "/v1/q?key={{.Key | urlquery}}",
		Headers:     map[string]string{"x-api-key": "{{.Key}}"},
		Remaining:   "left",
		MinInterval: "2s",
	}, &spend.Client{Now: ft.Now, Wait: ft.Wait})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"sk-a&b=1", "sk-b"} {
		if _, err := p.Spend(context.Background(), spend.Key{Secret: k}); err != nil {
			t.Fatal(err)
		}
	}
	if calls.Load() != 2 || seen[0] != "key=sk-a%26b%3D1|sk-a&b=1|" || seen[1] != "key=sk-b|sk-b|" {
		t.Fatalf("requests %q", seen)
	}
	if w := ft.Waits(); fmt.Sprint(w) != "[2s]" {
		t.Fatalf("waits %v, want [2s]", w)
	}
}

// A bad spec is refused at start-up, one line each.
func TestCustomValidates(t *testing.T) {
	bad := []spend.CustomSpec{
		{Spend: "a"},                              // no URL
		{URL: "http://x/{{.Key", Spend: "a"},      // template syntax
		{URL: "http://x/{{.Secret}}", Spend: "a"}, // unknown field
		{URL: "ftp://x/", Spend: "a"},
		{URL: "http://{{.Key}}.example/", Spend: "a"},
		{URL: "http://x/"},                                   // no figure
		{URL: "http://x/", Spend: "a", Remaining: "b"},       // both
		{URL: "http://x/", Spend: "a..b"},                    // empty segment
		{URL: "http://x/", Spend: "a[0]"},                    // not our syntax
		{URL: "http://x/", Spend: "a", Budget: "$.b"},        // JSONPath syntax
		{URL: "http://x/", Remaining: "a", Budget: "b"},      // budget with remaining
		{URL: "http://x/", Spend: "a", BudgetRemaining: "b"}, // without budget
		{URL: "http://x/", Spend: "a", Headers: map[string]string{"X-K": "{{.Key"}},
		{URL: "http://x/", Spend: "a", Headers: map[string]string{"Bad Name": "v"}},
		{URL: "http://x/", Spend: "a", Scale: -1},
		{URL: "http://x/", Spend: "a", ExhaustedStatuses: []int{200}},
		{URL: "http://x/", Spend: "a", ExhaustedMatch: "x"},
		{URL: "http://x/", Spend: "a", ExhaustedStatuses: []int{401}, ExhaustedMatch: "("},
		{URL: "http://x/", Spend: "a", MinInterval: "soon"},
		{URL: "http://x/", Spend: "a", OKValue: json.RawMessage(`true`)},
		{URL: "http://x/", Spend: "a", Numbers: "words"},
	}
	for i, s := range bad {
		_, err := spend.NewCustom(s, nil)
		if err == nil {
			t.Errorf("%d: %+v accepted", i, s)
			continue
		}
		if msg := err.Error(); len(msg) > 200 || containsNewline(msg) {
			t.Errorf("%d: not one short line: %q", i, msg)
		}
	}
	if _, err := spend.NewCustom(spend.CustomSpec{URL: "https://api.example.com/v1/me", Remaining: "data.balance"}, nil); err != nil {
		t.Fatal(err)
	}
}

func containsNewline(s string) bool {
	for _, r := range s {
		if r == '\n' {
			return true
		}
	}
	return false
}

var _ = time.Second
