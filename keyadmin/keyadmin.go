// Package keyadmin talks to the key-management APIs of the upstreams that
// have one: OpenRouter's management (provisioning) key API under
// /api/v1/keys, and a LiteLLM proxy's /key/* endpoints with its master key
// (docs/refill.md). It creates keys, finds them by name, disables,
// re-enables, deletes and looks them up. No error it returns carries the
// management key or a key's secret.
package keyadmin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spendchecker/spendchecker/rotation/secret"
)

// The management APIs.
const (
	OpenRouter = "openrouter"
	LiteLLM    = "litellm"
)

// For names the management API of a spend provider's upstream; "" when
// it has none the daemon can use.
func For(provider string) string {
	switch provider {
	case "openrouter", "openrouter-keys":
		return OpenRouter
	case "litellm":
		return LiteLLM
	}
	return ""
}

// Key is a key as the management API shows it.
type Key struct {
	// ID is the upstream's id of the key: OpenRouter's hash, LiteLLM's
	// token (the hex SHA-256 of the key).
	ID   string
	Name string
	// Secret is the key itself: only in a create's answer, "" elsewhere.
	Secret   string
	Disabled bool
}

var (
	// ErrNotFound: the upstream does not know the key (deleted, another
	// account, a wrong id).
	ErrNotFound = errors.New("no such key upstream")
	// ErrNoSecret: a create succeeded but its answer carries no key; the
	// returned Key has the id when the answer named one.
	ErrNoSecret = errors.New("the upstream created a key but its answer carries no secret")
)

// Error is a failed request: an answer other than success, or none.
type Error struct {
	Op string
	// Status is the HTTP status; 0 when no answer arrived (network error,
	// timeout).
	Status int
	// RetryAfter is what the upstream asked to wait (429, 503), 0 if
	// nothing.
	RetryAfter time.Duration
	// Msg says what went wrong, masked.
	Msg string
}

func (e *Error) Error() string {
	s := "key admin " + e.Op + ": "
	if e.Status != 0 {
		s += "HTTP " + strconv.Itoa(e.Status) + ": "
	}
	s += e.Msg
	if e.RetryAfter > 0 {
		s += " (retry after " + e.RetryAfter.String() + ")"
	}
	return s
}

// Temporary reports whether the same request may succeed later: no answer,
// 408, 429 or a 5xx.
func (e *Error) Temporary() bool {
	return e.Status == 0 || e.Status == http.StatusRequestTimeout || e.Status == http.StatusTooManyRequests || e.Status >= 500
}

// RetryAfter returns the wait an upstream asked for in err, 0 if none.
func RetryAfter(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}

// Config configures a Client.
type Config struct {
	// Kind is OpenRouter or LiteLLM.
	Kind string
	// BaseURL is the upstream's base URL ("" for OpenRouter's public one).
	BaseURL string
	// AdminKey is OpenRouter's management key or LiteLLM's master key.
	AdminKey string
	HTTP     *http.Client
	// Timeout bounds one request (default 15 s).
	Timeout time.Duration
	// Attempts is how often an idempotent request (list, look up,
	// disable, enable, delete) is tried (default 3). A create is sent once.
	Attempts int
	// MaxRetryAfter is the longest Retry-After waited in place (default
	// 30 s); a longer one fails the request with Error.RetryAfter set.
	MaxRetryAfter time.Duration
	// Wait sleeps between attempts (default: time.Sleep honouring ctx).
	Wait func(ctx context.Context, d time.Duration) error
}

// Client is one pool's management API.
type Client struct {
	cfg  Config
	base string
	http *http.Client
}

// New checks cfg and returns a Client.
func New(cfg Config) (*Client, error) {
	if cfg.Kind != OpenRouter && cfg.Kind != LiteLLM {
		return nil, fmt.Errorf("keyadmin: unknown management API %q (known: %s, %s)", cfg.Kind, OpenRouter, LiteLLM)
	}
	if strings.TrimSpace(cfg.AdminKey) == "" {
		return nil, errors.New("keyadmin: no management key")
	}
	if cfg.BaseURL == "" && cfg.Kind == OpenRouter {
		cfg.BaseURL = "https://openrouter.ai"
	}
	u, err := url.Parse(cfg.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("keyadmin: URL %q is not an http(s) URL", cfg.BaseURL)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 15 * time.Second
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = 3
	}
	if cfg.MaxRetryAfter <= 0 {
		cfg.MaxRetryAfter = 30 * time.Second
	}
	if cfg.Wait == nil {
		cfg.Wait = sleep
	}
	hc := http.DefaultClient
	if cfg.HTTP != nil {
		hc = cfg.HTTP
	}
	// No redirects: a management request is not replayed elsewhere, and
	// another host must never see the management key.
	c := *hc
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &Client{cfg: cfg, base: strings.TrimRight(cfg.BaseURL, "/"), http: &c}, nil
}

