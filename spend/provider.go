package spend

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spendchecker/spendchecker/rotation/secret"
	"github.com/spendchecker/spendchecker/rotation/upstream"
)

// Result is a clear answer: a spend (the default kind), or, when Remaining
// is set, what remains of the account's balance (docs/providers.md).
type Result struct {
	// Spend is the key's spend in USD; meaningless when Remaining is set.
	Spend float64
	// Budget is the key's budget when the upstream reports one.
	Budget *float64
	// BudgetSpend is what counts against Budget when that is not Spend:
	// OpenRouter's limit resets (limit_reset) while its usage is lifetime,
	// so the spend in the current period is limit − limit_remaining. Nil:
	// Spend counts against Budget.
	BudgetSpend *float64
	// BudgetExceeded: the upstream refused the key for being over budget.
	BudgetExceeded bool
	// BudgetUser, with BudgetExceeded, is the LiteLLM user whose personal
	// budget refused the key (the key has no team): the rotator holds the
	// key when another key of the pool names the same user. Spend and Budget
	// are then the user's.
	BudgetUser string
	// AtLeast: Spend is a lower bound, not the key's whole spend (a check
	// reads at most maxActivityPages pages). It may rotate a key (the key
	// is over its threshold whatever the rest says); a lower bound under
	// the threshold is no clear answer (docs/providers.md).
	AtLeast bool
	// Remaining is the account's remaining balance, in Currency, from a
	// balance provider (deepseek, moonshot, siliconflow, or a configured
	// one with a remaining path): the key rotates when it falls to
	// --min-remaining or below. It may be negative (a debt). Nil: a spend.
	Remaining *float64
	// Currency is the unit of Remaining (or of Spend for a configured
	// provider) when the upstream says or its host implies it; "" unknown.
	Currency string
	// NoReading: the upstream answered clearly but with no figure to act
	// on — a one-api token with unlimited quota reports no usage at all.
	// Not a spend of 0: status says so (docs/providers.md).
	NoReading bool
	// Exhausted: the upstream refused the key because its own quota is
	// used up (one-api/new-api's 401 "额度已用尽", Factory's reload-your-
	// tokens answers): rotate, reason exhausted.
	Exhausted bool
	// Lag is how old the figure may be: a batch report lags the spend by
	// up to Lag, and the spend made meanwhile counts against the threshold
	// (docs/providers.md, "Batch reports").
	Lag time.Duration
}

// Kind names what a Result reports: "spend", "remaining" or "none".
func (r Result) Kind() string {
	switch {
	case r.Remaining != nil:
		return "remaining"
	case r.NoReading:
		return "none"
	}
	return "spend"
}

// Key is what a provider needs of a key.
type Key struct {
	Secret string
	// Account names the upstream account the key belongs to, when
	// configured (the pool's "account", or the key document's
	// spendAccount): keys of one account share one balance, asked once per
	// cycle (Cycle). Empty: the key is its own account.
	Account string
	// Pool is the pool the key is in: account labels are shared within a
	// pool only.
	Pool string
	// CreatedAt is the key document's createdAt. No provider relies on it:
	// a migrated or restored key spent before it (docs/providers.md).
	CreatedAt time.Time
	// ID is the key document's _id and UpstreamID its optional
	// upstreamKeyId: batch providers find the key in their report by them
	// (docs/providers.md, "Batch reports").
	ID, UpstreamID string
	// Recorded is the spend last recorded for the key (its totalSpend), 0
	// when none: a batch report's cumulative figure below it is a failed
	// check, not a fall in spend (docs/providers.md, "Batch reports").
	Recorded float64
}

// Provider fetches one key's spend. Errors: ErrUnauthorized for a dead key
// (upstream.KeyRejected),
// *UnclearError for an answer that is not a clear number, others for
// transport failures. Only a nil error or ErrUnauthorized may lead to a
// rotation.
type Provider interface {
	Name() string
	Spend(ctx context.Context, k Key) (Result, error)
}

// Names lists the known providers.
var Names = []string{"openhands", "litellm", "openrouter", "oneapi", "deepseek", "moonshot", "siliconflow"}

