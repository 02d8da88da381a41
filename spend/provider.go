package spend

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Result is a clear spend answer.
type Result struct {
	Spend float64
	// Budget is the key's budget when the upstream reports one.
	Budget *float64
	// BudgetExceeded: the upstream refused the key for being over budget.
	BudgetExceeded bool
}

// Key is what a provider needs of a key.
type Key struct {
	Secret    string
	CreatedAt time.Time
}

// Provider fetches one key's spend. Errors: ErrUnauthorized for a dead key,
// *UnclearError for an answer that is not a clear number, others for
// transport failures. Only a nil error or ErrUnauthorized may lead to a
// rotation.
type Provider interface {
	Name() string
	Spend(ctx context.Context, k Key) (Result, error)
}

// Names lists the known providers.
var Names = []string{"openhands", "litellm", "openrouter"}

// DefaultURL is each provider's public base URL ("" when one must be given).
func DefaultURL(name string) string {
	switch name {
	case "openhands":
		return "https://llm-proxy.app.all-hands.dev"
	case "openrouter":
		return "https://openrouter.ai"
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
		return &httpProvider{name: name, c: c, parse: ParseOpenHands, url: func(k Key) string {
			start := k.CreatedAt
			if start.IsZero() {
				start = time.Now().AddDate(-1, 0, 0)
			}
			q := url.Values{
				"start_date": {start.UTC().Format(time.DateOnly)},
				"end_date":   {time.Now().UTC().AddDate(0, 0, 1).Format(time.DateOnly)},
				"page":       {"1"},
				"page_size":  {"100"},
			}
			return base + "/user/daily/activity?" + q.Encode()
		}}, nil
	case "litellm":
		return &httpProvider{name: name, c: c, parse: ParseLiteLLM, url: func(Key) string { return base + "/key/info" }}, nil
	case "openrouter":
		return &httpProvider{name: name, c: c, parse: ParseOpenRouter, url: func(Key) string { return base + "/api/v1/key" }}, nil
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
	return p.parse(resp.Status, resp.Body)
}

// common handles what every provider answers alike: dead keys, LiteLLM's
// budget_exceeded refusals, and statuses that are not a spend figure.
func common(status int, body []byte) (Result, bool, error) {
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return Result{}, true, ErrUnauthorized
	case status == http.StatusBadRequest && bytes.Contains(body, []byte("budget_exceeded")):
		r, err := parseBudgetExceeded(body)
		return r, true, err
	case status != http.StatusOK:
		return Result{}, true, unclear("status %d", status)
	}
	return Result{}, false, nil
}

var (
	spendRe  = regexp.MustCompile(`Spend\s*[=:]\s*([0-9]+(?:\.[0-9]+)?)`)
	budgetRe = regexp.MustCompile(`Budget\s*[=:]\s*([0-9]+(?:\.[0-9]+)?)`)
)

// parseBudgetExceeded reads "... Spend=10.02, Budget=10.0" from the error text.
func parseBudgetExceeded(body []byte) (Result, error) {
	m := spendRe.FindSubmatch(body)
	if m == nil {
		return Result{}, unclear("budget_exceeded without a spend figure")
	}
	s, err := number(json.RawMessage(m[1]))
	if err != nil {
		return Result{}, err
	}
	r := Result{Spend: s, BudgetExceeded: true}
	if b := budgetRe.FindSubmatch(body); b != nil {
		if v, err := number(json.RawMessage(b[1])); err == nil {
			r.Budget = &v
		}
	}
	return r, nil
}

// number accepts only a JSON number that is finite and not negative.
func number(raw json.RawMessage) (float64, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] == '"' || raw[0] == 'n' || raw[0] == 't' || raw[0] == 'f' || raw[0] == '{' || raw[0] == '[' {
		return 0, unclear("spend is not a number: %.40q", raw)
	}
	v, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, unclear("spend is not a finite number: %.40q", raw)
	}
	if v < 0 {
		return 0, unclear("negative spend %v", v)
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

// ParseOpenHands reads GET /user/daily/activity: metadata.total_spend.
func ParseOpenHands(status int, body []byte) (Result, error) {
	if r, done, err := common(status, body); done {
		return r, err
	}
	var v struct {
		Metadata *struct {
			TotalSpend json.RawMessage `json:"total_spend"`
		} `json:"metadata"`
	}
	if err := decode(body, &v); err != nil {
		return Result{}, err
	}
	if v.Metadata == nil || v.Metadata.TotalSpend == nil {
		return Result{}, unclear("metadata.total_spend missing")
	}
	s, err := number(v.Metadata.TotalSpend)
	return Result{Spend: s}, err
}

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

// ParseOpenRouter reads GET /api/v1/key: data.usage and data.limit.
func ParseOpenRouter(status int, body []byte) (Result, error) {
	if r, done, err := common(status, body); done {
		return r, err
	}
	var v struct {
		Data *struct {
			Usage json.RawMessage `json:"usage"`
			Limit json.RawMessage `json:"limit"`
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
	return Result{Spend: s, Budget: b}, err
}