// Kind returns the management API's name.
func (c *Client) Kind() string { return c.cfg.Kind }

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// maxBody caps one answer: an OpenRouter list page of 100 keys is ~60 KB.
const maxBody = 4 << 20

// secretLike matches what looks like an API key in an upstream's message,
// which is masked whatever key it is.
var secretLike = regexp.MustCompile(`(sk|pk|rk)-[A-Za-z0-9_\-]{8,}`)

// mask hides the management key, the given secrets and anything that looks
// like a key in s.
func (c *Client) mask(s string, secrets ...string) string {
	s = secret.RedactString(s, c.cfg.AdminKey)
	for _, sec := range secrets {
		s = secret.RedactString(s, sec)
	}
	return secretLike.ReplaceAllStringFunc(s, secret.Mask)
}

// answer is one upstream answer.
type answer struct {
	status int
	body   []byte
}

// call sends one request, retried (when idempotent) on temporary
// failures. secrets are masked in every error besides the admin key.
func (c *Client) call(ctx context.Context, op string, idempotent bool, method, path string, in any, secrets ...string) (answer, error) {
	var payload []byte
	if in != nil {
		var err error
		if payload, err = json.Marshal(in); err != nil {
			return answer{}, &Error{Op: op, Msg: "encode request: " + err.Error()}
		}
	}
	attempts := 1
	if idempotent {
		attempts = c.cfg.Attempts
	}
	for try := 1; ; try++ {
		a, err := c.once(ctx, op, method, path, payload, secrets)
		var e *Error
		if err == nil || !idempotent || try >= attempts || !errors.As(err, &e) || !e.Temporary() || ctx.Err() != nil {
			return a, err
		}
		if e.RetryAfter > c.cfg.MaxRetryAfter {
			return a, err
		}
		// Exponential with full jitter, at least what the upstream asked.
		d := max(e.RetryAfter, time.Duration(rand.Int64N(int64(500*time.Millisecond)<<min(try-1, 5)+1)))
		if werr := c.cfg.Wait(ctx, d); werr != nil {
			return a, err
		}
	}
}

