// Package upstream reads what an upstream LLM API's error answer says about
// the key that got it. The daemon's polls (package spend) and a proxy's live
// traffic (package proxyrotate) read answers through Read alone, so the two
// never disagree about whether a key is dead.
package upstream

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
)

// Verdict is what one upstream error answer says about the key that got it.
type Verdict int

const (
	// NotAboutKey: no statement about this key — a success, a cooldown
	// (429, 529), another status, or a CDN/WAF block page on 401/402/403.
	NotAboutKey Verdict = iota
	// KeyRejected: the provider refuses this key — a 401, 402 or 403
	// carrying its own JSON error, or a JSON error naming the key invalid
	// or revoked whatever the status.
	KeyRejected
	// KeyBudgetExceeded: LiteLLM's budget refusal about this key's own budget.
	KeyBudgetExceeded
	// SharedBudget: a budget refusal about a budget many keys share (team,
	// organisation, project, tag, customer, model, the whole proxy) or
	// without figures to tell: rotating would burn backups without helping.
	SharedBudget
	// UserBudgetExceeded: LiteLLM's refusal of the key owner's personal
	// budget (a key without a team). It rotates unless another key of the
	// pool names the same user (Answer.User): the rotator decides, with the
	// pool's user-budget setting.
	UserBudgetExceeded
	// KeyExhausted: the key's own quota is used up (one-api and new-api's
	// "额度已用尽", Factory's reload-your-tokens answers).
	KeyExhausted
	// AccessRefused: LiteLLM refuses this route or model to the key, which
	// says nothing about whether it serves (one client asking for a
	// forbidden model must not burn a backup per request).
	AccessRefused
)

func (v Verdict) String() string {
	switch v {
	case NotAboutKey:
		return "not_about_key"
	case KeyRejected:
		return "key_rejected"
	case KeyBudgetExceeded:
		return "key_budget_exceeded"
	case SharedBudget:
		return "shared_budget"
	case UserBudgetExceeded:
		return "user_budget_exceeded"
	case KeyExhausted:
		return "key_exhausted"
	case AccessRefused:
		return "access_refused"
	}
	return "unknown"
}

// Answer is one upstream answer, read.
type Answer struct {
	Verdict Verdict
	// Reason is the rotation reason when the answer may rotate the key:
	// unauthorized, payment_required, forbidden, invalid_key,
	// budget_exceeded, exhausted or factory_quota_exhausted.
	Reason string
	// Spend and Max are a budget refusal's figures (Max nil: "None").
	Spend float64
	Max   *float64
	// User is the LiteLLM user a UserBudgetExceeded refusal names.
	User string
	// Why, on an error status that does not rotate, says why the answer is
	// no statement about the key.
	Why string
}

// Rotates reports whether the answer says the key should be rotated. A
// UserBudgetExceeded answer still goes through the rotator's check that no
// other key of the pool shares the user.
func (a Answer) Rotates() bool {
	switch a.Verdict {
	case KeyRejected, KeyBudgetExceeded, UserBudgetExceeded, KeyExhausted:
		return true
	}
	return false
}

var (
	// one-api "该令牌额度已用尽" (older "该 token 额度已用尽"), new-api
	// "该令牌额度已用尽 TokenStatusExhausted[sk-abc***xyz]" or "令牌 (12)
	// 额度已用尽" (model/token.go ValidateUserToken), sent by
	// middleware/auth.go as 401 with {"error":{"message":…,"type":…}}.
	oneAPIExhaustedRe = regexp.MustCompile(`(令牌|token|Token).{0,24}额度已用尽|TokenStatusExhausted`)
	// Factory's quota answers, as the proxy matches them
	// (goproxy/internal/keypool/rotation.go, CheckAndRotateOnError).
	factoryQuota = []string{"ready for more? reload your tokens", "ready to get started? subscribe", "app.factory.ai/settings/billing"}
)

