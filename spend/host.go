package spend

// The Client's memory per upstream host and per key: a host's pace and its
// backoff while it fails, a key's Retry-After (docs/reliability.md, Reliability).

import (
	"context"
	"errors"
	"net"
	"net/url"
	"strings"
	"time"

	"golang.org/x/time/rate"
)

type hostState struct {
	lim *rate.Limiter
	// own is a provider's own pace for the host (SetHostInterval), on top
	// of HostRate: one-api and new-api limit requests per client IP.
	own       *rate.Limiter
	ownEvery  time.Duration
	failures  int // pauses in a row
	notBefore time.Time
	// failedKeys are the keys that failed since the last success, while
	// the host is not yet paused.
	failedKeys map[string]bool
}

// hostKey is the name a host's pace and failures go by: one-api and new-api
// limit per client IP, so spellings of one server ("API.example.com",
// "api.example.com.", "api.example.com:443" over https) must share one
// pace (docs/providers.md). Lowercase, no trailing dot, no default port.
func hostKey(u *url.URL) string {
	h := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	port := u.Port()
	if (port == "443" && u.Scheme != "http") || (port == "80" && u.Scheme != "https") {
		port = ""
	}
	if port == "" {
		if strings.Contains(h, ":") {
			return "[" + h + "]"
		}
		return h
	}
	return net.JoinHostPort(h, port)
}

// SetHostInterval paces the requests to host to at most one per every, on
// top of HostRate: a provider whose upstream limits requests per client IP
// sets its own pace (docs/providers.md). A second call keeps the slower.
func (c *Client) SetHostInterval(host string, every time.Duration) {
	if every <= 0 {
		return
	}
	host = strings.ToLower(host) // callers in this package pass hostKey's

	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.host(host)
	if st.ownEvery >= every {
		return
	}
	st.ownEvery, st.own = every, rate.NewLimiter(rate.Every(every), 1)
}

// limit waits for a token of lim on the injected clock.
func (c *Client) limit(ctx context.Context, lim *rate.Limiter) error {
	if lim == nil {
		return nil
	}
	now := c.now()
	r := lim.ReserveN(now, 1)
	if !r.OK() {
		return errors.New("rate limit: burst too small")
	}
	if err := c.wait(ctx, r.DelayFrom(now)); err != nil {
		r.CancelAt(now)
		return err
	}
	return nil
}

func (c *Client) host(h string) *hostState {
	if c.hosts == nil {
		c.hosts = map[string]*hostState{}
	}
	st := c.hosts[h]
	if st == nil {
		st = &hostState{}
		if c.HostRate > 0 {
			st.lim = rate.NewLimiter(rate.Limit(c.HostRate), max(1, c.HostBurst))
		}
		c.hosts[h] = st
	}
	return st
}

func (c *Client) hostLimiter(h string) *rate.Limiter {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.host(h).lim
}

func (c *Client) hostOwnLimiter(h string) *rate.Limiter {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.host(h).own
}

func (c *Client) hostGate(h string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.host(h)
	if c.now().Before(st.notBefore) {
		return &HostBackoffError{Host: h, Until: st.notBefore, Failures: st.failures}
	}
	return nil
}

func (c *Client) hostSucceeded(h string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.host(h)
	st.failures, st.notBefore, st.failedKeys = 0, time.Time{}, nil
}

// hostFailed records a failed request for key. The host pauses once
// HostFailKeys different keys failed with no success between, the pause
// doubling with each pause in a row (failures), so a poisoned key probing
// first after a pause cannot pause the host on its own again; failures
// during a pause (requests in flight when the host went down) count once.
// until (a Retry-After, capped by the caller) lengthens the pause. whole
// (a batch report failed for good) counts as HostFailKeys keys.
func (c *Client) hostFailed(h, key string, until time.Time, whole bool) {
	d := c.settings()
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.host(h)
	now := c.now()
	if !now.Before(st.notBefore) {
		if st.failedKeys == nil {
			st.failedKeys = map[string]bool{}
		}
		st.failedKeys[key] = true
		if len(st.failedKeys) < d.failKeys && !whole {
			return
		}
		st.failedKeys = nil
		st.failures++
		pause := d.hostBackoff << min(st.failures-1, 20)
		if pause > d.maxHostBack || pause <= 0 {
			pause = d.maxHostBack
		}
		st.notBefore = now.Add(pause)
	}
	if until.After(st.notBefore) {
		st.notBefore = until
	}
}

// maxRememberedKeys bounds the Retry-After memory.
const maxRememberedKeys = 100_000

func (c *Client) keyNotBefore(secret string) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	until, ok := c.keys[secret]
	if !ok {
		return time.Time{}, false
	}
	if !c.now().Before(until) {
		delete(c.keys, secret)
		return time.Time{}, false
	}
	return until, true
}

func (c *Client) setKeyNotBefore(secret string, until time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.keys == nil {
		c.keys = map[string]time.Time{}
	}
	if len(c.keys) >= maxRememberedKeys {
		now := c.now()
		for k, t := range c.keys {
			if !now.Before(t) {
				delete(c.keys, k)
			}
		}
		if len(c.keys) >= maxRememberedKeys {
			return // the key document's plan still carries it
		}
	}
	c.keys[secret] = until
}
