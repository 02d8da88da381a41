// Package spend asks upstream providers how much a key has spent.
package spend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/spendchecker/spendchecker/rotation/secret"
)

// ErrUnauthorized means the upstream rejected the key (upstream.KeyRejected:
// a 401, 402 or 403 with the provider's JSON error, or a JSON error naming
// the key invalid or revoked): it is dead.
var ErrUnauthorized = errors.New("upstream rejected the key")

// UnclearError is an answer that is not a clear spend figure: the key must
// not be rotated on it, only counted as a failed check.
type UnclearError struct{ Reason string }

func (e *UnclearError) Error() string { return "unclear upstream answer: " + e.Reason }

func unclear(format string, a ...any) error { return &UnclearError{Reason: fmt.Sprintf(format, a...)} }

// RetryAfterError: the upstream asked not to ask about this key again
// before Until (a 429 or 503 with Retry-After longer than the client waits,
// or its last attempt). The checker plans the key's next check no earlier.
type RetryAfterError struct {
	Until time.Time
	Err   error
}

func (e *RetryAfterError) Error() string {
	return fmt.Sprintf("upstream asks to retry this key after %s: %v", e.Until.UTC().Format(time.RFC3339), e.Err)
}
func (e *RetryAfterError) Unwrap() error { return e.Err }

// HostBackoffError: requests to the host failed and it is left alone until
// Until; no request was sent.
type HostBackoffError struct {
	Host     string
	Until    time.Time
	Failures int
}

func (e *HostBackoffError) Error() string {
	return fmt.Sprintf("upstream %s failing (%d in a row); backing off until %s", e.Host, e.Failures, e.Until.UTC().Format(time.RFC3339))
}

// DefaultRequestTimeout bounds one upstream request when
// Client.RequestTimeout is unset.
const DefaultRequestTimeout = 15 * time.Second

// Client performs upstream GETs with a per-request timeout, retries with
// exponential backoff and full jitter on 429, 5xx and network errors
// (honouring Retry-After), a cap on the body size, an optional global rate
// limit and an optional rate per upstream host. It remembers, across
// cycles, a Retry-After per key and a backoff per host while the host
// fails (docs/reliability.md, Reliability). Use one Client per process, by pointer.
type Client struct {
	HTTP           *http.Client
	RequestTimeout time.Duration // per attempt; default DefaultRequestTimeout
	MaxAttempts    int           // default 4
	BaseBackoff    time.Duration // default 250 ms
	MaxBackoff     time.Duration // longest wait between attempts, Retry-After included; default 30 s
	MaxBody        int64         // default 1 MiB
	Limiter        *rate.Limiter // nil: no global rate limit
	// HostRate is the most requests per second to one upstream host (0:
	// none); HostBurst its burst (default 1).
	HostRate  float64
	HostBurst int
	// HostBackoff is the first pause of a host after a request to it failed
	// for good (default 1 s); it doubles while the host keeps failing, up to
	// MaxHostBackoff (default 5 min).
	HostBackoff    time.Duration
	MaxHostBackoff time.Duration
	// HostFailKeys is how many different keys must fail in a row (429, 5xx
	// or network errors, no success between) before the host is paused
	// (default 3), and again after each pause, for twice as long: one key
	// the upstream cannot answer must not pause its neighbours (docs/reliability.md,
	// Reliability).
	HostFailKeys int
	// MaxRetryAfter caps a Retry-After remembered for a key and reported in
	// *RetryAfterError (default 30 min; the daemon sets
	// --max-check-interval): a Retry-After of a year must not park a key.
	MaxRetryAfter time.Duration
	// Now and Wait are the clock; tests replace them to run without
	// sleeping. Wait sleeps between attempts and for the rate limits.
	Now  func() time.Time
	Wait func(ctx context.Context, d time.Duration) error

	mu    sync.Mutex
	hosts map[string]*hostState
	keys  map[string]time.Time // a key's Retry-After, by secret; in memory only
}

// settings are the Client's knobs with defaults filled in.
type settings struct {
	http                                                *http.Client
	timeout, base, maxBackoff, hostBackoff, maxHostBack time.Duration
	attempts, failKeys                                  int
	maxBody                                             int64
	maxRetryAfter                                       time.Duration
}

