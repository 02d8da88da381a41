package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/spendchecker/spendchecker/cmd/spendchecker/config"
	"github.com/spendchecker/spendchecker/spend"
)

// --rate-limit and --host-rate reach the upstream client and space its
// requests out (on an injected clock: each wait is recorded, not slept).
func TestRateFlagsLimitRequests(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"data":{"usage":1,"limit":null}}`)
	}))
	defer srv.Close()
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"--rate-limit", []string{"--rate-limit", "5", "--host-rate", "0"}, nil, "[200ms 200ms 200ms]"},
		{"SPENDCHECKER_RATE_LIMIT", []string{"--host-rate", "0"}, map[string]string{"SPENDCHECKER_RATE_LIMIT": "4"}, "[250ms 250ms 250ms 250ms]"},
		// The per-host rate's burst is --concurrency.
		{"--host-rate", []string{"--host-rate", "10", "--concurrency", "2"}, nil, "[100ms 100ms 100ms 100ms 100ms 100ms]"},
		{"no limits", []string{"--host-rate", "0"}, nil, "[]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			cfg, err := config.Parse(append([]string{"--mongo-uri", uri}, tc.args...))
			if err != nil {
				t.Fatal(err)
			}
			c := upstreamClient(cfg, srv.Client())
			now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
			var waits []time.Duration
			c.Now = func() time.Time { return now }
			c.Wait = func(_ context.Context, d time.Duration) error { waits = append(waits, d); now = now.Add(d); return nil }
			p, err := spend.New("openrouter", srv.URL, c)
			if err != nil {
				t.Fatal(err)
			}
			for range 8 { // the bursts are --rate-limit and --concurrency
				if _, err := p.Spend(context.Background(), spend.Key{Secret: "k"}); err != nil {
					t.Fatal(err)
				}
			}
			if fmt.Sprint(waits) != tc.want {
				t.Errorf("waits %v, want %s", waits, tc.want)
			}
		})
	}
}

func TestRejectGuardFlags(t *testing.T) {
	cfg, err := config.Parse([]string{"--mongo-uri", uri})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RejectShare != 0.5 || cfg.RejectMin != 3 || cfg.HostRate != 50 || rejectShare(cfg.RejectShare) != 0.5 {
		t.Errorf("defaults: share %v, min %d, host rate %v", cfg.RejectShare, cfg.RejectMin, cfg.HostRate)
	}
	t.Setenv("SPENDCHECKER_REJECT_SHARE", "0")
	cfg, err = config.Parse([]string{"--mongo-uri", uri, "--reject-min", "5"})
	if err != nil {
		t.Fatal(err)
	}
	if rejectShare(cfg.RejectShare) >= 0 || cfg.RejectMin != 5 {
		t.Errorf("--reject-share 0 must turn the guard off: %v, %d", rejectShare(cfg.RejectShare), cfg.RejectMin)
	}
	for _, bad := range [][]string{{"--reject-share", "1.5"}, {"--reject-share", "-0.1"}, {"--reject-min", "0"}, {"--host-rate", "-1"}, {"--reject-share", "NaN"}} {
		_, err := config.Parse(append([]string{"--mongo-uri", uri}, bad...))
		var ue *config.UsageError
		if !errors.As(err, &ue) {
			t.Errorf("%v: err %v, want a usage error", bad, err)
		}
	}
}