func (c *Client) once(ctx context.Context, op, method, path string, payload []byte, secrets []string) (answer, error) {
	rctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	var body io.Reader
	if payload != nil {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(rctx, method, c.base+path, body)
	if err != nil {
		return answer{}, &Error{Op: op, Msg: c.mask(err.Error(), secrets...)}
	}
	req.Header.Set("Authorization", "Bearer "+c.cfg.AdminKey)
	req.Header.Set("Accept", "application/json")
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return answer{}, &Error{Op: op, Msg: c.mask(err.Error(), secrets...)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return answer{}, &Error{Op: op, Msg: "read answer: " + c.mask(err.Error(), secrets...)}
	}
	if len(b) > maxBody {
		return answer{}, &Error{Op: op, Status: resp.StatusCode, Msg: fmt.Sprintf("answer larger than %d bytes", maxBody)}
	}
	if resp.StatusCode/100 == 2 {
		return answer{status: resp.StatusCode, body: b}, nil
	}
	// Masked before message cuts it: a secret across the cut would
	// otherwise leave its start in the error.
	masked := secret.RedactBody(b, c.cfg.AdminKey)
	for _, sec := range secrets {
		masked = secret.RedactBody(masked, sec)
	}
	e := &Error{Op: op, Status: resp.StatusCode, RetryAfter: retryAfter(resp.Header.Get("Retry-After"), time.Now()), Msg: c.mask(message(masked), secrets...)}
	if resp.StatusCode == http.StatusNotFound {
		return answer{status: resp.StatusCode, body: b}, fmt.Errorf("%w: %w", ErrNotFound, e)
	}
	return answer{status: resp.StatusCode, body: b}, e
}

// message is the readable part of an error answer: error.message when the
// body has one, else its first 200 bytes.
func message(body []byte) string {
	var v struct {
		Error *struct {
			Message any `json:"message"`
		} `json:"error"`
		Detail any `json:"detail"`
	}
	if json.Unmarshal(body, &v) == nil {
		if v.Error != nil && v.Error.Message != nil {
			return fmt.Sprint(v.Error.Message)
		}
		if v.Detail != nil {
			return fmt.Sprint(v.Detail)
		}
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	if s == "" {
		s = "(empty answer)"
	}
	return s
}

// retryAfter reads a Retry-After header (seconds or an HTTP date), capped
// at a day.
func retryAfter(h string, now time.Time) time.Duration {
	if h == "" {
		return 0
	}
	const most = 24 * time.Hour
	if s, err := strconv.ParseInt(strings.TrimSpace(h), 10, 64); err == nil && s >= 0 {
		return min(time.Duration(min(s, int64(most/time.Second)))*time.Second, most)
	} else if errors.Is(err, strconv.ErrRange) && !strings.HasPrefix(strings.TrimSpace(h), "-") {
		return most // more seconds than an int64 holds: the longest wait, not none
	}
	if t, err := http.ParseTime(h); err == nil && t.After(now) {
		return min(t.Sub(now), most)
	}
	return 0
}

// unclear is a success answer the client cannot read.
func unclear(op, format string, a ...any) error {
	return &Error{Op: op, Msg: "unreadable answer: " + fmt.Sprintf(format, a...)}
}

// Create asks the upstream for one new key named name with a USD limit.
// secret proposes the key where the upstream takes one (LiteLLM; see
// ProposesSecret), "" to let it choose. It is sent once, never retried: a
// failed create may still have created the key, which FindByName finds.
// An answer without the key returns ErrNoSecret and the Key's id when the
// answer has one.
func (c *Client) Create(ctx context.Context, name string, limit float64, secret string) (Key, error) {
	if c.cfg.Kind == OpenRouter {
		return c.createOpenRouter(ctx, name, limit)
	}
	return c.createLiteLLM(ctx, name, limit, secret)
}

// FindByName lists the keys named name (OpenRouter's name, LiteLLM's
// key_alias), disabled ones included, reading every page.
func (c *Client) FindByName(ctx context.Context, name string) ([]Key, error) {
	if c.cfg.Kind == OpenRouter {
		return c.findOpenRouter(ctx, name)
	}
	return c.findLiteLLM(ctx, name)
}

// Disable disables the key with this id; disabling a disabled key
// succeeds. ErrNotFound when the upstream does not know it.
func (c *Client) Disable(ctx context.Context, id string) error { return c.setDisabled(ctx, id, true) }

// Enable re-enables the key with this id.
func (c *Client) Enable(ctx context.Context, id string) error { return c.setDisabled(ctx, id, false) }

// Delete deletes the key with this id. ErrNotFound when the upstream does
// not know it (deleted before).
func (c *Client) Delete(ctx context.Context, id string) error {
	if c.cfg.Kind == OpenRouter {
		return c.deleteOpenRouter(ctx, id)
	}
	return c.deleteLiteLLM(ctx, id)
}

// Lookup reads one key by id, changing nothing. ErrNotFound when the
// upstream does not know it.
func (c *Client) Lookup(ctx context.Context, id string) (Key, error) {
	if c.cfg.Kind == OpenRouter {
		return c.lookupOpenRouter(ctx, id)
	}
	return c.lookupLiteLLM(ctx, id)
}

func (c *Client) setDisabled(ctx context.Context, id string, disabled bool) error {
	if id == "" {
		return fmt.Errorf("%w: empty id", ErrNotFound)
	}
	if c.cfg.Kind == OpenRouter {
		return c.setDisabledOpenRouter(ctx, id, disabled)
	}
	return c.setDisabledLiteLLM(ctx, id, disabled)
}

// IDOf is the upstream's id of the key with this secret when it derives
// from the secret (LiteLLM's token); "" when it does not (OpenRouter's
// hash is known only from the management API).
func (c *Client) IDOf(secret string) string {
	if c.cfg.Kind == LiteLLM && secret != "" {
		return liteLLMToken(secret)
	}
	return ""
}

// ProposesSecret reports whether the upstream takes the new key's secret
// from the caller (LiteLLM's key), so it can be recorded before the create
// and a key created under a crash is recovered whole.
func (c *Client) ProposesSecret() bool { return c.cfg.Kind == LiteLLM }