func (c *Client) settings() settings {
	d := settings{http: c.HTTP, timeout: c.RequestTimeout, attempts: c.MaxAttempts, base: c.BaseBackoff,
		maxBackoff: c.MaxBackoff, maxBody: c.MaxBody, hostBackoff: c.HostBackoff, maxHostBack: c.MaxHostBackoff,
		failKeys: c.HostFailKeys, maxRetryAfter: c.MaxRetryAfter}
	if d.http == nil {
		d.http = http.DefaultClient
	}
	// Never follow a redirect to another host (or down to http): Go drops
	// the bearer token there, and the other host's 401 would look like a
	// dead key.
	hc := *d.http
	hc.CheckRedirect = refuseCrossHost(d.http.CheckRedirect)
	d.http = &hc
	if d.timeout <= 0 {
		d.timeout = DefaultRequestTimeout
	}
	if d.attempts <= 0 {
		d.attempts = 4
	}
	if d.base <= 0 {
		d.base = 250 * time.Millisecond
	}
	if d.maxBackoff <= 0 {
		d.maxBackoff = 30 * time.Second
	}
	if d.maxBody <= 0 {
		d.maxBody = 1 << 20
	}
	if d.hostBackoff <= 0 {
		d.hostBackoff = time.Second
	}
	if d.maxHostBack <= 0 {
		d.maxHostBack = 5 * time.Minute
	}
	if d.failKeys <= 0 {
		d.failKeys = 3
	}
	if d.maxRetryAfter <= 0 {
		d.maxRetryAfter = 30 * time.Minute
	}
	return d
}

// errRedirect marks a refused redirect.
var errRedirect = errors.New("redirect to another host refused")

func refuseCrossHost(next func(*http.Request, []*http.Request) error) func(*http.Request, []*http.Request) error {
	return func(req *http.Request, via []*http.Request) error {
		first := via[0].URL
		if req.URL.Host != first.Host || (first.Scheme == "https" && req.URL.Scheme != "https") {
			return fmt.Errorf("%w: %s -> %s://%s", errRedirect, first.Host, req.URL.Scheme, req.URL.Host)
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
}

func (c *Client) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Client) wait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	if c.Wait != nil {
		return c.Wait(ctx, d)
	}
	return sleep(ctx, d)
}

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

// Response is a final upstream answer.
type Response struct {
	Status int
	Body   []byte
}

// Get fetches url with the key as bearer token. It returns the first answer
// that is not worth retrying, or the last error once attempts run out. It
// sends nothing for a key whose Retry-After has not passed
// (*RetryAfterError) or to a host backing off (*HostBackoffError).
func (c *Client) Get(ctx context.Context, rawURL, apiKey string) (Response, error) {
	return c.get(ctx, rawURL, apiKey, 0)
}

// get is Get with a body cap of its own (0: the Client's MaxBody), for an
// endpoint whose answers are larger by nature.
func (c *Client) get(ctx context.Context, rawURL, apiKey string, maxBody int64) (Response, error) {
	return c.do(ctx, request{url: rawURL, key: apiKey, maxBody: maxBody})
}

// request is one upstream GET. key is the secret it is about (the
// Retry-After memory and the host's failure count go by it); header, when
// not nil, replaces the bearer token (a configured provider's headers).
type request struct {
	url     string
	key     string
	header  http.Header
	maxBody int64
	// report: a batch report, asked with one credential for every key it
	// covers. When it fails for good the host's failure counts as
	// HostFailKeys keys': the host pauses, doubling while it keeps failing,
	// as it would once that many keys failed (docs/providers.md, "Batch reports").
	report bool
}

// getReport is get for a batch report (hdr nil: bearer; else the
// credential goes in hdr, as Anthropic's x-api-key). cred still names the
// credential for the Retry-After memory and the host's failure count.
func (c *Client) getReport(ctx context.Context, rawURL, cred string, hdr http.Header, maxBody int64) (Response, error) {
	return c.do(ctx, request{url: rawURL, key: cred, header: hdr, maxBody: maxBody, report: true})
}

// do runs one request (do1) and masks the key in what it returns: an
// upstream may echo the key in its answer, which parsers quote into errors
// cut at a length that could split the key (docs/providers.md), and a
// network error carries the request URL, key included when a configured
// provider puts it there.
func (c *Client) do(ctx context.Context, rq request) (Response, error) {
	resp, err := c.do1(ctx, rq)
	if err != nil {
		return resp, secret.Redact(err, rq.key)
	}
	if len(rq.key) > 12 && secret.MayHold(resp.Body, rq.key) {
		// Shorter keys are masked whole ("…"); a short string could also
		// be a figure of the answer.
		if b := secret.RedactString(string(resp.Body), rq.key); len(b) != len(resp.Body) || b != string(resp.Body) {
			resp.Body = []byte(b)
		}
	}
	return resp, nil
}

