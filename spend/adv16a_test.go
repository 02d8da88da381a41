package spend_test

// Adversarial tests for issue 16's providers (adv16a). Each one states what
// it shows and what it costs an operator; each fails on the code as
// reviewed.

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spendchecker/spendchecker/spend"
)

// The configured provider's URL template may put the key in the query
// (`?key={{.Key | urlquery}}`, as the README shows). A network error carries
// the request URL (net/url.Error), so the *encoded* key ends up in the error
// text; redaction (secret.Redact) replaced only the raw secret,
// so a key holding a character urlquery escapes ('+', '/', '=': base64-style
// keys) reaches the log line ("spend check failed", the cycle's failure
// example) in full, only percent-encoded.
// Cost: a full API key in the logs (secrets rule of the design) whenever the
// upstream is unreachable.
func TestAdv16a_CustomURLKeyLeaksEncodedInErrors(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	base := srv.URL
	srv.Close() // connection refused from now on
	const secret = "sk-live+AbCdEf/GhIjKlMnOpQrStUv=="
	ft := newFakeTime()
	p, err := spend.NewCustom(spend.CustomSpec{URL: base + "/v1/balance?key={{.Key | urlquery}}", Remaining: "balance"},
		&spend.Client{Now: ft.Now, Wait: ft.Wait, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Spend(context.Background(), spend.Key{Secret: secret})
	if err == nil {
		t.Fatal("no error from an unreachable upstream")
	}
	for _, form := range []string{secret, url.QueryEscape(secret), strings.ReplaceAll(url.QueryEscape(secret), "%", "%25")} {
		if strings.Contains(err.Error(), form) {
			t.Fatalf("the error carries the key (as %q): %v", form, err)
		}
	}
	// What a masked key leaves visible is 5 + 4 characters; a 20-character
	// run of the secret is the secret.
	if strings.Contains(err.Error(), "AbCdEf%2FGhIjKlMnOpQrStUv") {
		t.Fatalf("the error carries the key's body: %v", err)
	}
}

// DeepSeek's balance_infos has one entry per currency
// (api-docs.deepseek.com/api/get-user-balance: currency "CNY" | "USD").
// The parser keeps only the USD entry when there is one and drops the rest:
// an account that can still spend (is_available true, 110 CNY) but whose USD
// entry is 0.00 is read as "remaining 0 USD", at or below any
// --min-remaining.
// Cost: every key of a funded account rotated out (one backup each), every
// cycle, for as long as the USD entry stays at 0.
func TestAdv16a_DeepSeekFundedInAnotherCurrencyReadAsEmpty(t *testing.T) {
	body := `{"is_available":true,"balance_infos":[` +
		`{"currency":"CNY","total_balance":"110.00","granted_balance":"10.00","topped_up_balance":"100.00"},` +
		`{"currency":"USD","total_balance":"0.00","granted_balance":"0.00","topped_up_balance":"0.00"}]}`
	r, err := spend.ParseDeepSeek(http.StatusOK, []byte(body))
	if err != nil {
		return // a failed check is acceptable: it never rotates
	}
	if r.Remaining != nil && *r.Remaining <= 1 {
		t.Fatalf("an account with 110 CNY that the API says is available read as remaining %v %s: its keys rotate", *r.Remaining, r.Currency)
	}
}

// hostClock is a virtual clock for the Client whose waits advance it, and
// which records when each request reached the upstream.
type hostClock struct {
	mu  sync.Mutex
	now time.Time
	at  []time.Time
}

func (h *hostClock) Now() time.Time { h.mu.Lock(); defer h.mu.Unlock(); return h.now }
func (h *hostClock) Wait(_ context.Context, d time.Duration) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.now = h.now.Add(d)
	return nil
}
func (h *hostClock) hit() { h.mu.Lock(); defer h.mu.Unlock(); h.at = append(h.at, h.now) }

// The one-api pace (one request per 1.1 s) is kept per spelling of the URL's
// host (url.URL.Host), while one-api/new-api limit per client IP. Two pools
// on the same reseller whose --provider-url differ only in spelling
// ("https://API.reseller.com" and "https://api.reseller.com:443", here
// LOCALHOST vs localhost) each get their own 1.1 s pace: twice the rate at
// the one server.
// Cost: new-api's default 180 requests per 180 s per IP exceeded (429s, the
// host paused, checks failing) by a process configured within the README's
// promise.
func TestAdv16a_OneAPIPaceSplitByHostSpelling(t *testing.T) {
	h := &hostClock{now: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.hit()
		if strings.HasSuffix(r.URL.Path, "/subscription") {
			_, _ = w.Write([]byte(oneapiSub))
			return
		}
		_, _ = w.Write([]byte(oneapiUsage))
	}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	c := &spend.Client{Now: h.Now, Wait: h.Wait}
	a, err := spend.New("oneapi", "http://localhost:"+u.Port(), c)
	if err != nil {
		t.Fatal(err)
	}
	b, err := spend.New("oneapi", "http://LOCALHOST:"+u.Port(), c)
	if err != nil {
		t.Fatal(err)
	}
	start := h.Now()
	for h.Now().Sub(start) < 180*time.Second {
		for _, p := range []spend.Provider{a, b} {
			if _, err := p.Spend(context.Background(), spend.Key{Secret: "sk-oneapi-test-0001"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	n := 0
	for _, at := range h.at {
		if at.Sub(start) < 180*time.Second {
			n++
		}
	}
	if n > 180 {
		t.Fatalf("%d requests to one one-api server within 180 s (new-api allows 180 per client IP)", n)
	}
}

// An error answer is quoted into the error text cut at 160 characters
// ("200 with an error: %.160q"). An upstream that echoes the key it was
// sent (many do: "Invalid API key: sk-…") some 135 bytes into the body
// gets it cut in the middle: secret.Redact looks for the whole secret, finds none,
// and the first part of the key stays in the error, the log line and the
// cycle's failure example — far more of it than the mask's 5 + 4
// characters.
// Cost: most of a key in the logs (here 24 of its 40 characters).
func TestAdv16a_TruncatedEchoDefeatsRedact(t *testing.T) {
	const secret = "sk-live-0123456789abcdefghijklmnopqrstuvwx"
	pad := strings.Repeat("x", 110)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"error":{"message":"` + pad + ` key ` + secret + ` refused"}}`))
	}))
	t.Cleanup(srv.Close)
	ft := newFakeTime()
	p, err := spend.NewCustom(spend.CustomSpec{URL: srv.URL + "/v1/me", Spend: "usage"}, &spend.Client{Now: ft.Now, Wait: ft.Wait})
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Spend(context.Background(), spend.Key{Secret: secret})
	if err == nil {
		t.Fatal("an error answer read as a spend")
	}
	if strings.Contains(err.Error(), secret[:16]) {
		t.Fatalf("the error carries %d+ leading characters of the key: %v", 16, err)
	}
}