// DefaultURL is each provider's public base URL ("" when one must be given).
func DefaultURL(name string) string {
	switch name {
	case "openhands":
		return "https://llm-proxy.app.all-hands.dev"
	case "openrouter":
		return "https://openrouter.ai"
	case "deepseek":
		return "https://api.deepseek.com"
	case "moonshot":
		return "https://api.moonshot.cn"
	case "siliconflow":
		return "https://api.siliconflow.cn"
	}
	return ""
}

// New returns the named provider talking to baseURL through c (nil: the
// default client settings).
func New(name, baseURL string, c *Client) (Provider, error) {
	known := false
	for _, n := range Names {
		known = known || n == name
	}
	if !known {
		return nil, fmt.Errorf("unknown provider %q (known: %s)", name, strings.Join(Names, ", "))
	}
	if baseURL == "" {
		baseURL = DefaultURL(name)
	}
	if baseURL == "" {
		return nil, fmt.Errorf("provider %s needs a URL", name)
	}
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("provider URL %q is not an http(s) URL", baseURL)
	}
	if c == nil {
		c = &Client{}
	}
	base := strings.TrimRight(baseURL, "/")
	switch name {
	case "openhands":
		return &openHands{c: c, base: base}, nil
	case "litellm":
		return &httpProvider{name: name, c: c, parse: ParseLiteLLM, url: func(Key) string { return base + "/key/info" }}, nil
	case "openrouter":
		return &httpProvider{name: name, c: c, parse: ParseOpenRouter, url: func(Key) string { return base + "/api/v1/key" }}, nil
	case "oneapi":
		c.SetHostInterval(hostKey(u), OneAPIInterval)
		return &oneAPI{c: c, base: base}, nil
	case "deepseek":
		return &balance{name: name, c: c, base: base, path: "/user/balance", parse: ParseDeepSeek}, nil
	case "moonshot":
		return &balance{name: name, c: c, base: base, path: "/v1/users/me/balance", parse: ParseMoonshot, currency: hostCurrency(base)}, nil
	case "siliconflow":
		return &balance{name: name, c: c, base: base, path: "/v1/user/info", parse: ParseSiliconFlow, currency: hostCurrency(base)}, nil
	}
	return nil, fmt.Errorf("unknown provider %q (known: %s)", name, strings.Join(Names, ", "))
}

type httpProvider struct {
	name  string
	c     *Client
	url   func(Key) string
	parse func(status int, body []byte) (Result, error)
}

func (p *httpProvider) Name() string { return p.name }

func (p *httpProvider) Spend(ctx context.Context, k Key) (Result, error) {
	resp, err := p.c.Get(ctx, p.url(k), k.Secret)
	if err != nil {
		return Result{}, err
	}
	// Masked before a parser quotes a cut of it (secret.RedactBody).
	return p.parse(resp.Status, secret.RedactBody(resp.Body, k.Secret))
}

// common handles what every provider answers alike: an error answer is
// read by upstream.Read, the one reading the proxy's own traffic goes
// through too (package proxyrotate), and only what it says rotates a key.
func common(status int, body []byte) (Result, bool, error) {
	if status == http.StatusOK {
		return Result{}, false, nil
	}
	a := upstream.Read(status, body)
	switch a.Verdict {
	case upstream.KeyRejected:
		return Result{}, true, ErrUnauthorized
	case upstream.KeyExhausted:
		return Result{Exhausted: true}, true, nil
	case upstream.KeyBudgetExceeded, upstream.UserBudgetExceeded:
		return Result{Spend: a.Spend, Budget: a.Max, BudgetExceeded: true, BudgetUser: a.User}, true, nil
	}
	return Result{}, true, unclear("%s", a.Why)
}

// aboutKey reports whether an error answer says something about the key
// (upstream.Read): then it is the answer, not a transient to retry.
func aboutKey(status int, body []byte) bool {
	return status != http.StatusOK && upstream.Read(status, body).Rotates()
}

