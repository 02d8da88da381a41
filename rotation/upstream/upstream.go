// Package upstream reads what an upstream LLM API's error answer says about
// the key that got it. The daemon's polls (package spend) and a proxy's
// live traffic (package proxyrotate) read answers through this one package,
// so the two never disagree about whether a key is dead.
package upstream

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"
)

// Verdict is what one upstream error answer says about the key that got it.
type Verdict int

const (
	// NotAboutKey: no statement about this key — a success, another status,
	// or a CDN/WAF block page (HTML, a problem document) on 401/402/403.
	NotAboutKey Verdict = iota
	// KeyRejected: a 401, 402 or 403 carrying the provider's own JSON error.
	KeyRejected
	// KeyBudgetExceeded: LiteLLM's budget refusal about this key's own budget.
	KeyBudgetExceeded
	// SharedBudget: a budget refusal about a budget many keys share (team,
	// model, organisation) or without figures to tell: rotating would burn
	// backups without helping.
	SharedBudget
)

// Classify reads an upstream error answer.
func Classify(status int, body []byte) Verdict {
	if status == http.StatusOK {
		return NotAboutKey
	}
	if r, ok := BudgetRefusal(body); ok {
		if r.Unclear == "" {
			return KeyBudgetExceeded
		}
		return SharedBudget
	}
	switch status {
	case http.StatusUnauthorized, http.StatusPaymentRequired, http.StatusForbidden:
		if ProviderError(body) {
			return KeyRejected
		}
	}
	return NotAboutKey
}

// ProviderError reports whether a body is the provider's own JSON error:
// LiteLLM ({"error":{"message":…,"type":"auth_error",…}}) and OpenRouter
// ({"error":{"code":401,"message":…}}) both answer an object "error" with a
// string "message". An HTML block page, an empty body or a CDN's problem
// document is not a statement about the key.
func ProviderError(body []byte) bool {
	var v struct {
		Error *struct {
			Message *string `json:"message"`
		} `json:"error"`
	}
	return json.Unmarshal(body, &v) == nil && v.Error != nil && v.Error.Message != nil
}

// AccessRefusal reports LiteLLM's access-control refusals: the key may not
// call this route or model, which says nothing about whether it serves.
func AccessRefusal(body []byte) bool { return accessRefusalRe.Match(body) }

// pyFloat is a number as Python's str(float) or repr prints it: 10.02,
// 10.0, 1.5e-05, 2e-07, 1e+16; also inf and nan, which are refused later.
const pyFloat = `([-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?(?i:inf|infinity|nan)|None)`

// LiteLLM's budget refusals. Only those about the key itself (or its own
// user: one LiteLLM user per key on OpenHands) mean this key is spent; a
// team, model or global budget is shared by every key, so rotating would
// burn backups without helping.
var (
	// litellm/proxy/auth/user_api_key_auth.py (key budget check).
	tokenBudgetRe = regexp.MustCompile(`ExceededTokenBudget: Current spend for token: ` + pyFloat + `; Max Budget for Token: ` + pyFloat)
	// litellm/exceptions.py BudgetExceededError; a scope (Team=…, …) may
	// sit between "!" and "Current cost" in newer versions.
	budgetExceededRe = regexp.MustCompile(`Budget has been exceeded!\s*([^"]*?)\s*Current cost: \$?` + pyFloat + `, Max budget: \$?` + pyFloat)
	// litellm/proxy/auth/auth_checks.py: "ExceededBudget: User=<id> over
	// budget. Spend=3.7e-05, Budget=0.0" (docs/my-website/docs/proxy/users.md).
	spendBudgetRe = regexp.MustCompile(`Spend=` + pyFloat + `, Budget=` + pyFloat)
	// Shared budgets: never a reason to rotate one key. A LiteLLM user's
	// budget is shared by every key the user generates, a customer's ("End
	// User") by every key of the deployment (docs/my-website/docs/proxy/
	// users.md), the proxy's global budget by all.
	sharedBudgetRe = regexp.MustCompile(`Current Team Spend|Max Budget for Team|ExceededModelBudget|exceeded budget for model|Team=|Organization=|Project=|Tag=|User=|Customer=|LiteLLM Proxy has exceeded its budget`)
	// Any other "ExceededBudget" refusal is a budget LiteLLM does not name
	// as the key's: unclear.
	otherBudgetRe = regexp.MustCompile(`ExceededBudget|ExceededTokenBudget|budget_exceeded|Budget has been exceeded`)
	// LiteLLM's access-control refusals (litellm/proxy/auth/route_checks.py,
	// auth_checks.py).
	accessRefusalRe = regexp.MustCompile(`not allowed to call this route|Only allowed to call routes|not allowed to access (this )?model|not allowed to call model|is not allowed to access|IP address not allowed|not allowed to make requests`)
)

// Budget is one of LiteLLM's budget refusals, read.
type Budget struct {
	// Spend and Max are the refusal's figures (Max nil: "None").
	Spend float64
	Max   *float64
	// Unclear, when set, says why the refusal is no statement about this
	// key's own budget (a shared budget, no figures, figures that are not
	// finite numbers): never a reason to rotate.
	Unclear string
}

// keyScope: the scope LiteLLM names in "Budget has been exceeded! <scope>
// Current cost: …" is the key's own: none (older versions) or Key=….
func keyScope(scope string) bool {
	return scope == "" || strings.HasPrefix(scope, "Key=")
}

// BudgetRefusal recognises LiteLLM's budget refusals: ok is false when body
// is not one.
func BudgetRefusal(body []byte) (b Budget, ok bool) {
	var m [][]byte
	scope := ""
	if m = tokenBudgetRe.FindSubmatch(body); m == nil {
		if mm := budgetExceededRe.FindSubmatch(body); mm != nil {
			scope, m = string(mm[1]), [][]byte{mm[0], mm[2], mm[3]}
		} else if m = spendBudgetRe.FindSubmatch(body); m == nil {
			if sharedBudgetRe.Match(body) && otherBudgetRe.Match(body) {
				return Budget{Unclear: fmt.Sprintf("a shared (user, team, model or global) budget is exceeded, not this key's: %.120q", body)}, true
			}
			if otherBudgetRe.Match(body) {
				return Budget{Unclear: fmt.Sprintf("budget refusal without a spend figure: %.120q", body)}, true
			}
			return Budget{}, false
		}
	}
	if !keyScope(scope) || sharedBudgetRe.Match(body) {
		return Budget{Unclear: fmt.Sprintf("a shared (user, team, model or global) budget is exceeded, not this key's: %.120q", body)}, true
	}
	s, why := figure(m[1])
	if why != "" {
		return Budget{Unclear: why}, true
	}
	b = Budget{Spend: s}
	if string(m[2]) != "None" {
		x, why := figure(m[2])
		if why != "" {
			return Budget{Unclear: why}, true
		}
		b.Max = &x
	}
	return b, true
}

// figure reads a refusal's number: finite and not negative.
func figure(raw []byte) (float64, string) {
	v, err := strconv.ParseFloat(string(raw), 64)
	switch {
	case err != nil || math.IsNaN(v) || math.IsInf(v, 0):
		return 0, fmt.Sprintf("spend is not a finite number: %.40q", raw)
	case v < 0:
		return 0, fmt.Sprintf("negative spend %v", v)
	}
	return v, ""
}
