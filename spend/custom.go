package spend

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/spendchecker/spendchecker/rotation/secret"
)

// CustomSpec configures the "custom" provider: one GET per key, read by JSON
// paths (docs/providers.md, "A configured provider"). It sits in a pool's
// entry of the config file as "custom".
type CustomSpec struct {
	// URL is a text/template with .Key (the secret); functions urlquery and
	// the like are text/template's own.
	URL string `json:"url"`
	// Headers are templates too. None: Authorization: Bearer {{.Key}}.
	Headers map[string]string `json:"headers"`
	// Paths into the 200 answer, dot-separated, numbers index arrays
	// ("data.balance_infos.0.total_balance"). Exactly one of spend and
	// remaining; the others are optional.
	Spend           string `json:"spend"`
	Remaining       string `json:"remaining"`
	Budget          string `json:"budget"`
	BudgetRemaining string `json:"budget-remaining"` // what is left of budget: budget spend = budget − it
	Currency        string `json:"currency"`
	// OK is the path of a success flag that must equal OKValue (default
	// true) on a 200, else the check failed.
	OK      string          `json:"ok"`
	OKValue json.RawMessage `json:"ok-value"`
	// Error is the path whose presence (not null, false, 0 or "") on a 200
	// means a failed check; default "error". "-": no such check.
	Error string `json:"error"`
	// Numbers says how figures are written: "number" (JSON numbers only),
	// "string" (strings holding a number only) or "" (either).
	Numbers string `json:"numbers"`
	// Scale multiplies every figure (0.01 for cents, 1/500000 for one-api
	// quota units, an exchange rate); default 1.
	Scale float64 `json:"scale"`
	// Unlimited is a sentinel, compared before scaling: a spend or
	// remaining equal to it (or, when positive, at or above it) is no
	// reading; a budget so is no budget.
	Unlimited *float64 `json:"unlimited"`
	// ExhaustedStatuses are the statuses that mean the key's quota is used
	// up (rotate, reason exhausted), when the body also matches
	// ExhaustedMatch (a regexp; empty: any body).
	ExhaustedStatuses []int  `json:"exhausted-statuses"`
	ExhaustedMatch    string `json:"exhausted-match"`
	// MinInterval is the least time between two requests to the URL's host
	// ("1s"); empty: only --host-rate.
	MinInterval string `json:"min-interval"`
}

type jsonPath []string

func parsePath(name, p string) (jsonPath, error) {
	if p == "" {
		return nil, nil
	}
	segs := strings.Split(p, ".")
	for _, s := range segs {
		if s == "" || strings.ContainsAny(s, " \t\n[]*$\"'") {
			return nil, fmt.Errorf("custom provider: %s path %q: want dot-separated names and array indexes, such as data.items.0.total", name, p)
		}
	}
	return segs, nil
}

// lookup follows the path; ok is false when a step is missing.
func (p jsonPath) lookup(v any) (any, bool) {
	for _, s := range p {
		switch x := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = x[s]; !ok {
				return nil, false
			}
		case []any:
			i, err := strconv.Atoi(s)
			if err != nil || i < 0 || i >= len(x) {
				return nil, false
			}
			v = x[i]
		default:
			return nil, false
		}
	}
	return v, true
}

type custom struct {
	c                                                       *Client
	url                                                     *template.Template
	headers                                                 map[string]*template.Template
	spend, remaining, budget, budgetRem, currency, ok, errP jsonPath
	okValue                                                 any
	scale                                                   float64
	unlimited                                               *float64
	exhausted                                               map[int]bool
	exhaustedRe                                             *regexp.Regexp
	host                                                    string
	numbers                                                 string
	rawURL                                                  string // the URL template: with the account, what a balance is shared under
}

