package spend

import (
	"context"
	"encoding/json"
	"time"
)

// one-api (songquanpeng/one-api) and new-api (QuantumNous/new-api) answer
// OpenAI's old billing endpoints for the token used as bearer
// (controller/billing.go): GET /v1/dashboard/billing/subscription and GET
// /v1/dashboard/billing/usage (docs/providers.md).
const (
	oneAPISubscriptionPath = "/v1/dashboard/billing/subscription"
	oneAPIUsagePath        = "/v1/dashboard/billing/usage"
	// oneAPIUnlimited: both set hard_limit_usd to 100000000 for a token with
	// unlimited quota; anything at or above it is taken for unlimited.
	oneAPIUnlimited = 1e8
	// OneAPIInterval paces requests to a one-api host. Their default global
	// API rate limits are per client IP: one-api 480 per 180 s
	// (GLOBAL_API_RATE_LIMIT, common/constants.go), new-api 180 per 180 s;
	// one request per 1.1 s is 164 per 180 s, under both, and a check is
	// two requests (docs/providers.md).
	OneAPIInterval = 1100 * time.Millisecond
)

type oneAPI struct {
	c    *Client
	base string
}

func (p *oneAPI) Name() string { return "oneapi" }

// Spend reads the token's budget, then its lifetime usage: two requests.
func (p *oneAPI) Spend(ctx context.Context, k Key) (Result, error) {
	resp, err := p.c.Get(ctx, p.base+oneAPISubscriptionPath, k.Secret)
	if err != nil {
		return Result{}, err
	}
	sub, err := ParseOneAPISubscription(resp.Status, resp.Body)
	if err != nil || sub.Exhausted {
		return sub, err
	}
	// The dates are ignored by both (lifetime usage); sent for servers that
	// imitate OpenAI more closely.
	q := "?start_date=2023-01-01&end_date=" + p.c.now().UTC().AddDate(0, 0, 1).Format(time.DateOnly)
	resp, err = p.c.Get(ctx, p.base+oneAPIUsagePath+q, k.Secret)
	if err != nil {
		return Result{}, err
	}
	use, err := ParseOneAPIUsage(resp.Status, resp.Body)
	if err != nil || use.Exhausted {
		return use, err
	}
	use.Budget = sub.Budget
	if sub.NoReading {
		// Unlimited: one-api never counts an unlimited token's usage, so a
		// usage of 0 is no reading; new-api counts it, and that is a spend
		// without a budget.
		if use.Spend == 0 {
			return Result{NoReading: true}, nil
		}
	}
	return use, nil
}

// oneAPICommon handles what both endpoints answer alike: an error object
// on 200 (a failed check, never a figure of 0), and the statuses common
// reads (the exhausted refusal, "额度已用尽", among them: upstream.Read).
func oneAPICommon(status int, body []byte) (Result, bool, error) {
	if r, done, err := common(status, body); done {
		return r, true, err
	}
	// billing.go answers a failed lookup with HTTP 200 and
	// {"error":{"message":…,"type":"one_api_error"|"upstream_error"|"new_api_error"}}.
	var e struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && !isNull(e.Error) {
		return Result{}, true, unclear("200 with an error: %.160q", body)
	}
	return Result{}, false, nil
}

// ParseOneAPISubscription reads GET /v1/dashboard/billing/subscription:
// hard_limit_usd is the budget (one-api: what remains of the token's quota;
// new-api: remaining + used), ≥ 1e8 unlimited (NoReading set, no budget);
// access_until 0 never expires.
func ParseOneAPISubscription(status int, body []byte) (Result, error) {
	if r, done, err := oneAPICommon(status, body); done {
		return r, err
	}
	var v struct {
		HardLimit json.RawMessage `json:"hard_limit_usd"`
	}
	if err := decode(body, &v); err != nil {
		return Result{}, err
	}
	if isNull(v.HardLimit) {
		return Result{}, unclear("hard_limit_usd missing")
	}
	b, err := number(v.HardLimit)
	if err != nil {
		return Result{}, err
	}
	if b >= oneAPIUnlimited {
		return Result{NoReading: true}, nil
	}
	return Result{Budget: &b}, nil
}

// ParseOneAPIUsage reads GET /v1/dashboard/billing/usage: total_usage is
// the token's lifetime usage in cents (USD ×100), whatever dates are asked.
func ParseOneAPIUsage(status int, body []byte) (Result, error) {
	if r, done, err := oneAPICommon(status, body); done {
		return r, err
	}
	var v struct {
		TotalUsage json.RawMessage `json:"total_usage"`
	}
	if err := decode(body, &v); err != nil {
		return Result{}, err
	}
	if isNull(v.TotalUsage) {
		return Result{}, unclear("total_usage missing")
	}
	cents, err := number(v.TotalUsage)
	if err != nil {
		return Result{}, err
	}
	return Result{Spend: cents / 100}, nil
}
