package cli

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/spendchecker/spendchecker/internal/fakeupstream"
	"github.com/spendchecker/spendchecker/internal/mongotest"
)

// End to end through the command line: a balance pool run --once writes
// what remains, and status and history show it; a configured provider
// (custom) reads the same upstream the same way.
func TestBalancePoolEndToEnd(t *testing.T) {
	for _, tc := range []struct {
		name string
		args func(url string) []string
		file func(url string) string
	}{
		{"deepseek", func(url string) []string {
			return []string{"--provider", "deepseek", "--provider-url", url}
		}, nil},
		{"custom", nil, func(url string) string {
			return `{"pools":[{"pool":"openhands","provider":"custom","account":"acme","min-remaining":1,"custom":{"url":"` + url +
				`/user/balance","remaining":"balance_infos.0.total_balance","currency":"balance_infos.0.currency","ok":"is_available","numbers":"string"}}]}`
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mdb := mongotest.New(t)
			apiSeed(t, mdb.Database, apiPool, 3, 3)
			releasedLease(t, mdb.Database)
			up := fakeupstream.New("deepseek")
			t.Cleanup(up.Close)
			for i := range 3 {
				up.SetSpend(fmt.Sprintf("sk-secret-key-%06d-abcdef", i), 0.5) // the account is drained
			}
			for i := range 3 {
				up.SetSpend(fmt.Sprintf("sk-secret-backup-%06d-abcdef", i), 40)
			}
			base := []string{"--mongo-uri", mdb.URI, "--database", mdb.Name, "--log-level", "error"}
			// The daemon's own flags: status and history do not take them;
			// status shows the minimum, only the daemon polls the account.
			daemon := []string{"--listen", ""}
			var status []string
			if tc.args != nil {
				base = append(base, tc.args(up.URL)...)
				status = []string{"--min-remaining", "1"}
				daemon = append(daemon, "--min-remaining", "1", "--account", "acme")
			} else {
				base = append(base, "--config", writeFile(t, tc.file(up.URL)))
			}
			env := func(out *bytes.Buffer) Env {
				return Env{Stdout: out, Stderr: out}
			}
			var out bytes.Buffer
			if code := Run(context.Background(), append(append([]string{"--once"}, daemon...), base...), env(&out)); code != ExitOK {
				t.Fatalf("--once exit %d: %s", code, out.String())
			}
			if n := up.TotalCalls(); n != 1 {
				t.Fatalf("%d balance requests for 3 keys of one account", n)
			}
			out.Reset()
			Run(context.Background(), append(append([]string{"status"}, status...), base...), env(&out))
			st := out.String()
			if !strings.Contains(st, "min remaining 1.00") {
				t.Fatalf("status:\n%s", st)
			}
			out.Reset()
			Run(context.Background(), append([]string{"history"}, base...), env(&out))
			h := out.String()
			if strings.Count(h, "left 0.50 USD") != 3 || !strings.Contains(h, "low_remaining_0.50") || strings.Contains(h, "$9.95") {
				t.Fatalf("history:\n%s", h)
			}
			// The backups now serve; a second run reads their account.
			out.Reset()
			if code := Run(context.Background(), append(append([]string{"--once", "--adaptive=false"}, daemon...), base...), env(&out)); code != ExitOK {
				t.Fatalf("second --once exit %d: %s", code, out.String())
			}
			out.Reset()
			Run(context.Background(), append(append([]string{"status"}, status...), base...), env(&out))
			if st := out.String(); strings.Count(st, "left 40.00 USD") != 3 {
				t.Fatalf("status after rotation:\n%s", st)
			}
		})
	}
}
