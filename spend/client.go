// Package spend asks upstream providers how much a key has spent.
package spend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"golang.org/x/time/rate"
)

// ErrUnauthorized means the upstream rejected the key (401/403): it is dead.
var ErrUnauthorized = errors.New("upstream rejected the key")

// UnclearError is an answer that is not a clear spend figure: the key must
// not be rotated on it, only counted as a failed check.
type UnclearError struct{ Reason string }

func (e *UnclearError) Error() string { return "unclear upstream answer: " + e.Reason }

func unclear(format string, a ...any) error { return &UnclearError{Reason: fmt.Sprintf(format, a...)} }

// Client performs upstream GETs with a per-request timeout, retries with
// exponential backoff and full jitter on 429, 5xx and network errors
// (honouring Retry-After), a cap on the body size and an optional rate limit.
type Client struct {
	HTTP           *http.Client
	RequestTimeout time.Duration // per attempt; default 15 s
	MaxAttempts    int           // default 4
	BaseBackoff    time.Duration // default 250 ms
	MaxBackoff     time.Duration // longest wait between attempts, Retry-After included; default 30 s
	MaxBody        int64         // default 1 MiB
	Limiter        *rate.Limiter // nil: no global rate limit
	// Wait sleeps between attempts; tests replace it to run without sleeping.
	Wait func(ctx context.Context, d time.Duration) error
}

func (c *Client) defaults() Client {
	d := *c
	if d.HTTP == nil {
		d.HTTP = http.DefaultClient
	}
	if d.RequestTimeout <= 0 {
		d.RequestTimeout = 15 * time.Second
	}
	if d.MaxAttempts <= 0 {
		d.MaxAttempts = 4
	}
	if d.BaseBackoff <= 0 {
		d.BaseBackoff = 250 * time.Millisecond
	}
	if d.MaxBackoff <= 0 {
		d.MaxBackoff = 30 * time.Second
	}
	if d.MaxBody <= 0 {
		d.MaxBody = 1 << 20
	}
	if d.Wait == nil {
		d.Wait = sleep
	}
	return d
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
// that is not worth retrying, or the last error once attempts run out.
func (c *Client) Get(ctx context.Context, url, apiKey string) (Response, error) {
	d := c.defaults()
	var lastErr error
	for attempt := 1; ; attempt++ {
		if d.Limiter != nil {
			if err := d.Limiter.Wait(ctx); err != nil {
				return Response{}, err
			}
		}
		resp, retryAfter, err := d.once(ctx, url, apiKey)
		if err == nil && !retryable(resp.Status) {
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
			lastErr = err
		} else {
			lastErr = fmt.Errorf("upstream answered %d", resp.Status)
		}
		if attempt >= d.MaxAttempts {
			return Response{}, fmt.Errorf("after %d attempts: %w", attempt, lastErr)
		}
		wait := backoff(d.BaseBackoff, d.MaxBackoff, attempt)
		if retryAfter > 0 {
			if retryAfter > d.MaxBackoff {
				return Response{}, fmt.Errorf("upstream asks to retry after %s, longer than %s: %w", retryAfter, d.MaxBackoff, lastErr)
			}
			wait = retryAfter
		}
		if err := d.Wait(ctx, wait); err != nil {
			return Response{}, err
		}
	}
}

func (d *Client) once(ctx context.Context, url, apiKey string) (Response, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, d.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Response{}, 0, unclear("bad request URL: %v", err)
	}
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Accept", "application/json")
	resp, err := d.HTTP.Do(req)
	if err != nil {
		return Response{}, 0, fmt.Errorf("request: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, d.MaxBody+1))
	if err != nil {
		return Response{}, 0, fmt.Errorf("read body: %w", err)
	}
	if int64(len(body)) > d.MaxBody {
		return Response{}, 0, unclear("body larger than %d bytes", d.MaxBody)
	}
	return Response{Status: resp.StatusCode, Body: body}, retryAfter(resp.Header.Get("Retry-After"), time.Now()), nil
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
	if s, err := strconv.Atoi(h); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
