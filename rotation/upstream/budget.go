package upstream

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
)

// pyFloat is a number as Python's str(float) or repr prints it: 10.02,
// 10.0, 1.5e-05, 2e-07, 1e+16; also inf and nan, which are refused later.
const pyFloat = `([-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?(?i:inf|infinity|nan)|None)`

// LiteLLM's budget refusals. Those about the key itself mean this key is
// spent; one about the key owner's personal budget means it too unless the
// owner has other keys in the pool (the rotator checks); a team, model or
// global budget is shared by every key, so rotating would burn backups
// without helping.
var (
	// litellm/proxy/auth/user_api_key_auth.py (key budget check).
	tokenBudgetRe = regexp.MustCompile(`ExceededTokenBudget: Current spend for token: ` + pyFloat + `; Max Budget for Token: ` + pyFloat)
	// litellm/exceptions.py BudgetExceededError; a scope (Team=…, …) may
	// sit between "!" and "Current cost" in newer versions.
	budgetExceededRe = regexp.MustCompile(`Budget has been exceeded!\s*([^"]*?)\s*Current cost: \$?` + pyFloat + `, Max budget: \$?` + pyFloat)
	// litellm/proxy/auth/auth_checks.py, common_checks, "check personal
	// budget, if personal key" (a key without a team):
	// f"ExceededBudget: User={user_object.user_id} over budget.
	// Spend={user_spend}, Budget={user_budget}" raised as
	// BudgetExceededError (400 budget_exceeded; 429 on some deployments);
	// older versions raised it plainly and answered 401 "Authentication
	// Error, User=… over budget. …". Not "End User=" (a customer's budget).
	userBudgetRe = regexp.MustCompile(`(?:ExceededBudget: |Authentication Error, )User=(\S.{0,255}?) over budget\. Spend=` + pyFloat + `, Budget=` + pyFloat)
	// "ExceededBudget: User=<id> over budget. Spend=3.7e-05, Budget=0.0"
	// (docs/my-website/docs/proxy/users.md) and the scoped forms
	// ("Team=<id> over budget. Spend=…").
	spendBudgetRe = regexp.MustCompile(`Spend=` + pyFloat + `, Budget=` + pyFloat)
	// Shared budgets: never a reason to rotate one key. A customer's ("End
	// User") budget is shared by every key of the deployment
	// (docs/my-website/docs/proxy/users.md), the proxy's global budget by
	// all. A user named other than in the personal-budget refusal is not
	// known to be one key's.
	sharedBudgetRe = regexp.MustCompile(`Current Team Spend|Max Budget for Team|ExceededModelBudget|exceeded budget for model|Team=|Organization=|Project=|Tag=|User=|Customer=|LiteLLM Proxy has exceeded its budget`)
	// The same without the user: what may not sit beside a personal-budget
	// refusal.
	scopedBudgetRe = regexp.MustCompile(`Current Team Spend|Max Budget for Team|ExceededModelBudget|exceeded budget for model|Team=|Organization=|Project=|Tag=|End User=|Customer=|LiteLLM Proxy has exceeded its budget`)
	// Any other refusal naming a budget (the proxy rotates on
	// "ExceededBudget", "budget_exceeded" and "over budget"): a budget
	// LiteLLM does not name as the key's, so unclear.
	otherBudgetRe = regexp.MustCompile(`ExceededBudget|ExceededTokenBudget|budget_exceeded|Budget has been exceeded|over budget`)
)

// Budget is one of LiteLLM's budget refusals, read.
type Budget struct {
	// Spend and Max are the refusal's figures (Max nil: "None").
	Spend float64
	Max   *float64
	// User, when set, is the LiteLLM user whose personal budget is spent
	// (the key has no team): the key's own when no other key of the pool
	// names the same user.
	User string
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

func sharedBudget(body []byte) Budget {
	return Budget{Unclear: fmt.Sprintf("a shared (team, organisation, customer, model or global) budget is exceeded, not this key's: %.120q", body)}
}

// BudgetRefusal recognises LiteLLM's budget refusals: ok is false when body
// is not one.
func BudgetRefusal(body []byte) (b Budget, ok bool) {
	if m := userBudgetRe.FindSubmatch(body); m != nil {
		if scopedBudgetRe.Match(body) {
			return sharedBudget(body), true
		}
		b, ok := figures(m[2], m[3])
		b.User = jsonText(m[1])
		return b, ok
	}
	var m [][]byte
	scope := ""
	if m = tokenBudgetRe.FindSubmatch(body); m == nil {
		if mm := budgetExceededRe.FindSubmatch(body); mm != nil {
			scope, m = string(mm[1]), [][]byte{mm[0], mm[2], mm[3]}
		} else if m = spendBudgetRe.FindSubmatch(body); m == nil {
			if sharedBudgetRe.Match(body) && otherBudgetRe.Match(body) {
				return sharedBudget(body), true
			}
			if otherBudgetRe.Match(body) {
				return Budget{Unclear: fmt.Sprintf("budget refusal without a spend figure: %.120q", body)}, true
			}
			return Budget{}, false
		}
	}
	if !keyScope(scope) || sharedBudgetRe.Match(body) {
		return sharedBudget(body), true
	}
	return figures(m[1], m[2])
}

// figures reads a refusal's spend and budget ("None": no budget).
func figures(spend, budget []byte) (Budget, bool) {
	s, why := figure(spend)
	if why != "" {
		return Budget{Unclear: why}, true
	}
	b := Budget{Spend: s}
	if string(budget) != "None" {
		x, why := figure(budget)
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

// jsonText reads a user id as it stands in a JSON string: escapes
// (\u00e9, \") decoded; an id that is not valid there is kept as it came.
func jsonText(raw []byte) string {
	var s string
	if json.Unmarshal([]byte(`"`+string(raw)+`"`), &s) == nil {
		return s
	}
	return string(raw)
}