// NewCustom validates spec and returns its provider talking through c (nil:
// default settings). Every error is one line naming the setting: the
// daemon exits 2 on it.
func NewCustom(spec CustomSpec, c *Client) (Provider, error) {
	if c == nil {
		c = &Client{}
	}
	p := &custom{c: c, scale: spec.Scale, unlimited: spec.Unlimited, headers: map[string]*template.Template{}, exhausted: map[int]bool{}}
	var err error
	if spec.URL == "" {
		return nil, errors.New("custom provider: url is required")
	}
	if p.url, err = template.New("url").Option("missingkey=error").Parse(spec.URL); err != nil {
		return nil, fmt.Errorf("custom provider: url template: %v", err)
	}
	probe := Key{Secret: "sk-probe"}
	raw, err := execTemplate(p.url, probe)
	if err != nil {
		return nil, fmt.Errorf("custom provider: url template: %v", err)
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("custom provider: url %q is not an http(s) URL", raw)
	}
	if strings.Contains(u.Host, "sk-probe") {
		return nil, errors.New("custom provider: url: the key must not be in the host")
	}
	p.host, p.rawURL = hostKey(u), spec.URL
	for name, h := range spec.Headers {
		if name == "" || strings.ContainsAny(name, " :\r\n") {
			return nil, fmt.Errorf("custom provider: header name %q", name)
		}
		t, err := template.New(name).Option("missingkey=error").Parse(h)
		if err != nil {
			return nil, fmt.Errorf("custom provider: header %s template: %v", name, err)
		}
		v, err := execTemplate(t, probe)
		if err != nil {
			return nil, fmt.Errorf("custom provider: header %s template: %v", name, err)
		}
		if strings.ContainsAny(v, "\r\n") {
			return nil, fmt.Errorf("custom provider: header %s: a value on one line", name)
		}
		p.headers[http.CanonicalHeaderKey(name)] = t
	}
	for _, f := range []struct {
		name string
		src  string
		dst  *jsonPath
	}{{"spend", spec.Spend, &p.spend}, {"remaining", spec.Remaining, &p.remaining}, {"budget", spec.Budget, &p.budget},
		{"budget-remaining", spec.BudgetRemaining, &p.budgetRem}, {"currency", spec.Currency, &p.currency}, {"ok", spec.OK, &p.ok}} {
		if *f.dst, err = parsePath(f.name, f.src); err != nil {
			return nil, err
		}
	}
	switch spec.Error {
	case "-":
	case "":
		p.errP = jsonPath{"error"}
	default:
		if p.errP, err = parsePath("error", spec.Error); err != nil {
			return nil, err
		}
	}
	if (p.spend == nil) == (p.remaining == nil) {
		return nil, errors.New("custom provider: set exactly one of the spend and remaining paths")
	}
	if p.remaining != nil && (p.budget != nil || p.budgetRem != nil) {
		return nil, errors.New("custom provider: budget paths go with a spend path, not remaining")
	}
	if p.budgetRem != nil && p.budget == nil {
		return nil, errors.New("custom provider: budget-remaining needs a budget path")
	}
	switch spec.Numbers {
	case "", "number", "string":
		p.numbers = spec.Numbers
	default:
		return nil, fmt.Errorf("custom provider: numbers %q: want number, string or empty (either)", spec.Numbers)
	}
	p.okValue = true
	if len(spec.OKValue) > 0 {
		if p.ok == nil {
			return nil, errors.New("custom provider: ok-value needs an ok path")
		}
		if err := json.Unmarshal(spec.OKValue, &p.okValue); err != nil {
			return nil, fmt.Errorf("custom provider: ok-value: %v", err)
		}
		p.okValue = normalise(p.okValue)
	}
	switch {
	case spec.Scale == 0:
		p.scale = 1
	case spec.Scale < 0 || spec.Scale != spec.Scale || spec.Scale > 1e12:
		return nil, fmt.Errorf("custom provider: scale %v: want a positive number", spec.Scale)
	}
	for _, s := range spec.ExhaustedStatuses {
		if s < 400 || s > 599 {
			return nil, fmt.Errorf("custom provider: exhausted-statuses: %d is not an error status", s)
		}
		p.exhausted[s] = true
	}
	if spec.ExhaustedMatch != "" {
		if len(spec.ExhaustedStatuses) == 0 {
			return nil, errors.New("custom provider: exhausted-match needs exhausted-statuses")
		}
		if p.exhaustedRe, err = regexp.Compile(spec.ExhaustedMatch); err != nil {
			return nil, fmt.Errorf("custom provider: exhausted-match: %v", err)
		}
	}
	if spec.MinInterval != "" {
		d, err := time.ParseDuration(spec.MinInterval)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("custom provider: min-interval %q: want a positive duration such as 1s", spec.MinInterval)
		}
		c.SetHostInterval(p.host, d)
	}
	return p, nil
}