func (c *Client) do1(ctx context.Context, rq request) (Response, error) {
	rawURL, apiKey := rq.url, rq.key
	d := c.settings()
	d.maxBody = max(d.maxBody, rq.maxBody)
	u, err := url.Parse(rawURL)
	if err != nil {
		return Response{}, unclear("bad request URL: %v", err)
	}
	host := hostKey(u)
	if until, ok := c.keyNotBefore(apiKey); ok {
		return Response{}, &RetryAfterError{Until: until, Err: errors.New("still inside the upstream's Retry-After")}
	}
	var lastErr error
	for attempt := 1; ; attempt++ {
		if err := c.hostGate(host); err != nil {
			return Response{}, err
		}
		if err := c.limit(ctx, c.Limiter); err != nil {
			return Response{}, err
		}
		if err := c.limit(ctx, c.hostLimiter(host)); err != nil {
			return Response{}, err
		}
		if err := c.limit(ctx, c.hostOwnLimiter(host)); err != nil {
			return Response{}, err
		}
		resp, retryAfter, err := d.once(ctx, rq, c.now())
		if err == nil && retryable(resp.Status) && aboutKey(resp.Status, resp.Body) {
			// Some LiteLLM deployments refuse an over-budget key with 429,
			// and Factory its used-up quota whatever the status: an answer
			// about the key, not a rate limit or an outage.
			c.hostSucceeded(host)
			return resp, nil
		}
		if err == nil && !retryable(resp.Status) {
			c.hostSucceeded(host)
			return resp, nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return Response{}, ctx.Err()
			}
			var uc *UnclearError
			if errors.As(err, &uc) {
				return Response{}, err
			}
			if errors.Is(err, errRedirect) {
				return Response{}, &UnclearError{Reason: err.Error()}
			}
			lastErr = err
		} else {
			lastErr = fmt.Errorf("upstream answered %d", resp.Status)
		}
		// Every failed attempt (a 429 too: a host answering 429 to every key
		// is as unavailable as one answering 503) counts against the host;
		// the host pauses once several keys fail in a row.
		if retryAfter > d.maxBackoff || (attempt >= d.attempts && retryAfter > 0) {
			until := c.now().Add(min(retryAfter, d.maxRetryAfter))
			c.hostFailed(host, apiKey, c.now().Add(min(retryAfter, d.maxHostBack)), rq.report)
			c.setKeyNotBefore(apiKey, until)
			return Response{}, &RetryAfterError{Until: until, Err: fmt.Errorf("after %d attempts: %w", attempt, lastErr)}
		}
		c.hostFailed(host, apiKey, time.Time{}, rq.report && attempt >= d.attempts)
		if attempt >= d.attempts {
			return Response{}, fmt.Errorf("after %d attempts: %w", attempt, lastErr)
		}
		wait := backoff(d.base, d.maxBackoff, attempt)
		if retryAfter > 0 {
			wait = retryAfter
		}
		if err := c.wait(ctx, wait); err != nil {
			return Response{}, err
		}
	}
}

func (d settings) once(ctx context.Context, rq request, now time.Time) (Response, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rq.url, nil)
	if err != nil {
		return Response{}, 0, unclear("bad request URL: %v", err)
	}
	req.Header.Set("Accept", "application/json")
	if rq.header == nil {
		req.Header.Set("Authorization", "Bearer "+rq.key)
	}
	for k, v := range rq.header {
		req.Header[k] = v
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return Response{}, 0, fmt.Errorf("request: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, d.maxBody+1))
	if err != nil {
		return Response{}, 0, fmt.Errorf("read body: %w", err)
	}
	if int64(len(body)) > d.maxBody {
		return Response{}, 0, unclear("body larger than %d bytes", d.maxBody)
	}
	return Response{Status: resp.StatusCode, Body: body}, retryAfter(resp.Header.Get("Retry-After"), now), nil
}

func retryable(status int) bool {
	return status == http.StatusTooManyRequests || status >= 500
}

// backoff is exponential with full jitter: uniform in [0, base·2^(n-1)].
func backoff(base, max time.Duration, attempt int) time.Duration {
	d := base << min(attempt-1, 20)
	if d > max || d <= 0 {
		d = max
	}
	return time.Duration(rand.Int64N(int64(d) + 1))
}

// retryAfter reads a Retry-After header: delay-seconds or an HTTP date.
func retryAfter(h string, now time.Time) time.Duration {
	if h == "" {
		return 0
	}
	// A year in a header must neither overflow a Duration nor be believed:
	// callers cap what they wait (docs/reliability.md, Reliability).
	const most = 24 * time.Hour
	if s, err := strconv.ParseInt(h, 10, 64); err == nil && s >= 0 {
		return min(time.Duration(min(s, int64(most/time.Second)))*time.Second, most)
	}
	if t, err := http.ParseTime(h); err == nil && t.After(now) {
		return min(t.Sub(now), most)
	}
	return 0
}
