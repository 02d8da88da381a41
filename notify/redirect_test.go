package notify

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/internal/mongotest"
)

// hookSecret is the secret part of the webhook URLs below, as Slack puts
// it in the path (…/services/T/B/SECRET).
const hookSecret = "HOOKSECRET0123456789"

// host is an httptest server that records what every request carried.
type host struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []string // "METHOD path" per request
	hdrs []http.Header
}

func newHost(t *testing.T, answer http.HandlerFunc) *host {
	h := &host{}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.reqs = append(h.reqs, r.Method+" "+r.URL.Path)
		h.hdrs = append(h.hdrs, r.Header.Clone())
		h.mu.Unlock()
		answer(w, r)
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *host) requests() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.reqs...)
}

// leaks lists the headers that carry the webhook's secret.
func (h *host) leaks() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, hd := range h.hdrs {
		for k, vs := range hd {
			for _, v := range vs {
				if strings.Contains(v, hookSecret) {
					out = append(out, k+": "+v)
				}
			}
		}
	}
	return out
}

func redirectTo(code int, location func() string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Location", location())
		w.WriteHeader(code)
		// Some servers echo where they were asked and where they send: the
		// log line quotes the body, so it must not carry the secret either.
		fmt.Fprintf(w, "Moved from /services/T0/B0/%s to %s", hookSecret, location())
	}
}

// No redirect is followed: a 3xx is a failed delivery (not retried, never
// recorded sent), the host it points to gets nothing, no request carries
// the webhook URL in a header (Referer included), and the log names the
// redirect by scheme and host only.
func TestRedirectsAreNotFollowed(t *testing.T) {
	coll := mongotest.New(t).Database.Collection(Collection)
	for _, tc := range []struct {
		name string
		// build returns the webhook and the other hosts a follower would reach.
		build func(t *testing.T) (hook *host, others []*host)
		sent  bool
	}{
		{name: "200, no redirect (control)", sent: true, build: func(t *testing.T) (*host, []*host) {
			return newHost(t, func(http.ResponseWriter, *http.Request) {}), nil
		}},
		{name: "307 to another host (would re-POST the payload there)", build: func(t *testing.T) (*host, []*host) {
			other := newHost(t, func(http.ResponseWriter, *http.Request) {})
			return newHost(t, redirectTo(http.StatusTemporaryRedirect, func() string { return other.URL + "/collect" })), []*host{other}
		}},
		{name: "308 to another host", build: func(t *testing.T) (*host, []*host) {
			other := newHost(t, func(http.ResponseWriter, *http.Request) {})
			return newHost(t, redirectTo(http.StatusPermanentRedirect, func() string { return other.URL + "/collect" })), []*host{other}
		}},
		{name: "302 to a login page (a GET answered 200)", build: func(t *testing.T) (*host, []*host) {
			var hook *host
			hook = newHost(t, func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/login" {
					_, _ = w.Write([]byte("<html>sign in</html>"))
					return
				}
				redirectTo(http.StatusFound, func() string { return "/login?next=/services/T0/B0/" + hookSecret })(w, r)
			})
			return hook, nil
		}},
		{name: "303 see other", build: func(t *testing.T) (*host, []*host) {
			other := newHost(t, func(http.ResponseWriter, *http.Request) {})
			return newHost(t, redirectTo(http.StatusSeeOther, func() string { return other.URL + "/thanks" })), []*host{other}
		}},
		{name: "chain 301 -> 302 -> 307 across three hosts", build: func(t *testing.T) (*host, []*host) {
			c := newHost(t, func(http.ResponseWriter, *http.Request) {})
			b := newHost(t, redirectTo(http.StatusFound, func() string { return c.URL + "/c/" + hookSecret }))
			a := newHost(t, redirectTo(http.StatusMovedPermanently, func() string { return b.URL + "/b" }))
			return newHost(t, redirectTo(http.StatusTemporaryRedirect, func() string { return a.URL + "/a" })), []*host{a, b, c}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hook, others := tc.build(t)
			var logs strings.Builder
			var mu sync.Mutex
			url := hook.URL + "/services/T0/B0/" + hookSecret
			h := newHarness(t, Config{Default: Route{Targets: []Target{{URL: url, Format: Slack}}}, Store: coll,
				MaxAttempts: 3, Logger: newTestLogger(&logs, &mu)})
			ev := rotatedFixture()
			ev.ID += "/" + t.Name() // one claim per case
			h.n.Notify(ev)
			h.close() // a 3xx is not retried: no backoff to wait for
			if got := hook.requests(); len(got) != 1 || got[0] != "POST /services/T0/B0/"+hookSecret {
				t.Errorf("webhook got %v, want one POST", got)
			}
			for i, o := range append([]*host{hook}, others...) {
				if i > 0 && len(o.requests()) != 0 {
					t.Errorf("host %d the redirect points to got %v, want nothing", i, o.requests())
				}
				if l := o.leaks(); len(l) != 0 {
					t.Errorf("host %d got the webhook's secret in headers: %v", i, l)
				}
			}
			want := map[bool]float64{true: 1, false: 0}
			if got := h.counter("sent", "openhands", "slack"); got != want[tc.sent] {
				t.Errorf("sent = %v, want %v", got, want[tc.sent])
			}
			if got := h.counter("failed", "openhands", "slack"); got != want[!tc.sent] {
				t.Errorf("failed = %v, want %v", got, want[!tc.sent])
			}
			var claim struct{ State string }
			if err := coll.FindOne(context.Background(), bson.M{"event": ev.ID}).Decode(&claim); err != nil {
				t.Fatal(err)
			}
			if wantState := map[bool]string{true: "sent", false: "failed"}[tc.sent]; claim.State != wantState {
				t.Errorf("claim state %q, want %q", claim.State, wantState)
			}
			mu.Lock()
			out := logs.String()
			mu.Unlock()
			if strings.Contains(out, hookSecret) {
				t.Errorf("the log holds the webhook's secret:\n%s", out)
			}
			if !tc.sent {
				if !strings.Contains(out, "redirect") || !strings.Contains(out, "not followed") {
					t.Errorf("the log does not say the redirect was not followed:\n%s", out)
				}
				to := hook // a relative Location stays on the webhook's host
				if len(others) > 0 {
					to = others[0]
				}
				if !strings.Contains(out, "to "+to.URL) {
					t.Errorf("the log does not name the host redirected to:\n%s", out)
				}
			}
		})
	}
}