func execTemplate(t *template.Template, k Key) (string, error) {
	var b bytes.Buffer
	if err := t.Execute(&b, struct{ Key string }{k.Secret}); err != nil {
		return "", err
	}
	return b.String(), nil
}

func (p *custom) Name() string { return "custom" }

// Spend asks once per key; a remaining figure (a balance) is shared by the
// keys of one account for the cycle, as the built-in balance providers do.
func (p *custom) Spend(ctx context.Context, k Key) (Result, error) {
	if p.remaining != nil {
		r, err := SharedSuccess(ctx, accountID("custom", p.rawURL, k), func(ctx context.Context) (Result, error) {
			r, err := p.spend1(ctx, k)
			if err == nil && r.Exhausted {
				// About this key, not the account: not shared.
				return r, errKeyAnswer
			}
			return r, err
		})
		if errors.Is(err, errKeyAnswer) {
			return r, nil
		}
		return r, err
	}
	return p.spend1(ctx, k)
}

// errKeyAnswer marks a clear answer about one key (exhausted), which Shared
// must not hand to the account's other keys.
var errKeyAnswer = errors.New("an answer about the key, not the account")

func (p *custom) spend1(ctx context.Context, k Key) (Result, error) {
	rawURL, err := execTemplate(p.url, k)
	if err != nil {
		return Result{}, secret.Redact(unclear("url template: %v", err), k.Secret)
	}
	rq := request{url: rawURL, key: k.Secret}
	if len(p.headers) > 0 {
		rq.header = http.Header{}
		for name, t := range p.headers {
			v, err := execTemplate(t, k)
			if err != nil {
				return Result{}, secret.Redact(unclear("header template: %v", err), k.Secret)
			}
			rq.header.Set(name, v)
		}
	}
	resp, err := p.c.do(ctx, rq)
	if err != nil {
		// The URL, as a network error quotes it, may hold the key in any
		// encoding the template chose: mask the whole rendered URL.
		if shown, e := execTemplate(p.url, Key{Secret: secret.Mask(k.Secret)}); e == nil {
			forms := []string{rawURL}
			if u, e := url.Parse(rawURL); e == nil {
				forms = append(forms, u.String())
			}
			for _, f := range forms {
				err = secret.RedactText(err, f, shown)
			}
		}
		return Result{}, secret.Redact(err, k.Secret)
	}
	r, err := p.parse(resp.Status, resp.Body)
	return r, secret.Redact(err, k.Secret)
}

