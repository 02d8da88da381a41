package config

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/spendchecker/spendchecker/spend"
)

func helpOf(t *testing.T, args ...string) string {
	t.Helper()
	_, err := Parse(args)
	var hr *HelpRequest
	if !errors.As(err, &hr) {
		t.Fatalf("Parse(%q) = %v, want a help request", args, err)
	}
	return hr.Text
}

// helpLine is the help line of one flag.
func helpLine(t *testing.T, help, flag string) string {
	t.Helper()
	for _, l := range strings.Split(help, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), flag+" ") {
			return l
		}
	}
	t.Fatalf("no help line for %s in:\n%s", flag, help)
	return ""
}

// What a new user reads in --help: one default per flag (the real one),
// the proxy's database variable, flags written --flag as in the docs.
func TestHelpReadsRight(t *testing.T) {
	help := helpOf(t, "--help")
	for _, f := range []struct{ flag, want string }{
		{"--lease-renew-deadline", "2/3 of the lease duration"},
		{"--lease-retry-period", "2/15 of the lease duration"},
		{"--database", "MONGODB_DB_NAME"},
		{"--interval", "(default: 10s)"},
	} {
		l := helpLine(t, help, f.flag)
		if !strings.Contains(l, f.want) || strings.Count(l, "default") != 1 {
			t.Errorf("%s: want one default, %q:\n%s", f.flag, f.want, l)
		}
	}
	single := regexp.MustCompile(`(?m)^\s+-[a-z]`)
	for _, args := range [][]string{{"--help"}, {"status", "--help"}, {"help", "rotate"}, {"healthcheck", "-h"}} {
		if h := helpOf(t, args...); single.MatchString(h) || !strings.Contains(h, "  --") {
			t.Errorf("%q: flags not written --flag:\n%s", args, h)
		}
	}
}

// A command lists only the settings of when a key rotates that it reads:
// status shows spend against the threshold and a balance pool's minimum,
// rotate records the threshold in the history; history, verify and
// recover read none. The pool's upstream (--provider) every command has.
func TestCommandsListOnlyThePoolSettingsTheyRead(t *testing.T) {
	all := []string{"--threshold", "--budget-ratio", "--rotate-unauthorized", "--min-remaining", "--account", "--rate-prior", "--burst-factor"}
	tests := []struct {
		cmd  string
		uses []string
	}{
		{"status", []string{"--threshold", "--min-remaining"}},
		{"rotate", []string{"--threshold"}},
		{"history", nil},
		{"verify", nil},
		{"recover", nil},
	}
	for _, tt := range tests {
		t.Run(tt.cmd, func(t *testing.T) {
			help := helpOf(t, "help", tt.cmd)
			for _, f := range all {
				uses := false
				for _, u := range tt.uses {
					uses = uses || u == f
				}
				if listed := regexp.MustCompile(`(?m)^\s+` + f + ` `).MatchString(help); listed != uses {
					t.Errorf("%s lists %s: %v, want %v", tt.cmd, f, listed, uses)
				}
			}
			if !strings.Contains(help, "--mongo-uri") || !strings.Contains(help, "--pool ") || !strings.Contains(help, "--provider-url ") {
				t.Errorf("%s lost the store flags:\n%s", tt.cmd, help)
			}
		})
	}
	// The defaults still hold for a command without the flags.
	c, err := Parse([]string{"verify", "--mongo-uri", uri})
	if err != nil {
		t.Fatal(err)
	}
	if p := c.Pools[0]; p.Threshold != DefaultThreshold || p.MinRemaining != DefaultMinRemaining || !*p.RotateUnauthorized {
		t.Errorf("verify's pool %+v", p)
	}
}

// Mistakes a new user makes get the right hint.
func TestHintsForNewUsers(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		file     string
		want     []string
		dontWant string
	}{
		{name: "command after the flags", args: []string{"--mongo-uri", uri, "status"},
			want: []string{"the command comes first", "spendchecker status --mongo-uri " + uri}, dontWant: "flags go before"},
		{name: "command after a boolean flag", args: []string{"--dry-run", "recover"},
			want: []string{"spendchecker recover --dry-run"}},
		{name: "unknown provider", args: []string{"--mongo-uri", uri, "--provider", "nosuch"},
			want: append(append(append([]string{`"nosuch"`}, spend.Names...), "custom"), spend.BatchNames...)},
		{name: "mistyped flag", args: []string{"--mongo-uri", uri, "--thresold", "1"}, want: []string{"did you mean --threshold?"}},
		{name: "mistyped flag with =", args: []string{"--mongo-uri", uri, "--intervall=5s"}, want: []string{"did you mean --interval?"}},
		{name: "another command's flag", args: []string{"status", "--mongo-uri", uri, "--since", "1h"}, want: []string{"--since", "history"}},
		{name: "mistyped config key", file: `{"mongo-uri": "` + uri + `", "treshold": 5}`, want: []string{`"treshold"`, "did you mean threshold?"}},
		{name: "mistyped pool key", file: `{"mongo-uri": "` + uri + `", "pools": [{"pool": "openhands", "budget_ratio": 0.5}]}`,
			want: []string{`"pools[0].budget_ratio"`, "did you mean budget-ratio?"}},
		{name: "mistyped command", args: []string{"rotat"}, want: []string{"did you mean rotate?"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if tt.file != "" {
				args = append(args, "--config", writeFile(t, tt.file))
			}
			_, err := Parse(args)
			var ue *UsageError
			if !errors.As(err, &ue) {
				t.Fatalf("Parse(%q) = %v, want a usage error", args, err)
			}
			msg := err.Error()
			for _, w := range tt.want {
				if !strings.Contains(msg, w) || strings.Contains(msg, "\n") {
					t.Errorf("message %q: want one line containing %q", msg, w)
				}
			}
			if tt.dontWant != "" && strings.Contains(msg, tt.dontWant) {
				t.Errorf("message %q contains %q", msg, tt.dontWant)
			}
		})
	}
}
