package upstream_test

import (
	"strings"
	"testing"

	"github.com/spendchecker/spendchecker/rotation/upstream"
)

// Read is the one reading of an error answer, for the daemon's polls and
// the proxy's traffic alike: a dead key only on the provider's JSON error,
// a used-up quota or the key's (or its owner's) own budget; block pages,
// cooldowns, access refusals and shared budgets never. The texts are
// LiteLLM's own: litellm/proxy/auth/auth_checks.py (common_checks: "4.1
// check personal budget, if personal key" raises BudgetExceededError with
// f"ExceededBudget: User={user_object.user_id} over budget.
// Spend={user_spend}, Budget={user_budget}"; the team, project, tag and
// end-user budget checks; _can_object_call_model's
// key_model_access_denied), litellm/exceptions.py (BudgetExceededError),
// litellm/proxy/auth/model_access_denied.py, and
// docs/my-website/docs/proxy/users.md's example answers.
func TestRead(t *testing.T) {
	cases := []struct {
		name   string
		status int
		body   string
		want   upstream.Verdict
		reason string
		user   string
	}{
		{"success", 200, `{"info":{"spend":1}}`, upstream.NotAboutKey, "", ""},
		{"unknown key", 401, `{"error":{"message":"Authentication Error, Invalid proxy server token passed.","type":"auth_error","code":"401"}}`, upstream.KeyRejected, "unauthorized", ""},
		{"insufficient credits", 402, `{"error":{"code":402,"message":"Insufficient credits"}}`, upstream.KeyRejected, "payment_required", ""},
		{"CDN page", 403, `<!DOCTYPE html><html><head><title>Attention Required! | Cloudflare</title></head></html>`, upstream.NotAboutKey, "", ""},
		{"CDN problem document", 403, `{"title":"Error 1020: Access denied","status":403,"error_code":1020}`, upstream.NotAboutKey, "", ""},
		{"key budget", 400, `{"error":{"message":"Budget has been exceeded! Current cost: 10.01, Max budget: 10.0","type":"budget_exceeded","code":"400"}}`, upstream.KeyBudgetExceeded, "budget_exceeded", ""},
		{"key budget with its scope", 400, `{"error":{"message":"Budget has been exceeded! Key=sk-...abcd Current cost: 10.01, Max budget: 10.0","type":"budget_exceeded","code":"400"}}`, upstream.KeyBudgetExceeded, "budget_exceeded", ""},
		{"team budget", 400, `{"error":{"message":"Budget has been exceeded! Team=team-a Current cost: 51.2, Max budget: 50.0","type":"budget_exceeded","code":"400"}}`, upstream.SharedBudget, "", ""},
		{"team budget, token form", 401, `{"error":{"message":"Authentication Error, ExceededTokenBudget: Current Team Spend: 51.2; Max Budget for Team: 50.0","type":"auth_error","code":"401"}}`, upstream.SharedBudget, "", ""},
		{"team budget, over-budget form", 400, `{"error":{"message":"Team=team-a over budget. Spend=51.2, Budget=50.0","type":"budget_exceeded","code":"400"}}`, upstream.SharedBudget, "", ""},
		{"personal budget (users.md)", 400, `{"error":{"message":"ExceededBudget: User=<user_id> over budget. Spend=3.7e-05, Budget=0.0","type":"budget_exceeded","param":null,"code":"400"}}`, upstream.UserBudgetExceeded, "budget_exceeded", "<user_id>"},
		{"personal budget, e-mail user, 429", 429, `{"error":{"message":"ExceededBudget: User=alice@example.com over budget. Spend=10.02107649999999, Budget=10.0","type":"budget_exceeded","param":null,"code":"429"}}`, upstream.UserBudgetExceeded, "budget_exceeded", "alice@example.com"},
		{"personal budget, escaped user", 400, `{"error":{"message":"ExceededBudget: User=jos\u00e9 over budget. Spend=1.5, Budget=1.0","type":"budget_exceeded"}}`, upstream.UserBudgetExceeded, "budget_exceeded", "josé"},
		{"personal budget, nan spend", 400, `{"error":{"message":"ExceededBudget: User=u over budget. Spend=nan, Budget=10.0","type":"budget_exceeded"}}`, upstream.SharedBudget, "", ""},
		{"customer budget", 400, `{"error":{"message":"ExceededBudget: End User=ishaan3 over budget. Spend=0.0008869999999999999, Budget=0.0001","type":"budget_exceeded","code":"400"}}`, upstream.SharedBudget, "", ""},
		{"global budget", 401, `{"error":{"message":"Authentication Error, ExceededBudget: LiteLLM Proxy has exceeded its budget. Current spend: 1000.5; Max Budget: 1000.0","type":"auth_error","code":"401"}}`, upstream.SharedBudget, "", ""},
		{"budget without figures", 400, `{"error":{"message":"ExceededBudget"}}`, upstream.SharedBudget, "", ""},
		{"model refused", 401, `{"error":{"message":"API Key not allowed to access model. This token can only access models=['gpt-4o-mini']. Tried to access gpt-4o","type":"key_model_access_denied","param":"model","code":"401"}}`, upstream.AccessRefused, "", ""},
		{"model refused, client message", 403, `{"error":{"message":"The requested model 'gpt-5.6' is not available for this API key, or the model name is invalid. Check the models available to you and try again.","type":"key_model_access_denied","param":"model","code":"403"}}`, upstream.AccessRefused, "", ""},
		{"one-api exhausted", 401, `{"error":{"message":"该令牌额度已用尽 (request id: 1)","type":"one_api_error"}}`, upstream.KeyExhausted, "exhausted", ""},
		{"factory quota", 402, `{"error":{"message":"Ready for more? Reload your tokens at https://app.factory.ai/settings/billing"}}`, upstream.KeyExhausted, "factory_quota_exhausted", ""},
		{"revoked", 500, `{"error":{"message":"This API key has been revoked."}}`, upstream.KeyRejected, "invalid_key", ""},
		{"revoked, as a cooldown", 429, `{"error":"rate limited, key revoked? no"}`, upstream.NotAboutKey, "", ""},
		{"server error", 500, `{"error":{"message":"internal"}}`, upstream.NotAboutKey, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := upstream.Read(c.status, []byte(c.body))
			if a.Verdict != c.want || a.Reason != c.reason || a.User != c.user {
				t.Errorf("Read(%d, %.80s) = %v %q user %q, want %v %q user %q", c.status, c.body, a.Verdict, a.Reason, a.User, c.want, c.reason, c.user)
			}
			if a.Rotates() != (c.reason != "") {
				t.Errorf("Rotates() = %v with reason %q", a.Rotates(), a.Reason)
			}
			if !a.Rotates() && c.status != 200 && a.Why == "" {
				t.Errorf("no rotation on %d without saying why", c.status)
			}
		})
	}
}