// number accepts only a JSON number that is finite and not negative.
func number(raw json.RawMessage) (float64, error) {
	v, err := signedNumber(raw)
	if err == nil && v < 0 {
		return 0, unclear("negative spend %v", v)
	}
	return v, err
}

// signedNumber accepts a finite JSON number of either sign.
func signedNumber(raw json.RawMessage) (float64, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] == '"' || raw[0] == 'n' || raw[0] == 't' || raw[0] == 'f' || raw[0] == '{' || raw[0] == '[' {
		return 0, unclear("spend is not a number: %.40q", raw)
	}
	v, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, unclear("spend is not a finite number: %.40q", raw)
	}
	return v, nil
}

// optionalNumber reads a budget: null or absent means none.
func optionalNumber(raw json.RawMessage) (*float64, error) {
	if t := bytes.TrimSpace(raw); len(t) == 0 || string(t) == "null" {
		return nil, nil
	}
	v, err := number(raw)
	if err != nil {
		return nil, err
	}
	return &v, nil
}

func decode(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return unclear("malformed JSON: %v", err)
	}
	return nil
}

// OpenHands' proxy is LiteLLM; its /user/daily/activity answers one page
// of daily rows (date × key × model × provider) and totals only that page.
// ParseLiteLLM reads GET /key/info: info.spend and info.max_budget.
func ParseLiteLLM(status int, body []byte) (Result, error) {
	if r, done, err := common(status, body); done {
		return r, err
	}
	var v struct {
		Info *struct {
			Spend     json.RawMessage `json:"spend"`
			MaxBudget json.RawMessage `json:"max_budget"`
		} `json:"info"`
	}
	if err := decode(body, &v); err != nil {
		return Result{}, err
	}
	if v.Info == nil || v.Info.Spend == nil {
		return Result{}, unclear("info.spend missing")
	}
	s, err := number(v.Info.Spend)
	if err != nil {
		return Result{}, err
	}
	b, err := optionalNumber(v.Info.MaxBudget)
	return Result{Spend: s, Budget: b}, err
}

// ParseOpenRouter reads GET /api/v1/key: data.usage (lifetime) is the
// spend; data.limit the budget, against which only the current period's
// spend counts when the limit resets (data.limit_reset): limit −
// data.limit_remaining (openrouter.ai/docs/api/api-reference/api-keys/get-current-key).
func ParseOpenRouter(status int, body []byte) (Result, error) {
	if r, done, err := common(status, body); done {
		return r, err
	}
	var v struct {
		Data *struct {
			Usage          json.RawMessage `json:"usage"`
			Limit          json.RawMessage `json:"limit"`
			LimitRemaining json.RawMessage `json:"limit_remaining"`
			LimitReset     json.RawMessage `json:"limit_reset"`
		} `json:"data"`
	}
	if err := decode(body, &v); err != nil {
		return Result{}, err
	}
	if v.Data == nil || v.Data.Usage == nil {
		return Result{}, unclear("data.usage missing")
	}
	s, err := number(v.Data.Usage)
	if err != nil {
		return Result{}, err
	}
	b, err := optionalNumber(v.Data.Limit)
	if err != nil || b == nil {
		return Result{Spend: s}, err
	}
	r := Result{Spend: s, Budget: b}
	// limit_remaining goes negative when a key overshoots its limit
	// (OpenRouter charges a request when it finishes): over budget.
	var rem *float64
	if !isNull(v.Data.LimitRemaining) {
		x, err := signedNumber(v.Data.LimitRemaining)
		if err != nil {
			return Result{}, err
		}
		rem = &x
	}
	switch {
	case rem != nil:
		used := max(*b-*rem, 0)
		if math.IsInf(used, 0) {
			return Result{}, unclear("limit %v minus limit_remaining %v overflows", *b, *rem)
		}
		r.BudgetSpend = &used
	case !isNull(v.Data.LimitReset):
		// A resetting limit without what is left of it: the period's spend
		// is unknown, so no budget is reported (the threshold still holds).
		r.Budget = nil
	}
	return r, nil
}

func isNull(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || string(t) == "null"
}