// Read reads an upstream answer. The order matters: a budget or quota
// refusal is read from its text before the status (LiteLLM refuses an
// over-budget key with 400, 401 or 429 depending on version and
// deployment), a cooldown never rotates, an access refusal is never a dead
// key, and a 401/402/403 is one only with the provider's own JSON error.
func Read(status int, body []byte) Answer {
	if status == http.StatusOK {
		return Answer{}
	}
	full := body
	body = textWindow(body)
	if b, ok := BudgetRefusal(body); ok {
		switch {
		case b.Unclear != "":
			return Answer{Verdict: SharedBudget, Why: b.Unclear}
		case b.User != "":
			return Answer{Verdict: UserBudgetExceeded, Reason: "budget_exceeded", Spend: b.Spend, Max: b.Max, User: b.User}
		}
		return Answer{Verdict: KeyBudgetExceeded, Reason: "budget_exceeded", Spend: b.Spend, Max: b.Max}
	}
	lower := strings.ToLower(string(body))
	for _, q := range factoryQuota {
		if strings.Contains(lower, q) {
			return Answer{Verdict: KeyExhausted, Reason: "factory_quota_exhausted"}
		}
	}
	authStatus := status == http.StatusUnauthorized || status == http.StatusForbidden
	if authStatus && ProviderError(full) && oneAPIExhaustedRe.Match(body) {
		return Answer{Verdict: KeyExhausted, Reason: "exhausted"}
	}
	if status == http.StatusTooManyRequests || status == 529 {
		return Answer{Why: fmt.Sprintf("status %d: a cooldown, not a statement about the key", status)}
	}
	if AccessRefusal(body) {
		return Answer{Verdict: AccessRefused, Why: fmt.Sprintf("%d: the key may not call this endpoint or model, which says nothing about whether it serves: %.160q", status, body)}
	}
	if authStatus || status == http.StatusPaymentRequired {
		if ProviderError(full) {
			return Answer{Verdict: KeyRejected, Reason: rejectedReason(status)}
		}
	}
	// The proxy's factory rule: an error the upstream wrote (a JSON
	// object, not an HTML page that happens to contain the words) naming
	// the key invalid or revoked, whatever the status.
	if (strings.Contains(lower, "invalid_api_key") || strings.Contains(lower, "revoked")) && jsonObject(full) {
		return Answer{Verdict: KeyRejected, Reason: "invalid_key"}
	}
	if authStatus || status == http.StatusPaymentRequired {
		return Answer{Why: fmt.Sprintf("%d without the provider's JSON error (a proxy, WAF or CDN answered?): %.60q", status, body)}
	}
	return Answer{Why: fmt.Sprintf("status %d", status)}
}

// TextWindow is how much of an answer Read searches for a provider's
// words. Providers' error answers are a few hundred bytes; the regular
// expressions cost about a second of CPU per MiB, so a hostile or broken
// upstream answering megabytes would otherwise burn a core per answer.
// Whether the answer is the provider's JSON error is still decided on the
// whole body (a linear parse).
const TextWindow = 64 << 10

func textWindow(body []byte) []byte {
	if len(body) > TextWindow {
		return body[:TextWindow]
	}
	return body
}

// rejectedReason names a rejection by its status, as the proxy's own
// CheckAndRotateOnError does.
func rejectedReason(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return "unauthorized"
	case http.StatusPaymentRequired:
		return "payment_required"
	}
	return "forbidden"
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

// LiteLLM's access-control refusals (litellm/proxy/auth/route_checks.py,
// auth_checks.py; newer versions answer a model refusal with
// model_access_denied.py's client message and the error type
// key_model_access_denied, team_model_access_denied, …).
var accessRefusalRe = regexp.MustCompile(`not allowed to call this route|Only allowed to call routes|not allowed to access (this )?model|not allowed to call model|is not allowed to access|IP address not allowed|not allowed to make requests|is not available for this API key, or the model name is invalid|is not in the allowed models for this customer|_model_access_denied`)

// jsonObject: an error the upstream wrote, not a page that happens to
// contain the words.
func jsonObject(body []byte) bool {
	b := strings.TrimSpace(string(body))
	return strings.HasPrefix(b, "{") && json.Valid([]byte(b))
}