// Read searches only the first TextWindow bytes for a provider's words, so
// an answer of megabytes costs milliseconds, not seconds of CPU; whether
// the answer is the provider's JSON error is still decided on the whole body.
func TestReadSearchesItsWindow(t *testing.T) {
	refusal := `"message":"Budget has been exceeded! Current cost: 10.01, Max budget: 10.0"`
	revoked := `"message":"This API key has been revoked."`
	pad := func(n int) string { return `"pad":"` + strings.Repeat("x", n) + `",` }
	cases := []struct {
		name   string
		status int
		body   string
		want   upstream.Verdict
	}{
		{"refusal inside the window", 400, `{"error":{` + refusal + `,` + pad(upstream.TextWindow-200) + `"x":1}}`, upstream.KeyBudgetExceeded},
		{"refusal past the window", 400, `{"error":{` + pad(upstream.TextWindow) + refusal + `}}`, upstream.NotAboutKey},
		{"JSON error longer than the window", 401, `{"error":{` + pad(2*upstream.TextWindow) + `"message":"invalid"}}`, upstream.KeyRejected},
		{"revoked, JSON longer than the window", 500, `{"error":{` + revoked + `,` + pad(2*upstream.TextWindow) + `"x":1}}`, upstream.KeyRejected},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if a := upstream.Read(c.status, []byte(c.body)); a.Verdict != c.want {
				t.Errorf("Read(%d, %d bytes) = %v, want %v", c.status, len(c.body), a.Verdict, c.want)
			}
		})
	}
}

// BenchmarkReadHostileAnswer: 1 MiB answers built to keep the regular
// expressions busy (`go test -run '^$' -bench ReadHostile ./upstream` in
// rotation/).
func BenchmarkReadHostileAnswer(b *testing.B) {
	for _, fill := range []string{"a", "ExceededBudget: User=ab", "Budget has been exceeded! x", "Spend=1", "token 额度"} {
		body := []byte(strings.Repeat(fill, (1<<20)/len(fill)))
		b.Run(strings.Fields(fill)[0], func(b *testing.B) {
			for b.Loop() {
				upstream.Read(401, body)
			}
		})
	}
}