// Parse reads one answer as the spec says; exported through ParseCustom
// for the fuzz target.
func (p *custom) parse(status int, body []byte) (Result, error) {
	if p.exhausted[status] && p.exhaustedBody(body) {
		return Result{Exhausted: true}, nil
	}
	if r, done, err := common(status, body); done {
		return r, err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return Result{}, unclear("malformed JSON: %v", err)
	}
	if dec.More() {
		return Result{}, unclear("malformed JSON: data after the answer")
	}
	if p.errP != nil {
		if v, ok := p.errP.lookup(doc); ok && truthy(v) {
			return Result{}, unclear("200 with an error: %.160q", body)
		}
	}
	if p.ok != nil {
		v, ok := p.ok.lookup(doc)
		if !ok || !sameJSON(normalise(v), p.okValue) {
			return Result{}, unclear("200 without the success flag: %.160q", body)
		}
	}
	var r Result
	if p.currency != nil {
		if v, ok := p.currency.lookup(doc); ok {
			if s, isStr := v.(string); isStr {
				r.Currency = s
			}
		}
	}
	if p.remaining != nil {
		v, unl, err := p.figure(doc, p.remaining, "remaining", true)
		if err != nil {
			return Result{}, err
		}
		if unl {
			return Result{NoReading: true, Currency: r.Currency}, nil
		}
		r.Remaining = &v
		return r, nil
	}
	s, unl, err := p.figure(doc, p.spend, "spend", false)
	if err != nil {
		return Result{}, err
	}
	if unl {
		return Result{NoReading: true, Currency: r.Currency}, nil
	}
	r.Spend = s
	if p.budget == nil {
		return r, nil
	}
	if v, ok := p.budget.lookup(doc); !ok || v == nil {
		return r, nil
	}
	b, unl, err := p.figure(doc, p.budget, "budget", false)
	if err != nil || unl {
		return r, err
	}
	r.Budget = &b
	if p.budgetRem != nil {
		if v, ok := p.budgetRem.lookup(doc); ok && v != nil {
			rem, _, err := p.figure(doc, p.budgetRem, "budget-remaining", true)
			if err != nil {
				return Result{}, err
			}
			used := max(b-rem, 0)
			if used != used || used > 1e300 {
				return Result{}, unclear("budget minus budget-remaining overflows")
			}
			r.BudgetSpend = &used
		}
	}
	return r, nil
}

// exhaustedBody: with exhausted-match, the body matches it; without, the
// body is a JSON object (the upstream's own error): an HTML block page from
// a CDN or WAF in front of the upstream is not a statement about the key
// (docs/providers.md, "A configured provider").
func (p *custom) exhaustedBody(body []byte) bool {
	if p.exhaustedRe != nil {
		return p.exhaustedRe.Match(body)
	}
	t := bytes.TrimSpace(body)
	return len(t) > 0 && t[0] == '{' && json.Valid(t)
}

// figure reads a number or numeric string at path, scaled; unl reports the
// unlimited sentinel. signed allows a negative figure (a debt).
func (p *custom) figure(doc any, path jsonPath, name string, signed bool) (v float64, unl bool, err error) {
	x, ok := path.lookup(doc)
	if !ok || x == nil {
		return 0, false, unclear("%s (%s) missing", name, strings.Join(path, "."))
	}
	var raw json.RawMessage
	switch t := x.(type) {
	case json.Number:
		if p.numbers == "string" {
			return 0, false, unclear("%s is a number, configured as a string", name)
		}
		raw = json.RawMessage(t.String())
	case string:
		if p.numbers == "number" {
			return 0, false, unclear("%s is a string, configured as a number", name)
		}
		raw, _ = json.Marshal(t)
	default:
		return 0, false, unclear("%s is not a number: %.40v", name, x)
	}
	f, err := flexNumber(raw)
	if err != nil {
		return 0, false, err
	}
	if u := p.unlimited; u != nil && (f == *u || (*u > 0 && f >= *u)) {
		return 0, true, nil
	}
	if !signed && f < 0 {
		return 0, false, unclear("negative %s %v", name, f)
	}
	f *= p.scale
	if f != f || f > 1e300 || f < -1e300 {
		return 0, false, unclear("%s out of range", name)
	}
	return f, false, nil
}

func truthy(v any) bool {
	switch t := v.(type) {
	case nil:
		return false
	case bool:
		return t
	case string:
		return t != ""
	case json.Number:
		f, err := t.Float64()
		return err != nil || f != 0
	}
	return true
}

// normalise makes numbers comparable whichever decoder read them.
func normalise(v any) any {
	switch t := v.(type) {
	case json.Number:
		f, err := t.Float64()
		if err == nil {
			return f
		}
	case float64:
		return t
	}
	return v
}

func sameJSON(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}

// ParseCustom reads one answer as spec says (the fuzz target's entry).
func ParseCustom(spec CustomSpec, status int, body []byte) (Result, error) {
	p, err := NewCustom(spec, nil)
	if err != nil {
		return Result{}, err
	}
	return p.(*custom).parse(status, body)
}
