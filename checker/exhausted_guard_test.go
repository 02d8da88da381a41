package checker_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/spendchecker/spendchecker/checker"
	"github.com/spendchecker/spendchecker/spend"
)

// Every key of a pool answered "exhausted" at once (a custom provider whose
// exhausted-status comes with any JSON body, here the upstream's own JSON
// error for an outage) is the upstream's statement about itself, not ten
// used-up keys: the rejection guard holds the rotations, as it does for
// 401s. Before the fix exhausted rotations bypassed the guard: 10 rotated.
func TestExhaustedEveryKeyHeldByRejectionGuard(t *testing.T) {
	w := newWorld(t, "litellm", tenKeys("k", 1), 10)
	up := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "application/json")
		rw.WriteHeader(http.StatusPaymentRequired)
		_, _ = rw.Write([]byte(`{"error":{"message":"billing service unavailable"}}`))
	}))
	t.Cleanup(up.Close)
	prov, err := spend.NewCustom(spend.CustomSpec{URL: up.URL + "/v1/me", Spend: "data.used", ExhaustedStatuses: []int{402}},
		&spend.Client{MaxAttempts: 1, Now: w.clock.Now, Wait: func(context.Context, time.Duration) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	chk := w.checker(t, func(c *checker.Config, p *checker.Pool) { p.Provider = prov })
	ps := cycle(t, chk)
	if ps.Rotated != 0 {
		t.Fatalf("every key exhausted at once: %d of 10 rotated in one cycle, want the guard to hold them", ps.Rotated)
	}
}
