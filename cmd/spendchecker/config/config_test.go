package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const uri = "mongodb://localhost:27017/fproxy"

func writeFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// parseWith parses args after --mongo-uri, with env set and, when file is
// not empty, a config file holding the mongo URI and then file (JSON keys).
func parseWith(t *testing.T, args []string, env map[string]string, file string) (*Config, error) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	args = append([]string{"--mongo-uri", uri}, args...)
	if file != "" {
		args = append(args, "--config", writeFile(t, `{"mongo-uri": "`+uri+`", `+file+`}`))
	}
	return Parse(args)
}

func TestParseValid(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		file  string // written to a temp file passed as --config
		check func(t *testing.T, c *Config)
	}{
		{
			name: "defaults",
			args: []string{"--mongo-uri", uri},
			check: func(t *testing.T, c *Config) {
				p := c.Pools[0]
				if c.Database != "fproxy" || p.Pool != "openhands" || p.Provider != "openhands" || p.Threshold != 9.95 ||
					c.Interval != 10*time.Second || !c.Adaptive || c.Concurrency != 16 || c.LeaseDuration != 15*time.Second ||
					c.LeaseRenewDeadline != 10*time.Second || c.LeaseRetryPeriod != 2*time.Second || !*p.RotateUnauthorized {
					t.Errorf("defaults: %+v %+v", c, p)
				}
			},
		},
		{
			name: "database from the URI, else fproxy",
			args: []string{"--mongo-uri", "mongodb://h/other?replicaSet=rs0"},
			check: func(t *testing.T, c *Config) {
				if c.Database != "other" {
					t.Errorf("database %q", c.Database)
				}
			},
		},
		{
			name: "environment",
			env:  map[string]string{"SPENDCHECKER_MONGO_URI": uri, "SPENDCHECKER_THRESHOLD": "8.5", "SPENDCHECKER_MIN_CHECK_INTERVAL": "20s"},
			check: func(t *testing.T, c *Config) {
				if c.MongoURI != uri || c.Pools[0].Threshold != 8.5 || c.MinCheckInterval != 20*time.Second {
					t.Errorf("env not applied: %+v", c)
				}
			},
		},
		{
			name: "flags win over environment",
			args: []string{"--mongo-uri", uri, "--threshold", "7"},
			env:  map[string]string{"SPENDCHECKER_THRESHOLD": "8.5"},
			check: func(t *testing.T, c *Config) {
				if c.Pools[0].Threshold != 7 {
					t.Errorf("threshold %v", c.Pools[0].Threshold)
				}
			},
		},
		{
			name: "environment wins over the file",
			env:  map[string]string{"SPENDCHECKER_CONCURRENCY": "4"},
			file: `{"mongo-uri": "` + uri + `", "concurrency": 32, "adaptive": false, "lease-duration": "30s"}`,
			check: func(t *testing.T, c *Config) {
				if c.Concurrency != 4 || c.Adaptive || c.LeaseDuration != 30*time.Second || c.LeaseRetryPeriod != 4*time.Second {
					t.Errorf("file/env precedence: %+v", c)
				}
			},
		},
		{
			name: "several pools inherit what they leave out",
			file: `{"mongo-uri": "` + uri + `", "threshold": 9, "pools": [
				{"pool": "openhands"},
				{"pool": "factory", "provider": "litellm", "provider-url": "http://litellm:4000", "threshold": 4.5, "rotate-unauthorized": false}]}`,
			check: func(t *testing.T, c *Config) {
				if len(c.Pools) != 2 {
					t.Fatalf("pools %+v", c.Pools)
				}
				a, b := c.Pools[0], c.Pools[1]
				if a.Threshold != 9 || a.Provider != "openhands" || !*a.RotateUnauthorized {
					t.Errorf("first pool %+v", a)
				}
				if b.Threshold != 4.5 || b.Provider != "litellm" || *b.RotateUnauthorized {
					t.Errorf("second pool %+v", b)
				}
			},
		},
		{
			name: "rotate takes the key id before or after flags",
			args: []string{"rotate", "key-1", "--mongo-uri", uri, "--reason", "leaked"},
			check: func(t *testing.T, c *Config) {
				if c.Command != "rotate" || len(c.Args) != 1 || c.Args[0] != "key-1" || c.Reason != "leaked" {
					t.Errorf("rotate: %+v", c)
				}
			},
		},
		{
			name: "healthcheck needs no database",
			args: []string{"healthcheck", "--listen", ":9090"},
			check: func(t *testing.T, c *Config) {
				if c.Command != "healthcheck" {
					t.Errorf("command %q", c.Command)
				}
			},
		},
		{
			name: "six-field cron",
			args: []string{"--mongo-uri", uri, "--schedule", "*/15 * * * * *"},
			check: func(t *testing.T, c *Config) {
				if c.Schedule == "" {
					t.Error("schedule lost")
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			args := tt.args
			if tt.file != "" {
				args = append(args, "--config", writeFile(t, tt.file))
			}
			c, err := Parse(args)
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

func TestParseInvalid(t *testing.T) {
	tests := []struct {
		name string
		args []string
		file string
		want string // in the one-line message
	}{
		{"missing URI", nil, "", "--mongo-uri (or SPENDCHECKER_MONGO_URI, the systemd credential mongo-uri, or the proxy's MONGODB_URI) is required"},
		{"not a mongodb URI", []string{"--mongo-uri", "http://x"}, "", "mongodb://"},
		{"bad cron", []string{"--mongo-uri", uri, "--schedule", "61 * * * *"}, "", "--schedule"},
		{"zero threshold", []string{"--mongo-uri", uri, "--threshold", "0"}, "", "--threshold must be greater than 0"},
		{"negative threshold", []string{"--mongo-uri", uri, "--threshold", "-1"}, "", "--threshold must be greater than 0"},
		{"threshold not a number", []string{"--mongo-uri", uri, "--threshold", "ten"}, "", `--threshold: set "ten": want a number`},
		{"interval without unit", []string{"--mongo-uri", uri, "--min-check-interval", "60"}, "", "--min-check-interval: set \"60\": want a duration"},
		{"file threshold not a number", nil, `{"mongo-uri": "` + uri + `", "threshold": "ten"}`, `config file: threshold: set "ten": want a number`},
		{"file duration without unit", nil, `{"mongo-uri": "` + uri + `", "interval": 60}`, `config file: interval: set "60": want a duration`},
		{"unknown provider", []string{"--mongo-uri", uri, "--provider", "acme"}, "", "acme"},
		{"litellm without URL", []string{"--mongo-uri", uri, "--provider", "litellm"}, "", "litellm"},
		{"unknown pool", []string{"--mongo-uri", uri, "--pool", "nope"}, "", "nope"},
		{"unknown flag", []string{"--mongo-uri", uri, "--thresold", "1"}, "", "thresold"},
		{"unknown command", []string{"rotat"}, "", "unknown command"},
		{"rotate without key", []string{"rotate", "--mongo-uri", uri}, "", "rotate KEY_ID"},
		{"stray argument", []string{"status", "x", "--mongo-uri", uri}, "", "unexpected argument"},
		{"bad interval", []string{"--mongo-uri", uri, "--interval", "0s"}, "", "--interval"},
		{"min above max", []string{"--mongo-uri", uri, "--min-check-interval", "1h"}, "", "--min-check-interval"},
		{"zero concurrency", []string{"--mongo-uri", uri, "--concurrency", "0"}, "", "--concurrency"},
		{"lease timings", []string{"--mongo-uri", uri, "--lease-retry-period", "20s"}, "", "lease timings"},
		{"bad log level", []string{"--mongo-uri", uri, "--log-level", "loud"}, "", "--log-level"},
		{"bad listen", []string{"--mongo-uri", uri, "--listen", "9090"}, "", "--listen"},
		{"bad since", []string{"history", "--mongo-uri", uri, "--since", "yesterday"}, "", "--since"},
		{"budget ratio above 1", []string{"--mongo-uri", uri, "--budget-ratio", "2"}, "", "--budget-ratio"},
		{"unknown file key", nil, `{"mongo-uri": "` + uri + `", "treshold": 5}`, "treshold"},
		{"unknown pool key", nil, `{"mongo-uri": "` + uri + `", "pools": [{"pool": "factory", "limit": 5}]}`, "limit"},
		{"pool twice", nil, `{"mongo-uri": "` + uri + `", "pools": [{"pool": "factory"}, {"pool": "factory"}]}`, "configured twice"},
		{"malformed file", nil, `{"mongo-uri": `, "config file"},
		{"nested value", nil, `{"mongo-uri": "` + uri + `", "threshold": {"x": 1}}`, "threshold"},
		{"missing file", []string{"--mongo-uri", uri, "--config", "/nonexistent/spendchecker.json"}, "", "spendchecker.json"},
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
			if msg := err.Error(); !strings.Contains(msg, tt.want) || strings.Contains(msg, "\n") {
				t.Errorf("message %q: want one line containing %q", msg, tt.want)
			}
		})
	}
}

func TestParseInvalidEnvironment(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"threshold not a number", map[string]string{"SPENDCHECKER_THRESHOLD": "ten"}, `SPENDCHECKER_THRESHOLD="ten": want a number`},
		{"concurrency not whole", map[string]string{"SPENDCHECKER_CONCURRENCY": "2.5"}, "SPENDCHECKER_CONCURRENCY=\"2.5\": want a whole number"},
		{"negative concurrency", map[string]string{"SPENDCHECKER_CONCURRENCY": "-3"}, "--concurrency"},
		{"adaptive not a boolean", map[string]string{"SPENDCHECKER_ADAPTIVE": "maybe"}, "SPENDCHECKER_ADAPTIVE=\"maybe\": want true or false"},
		{"interval without unit", map[string]string{"SPENDCHECKER_INTERVAL": "60"}, "SPENDCHECKER_INTERVAL=\"60\": want a duration with a unit"},
		{"unknown provider", map[string]string{"SPENDCHECKER_PROVIDER": "acme"}, "acme"},
		{"bad cron", map[string]string{"SPENDCHECKER_SCHEDULE": "every minute"}, "--schedule"},
		{"missing config file", map[string]string{"SPENDCHECKER_CONFIG": "/nonexistent/sc.json"}, "sc.json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("SPENDCHECKER_MONGO_URI", uri)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			_, err := Parse(nil)
			var ue *UsageError
			if !errors.As(err, &ue) {
				t.Fatalf("Parse with %v = %v, want a usage error", tt.env, err)
			}
			if msg := err.Error(); !strings.Contains(msg, tt.want) || strings.Contains(msg, "\n") {
				t.Errorf("message %q: want one line containing %q", msg, tt.want)
			}
		})
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 5, 10, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"24h", now.Add(-24 * time.Hour), true},
		{"90m", now.Add(-90 * time.Minute), true},
		{"7d", now.AddDate(0, 0, -7), true},
		{"1d12h", now.Add(-36 * time.Hour), true},
		{"30d", now.AddDate(0, 0, -30), true},
		{"0d", now, true},
		{"2026-05-01", time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC), true},
		{"2026-05-01T10:00:00Z", time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC), true},
		{"d", time.Time{}, false},
		{"-7d", time.Time{}, false},
		{"7days", time.Time{}, false},
		{"1.5d", time.Time{}, false},
		{"yesterday", time.Time{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSince(tt.in, now)
			if (err == nil) != tt.ok || (tt.ok && !got.Equal(tt.want)) {
				t.Errorf("ParseSince(%q) = %v, %v; want %v (ok %v)", tt.in, got, err, tt.want, tt.ok)
			}
		})
	}
}

// TestPoolPrecedence is the precedence of pool settings (docs/configuration.md,
// "Precedence of pool settings"): a flag, then the environment, then the pool's own entry
// in the file, then the file's top level, then the default. An explicit zero
// or false is a value; nothing is ignored without a word.
func TestPoolPrecedence(t *testing.T) {
	two := `"pools": [{"pool": "openhands", "threshold": 9.95}, {"pool": "factory", "provider": "litellm", "provider-url": "http://l:4000", "threshold": 4.5}]`
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		file    string // JSON body after "mongo-uri"
		pools   string // want: pool=threshold/budget-ratio/rotate-unauthorized/keys-collection, space separated
		wantErr string
	}{
		{name: "default", file: `"pools": [{"pool": "openhands"}]`, pools: "openhands=9.95/0/true/openhands_keys"},
		{name: "file top level beats default", file: `"threshold": 8, "budget-ratio": 0.8, "rotate-unauthorized": false, "pools": [{"pool": "openhands"}]`,
			pools: "openhands=8/0.8/false/openhands_keys"},
		{name: "pool entry beats file top level", file: `"threshold": 8, "budget-ratio": 0.8, "pools": [{"pool": "openhands", "threshold": 7, "budget-ratio": 0.5}]`,
			pools: "openhands=7/0.5/true/openhands_keys"},
		{name: "explicit zero budget ratio is a value", file: `"budget-ratio": 0.8, "pools": [{"pool": "openhands", "budget-ratio": 0}]`,
			pools: "openhands=9.95/0/true/openhands_keys"},
		{name: "explicit false is a value", file: `"rotate-unauthorized": true, "pools": [{"pool": "openhands", "rotate-unauthorized": false}]`,
			pools: "openhands=9.95/0/false/openhands_keys"},
		{name: "explicit zero threshold is refused, not inherited", file: `"threshold": 8, "pools": [{"pool": "openhands", "threshold": 0}]`,
			wantErr: "--threshold must be greater than 0"},
		{name: "flag beats pool entry", args: []string{"--threshold", "5"}, file: two, pools: "openhands=5/0/true/openhands_keys factory=5/0/true/factory_keys"},
		{name: "environment beats pool entry", env: map[string]string{"SPENDCHECKER_THRESHOLD": "6", "SPENDCHECKER_BUDGET_RATIO": "0.9"},
			file: `"pools": [{"pool": "openhands", "threshold": 9.95, "budget-ratio": 0.5}]`, pools: "openhands=6/0.9/true/openhands_keys"},
		{name: "flag beats environment", args: []string{"--threshold", "5"}, env: map[string]string{"SPENDCHECKER_THRESHOLD": "6"},
			file: `"pools": [{"pool": "openhands", "threshold": 9.95}]`, pools: "openhands=5/0/true/openhands_keys"},
		{name: "flag false beats pool entry true", args: []string{"--rotate-unauthorized=false"},
			file: `"pools": [{"pool": "openhands", "rotate-unauthorized": true}]`, pools: "openhands=9.95/0/false/openhands_keys"},
		{name: "flag zero budget ratio beats pool entry", args: []string{"--budget-ratio", "0"},
			file: `"pools": [{"pool": "openhands", "budget-ratio": 0.8}]`, pools: "openhands=9.95/0/true/openhands_keys"},
		{name: "--pool selects one of the file's pools", args: []string{"--pool", "factory"}, file: two, pools: "factory=4.5/0/true/factory_keys"},
		{name: "--pool from the environment selects too", env: map[string]string{"SPENDCHECKER_POOL": "openhands"}, file: two, pools: "openhands=9.95/0/true/openhands_keys"},
		{name: "--pool not in the file", args: []string{"--pool", "nope"}, file: `"pools": [{"pool": "openhands"}]`, wantErr: `--pool "nope" is not among the config file's pools (openhands)`},
		{name: "collection flag with one pool applies", args: []string{"--keys-collection", "k2"}, file: `"pools": [{"pool": "openhands", "keys-collection": "k1"}]`,
			pools: "openhands=9.95/0/true/k2"},
		{name: "collection flag with a selected pool applies", args: []string{"--pool", "factory", "--keys-collection", "k2"}, file: two,
			pools: "factory=4.5/0/true/k2"},
		{name: "collection flag with several pools is refused", args: []string{"--keys-collection", "k2"}, file: two,
			wantErr: "--keys-collection names one pool's collection"},
		{name: "collection at the file's top level with several pools is refused", file: `"keys-collection": "k2", ` + two,
			wantErr: "keys-collection names one pool's collection"},
		{name: "collection at the file's top level with one pool applies", file: `"keys-collection": "k2", "pools": [{"pool": "openhands"}]`,
			pools: "openhands=9.95/0/true/k2"},
		{name: "--account with several pools is refused", args: []string{"--account", "main"}, file: two,
			wantErr: "--account names one upstream account"},
		{name: "account at the file's top level with several pools is refused", file: `"account": "main", ` + two,
			wantErr: "account names one upstream account"},
		{name: "--account with a selected pool applies", args: []string{"--pool", "factory", "--account", "main"}, file: two,
			pools: "factory=4.5/0/true/factory_keys"},
		{name: "pool entry collection beats file top level", file: `"keys-collection": "k2", "pools": [{"pool": "openhands", "keys-collection": "k3"}]`,
			pools: "openhands=9.95/0/true/k3"},
		{name: "no file: flags make the one pool", args: []string{"--pool", "factory", "--provider", "litellm", "--provider-url", "http://l:4000", "--threshold", "3", "--keys-collection", "fk"}, pools: "factory=3/0/true/fk"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseWith(t, tt.args, tt.env, tt.file)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range c.Pools {
				pool, _ := p.Resolve()
				got = append(got, fmt.Sprintf("%s=%v/%v/%v/%s", pool.Name, p.Threshold, p.BudgetRatio, *p.RotateUnauthorized, pool.KeysCollection))
			}
			if g := strings.Join(got, " "); g != tt.pools {
				t.Errorf("pools %s, want %s", g, tt.pools)
			}
		})
	}
}

// A setting from the command line that replaces a value in the file is said
// at start, never silently.
func TestPoolOverridesAreReported(t *testing.T) {
	file := writeFile(t, `{"mongo-uri": "`+uri+`", "pools": [{"pool": "openhands", "threshold": 9.95}, {"pool": "factory", "provider": "litellm", "provider-url": "http://l:4000", "threshold": 5}]}`)
	c, err := Parse([]string{"--threshold", "5", "--config", file})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Overrides) != 1 || c.Overrides[0] != (Override{Pool: "openhands", Setting: "threshold", Value: "5", FileValue: "9.95"}) {
		t.Errorf("overrides %+v", c.Overrides)
	}
}

func TestHelpSaysDays(t *testing.T) {
	for _, args := range [][]string{{"history", "--help"}, {"history", "-h"}, {"help", "history"}} {
		_, err := Parse(args)
		var hr *HelpRequest
		if !errors.As(err, &hr) {
			t.Fatalf("Parse(%q) = %v, want a help request", args, err)
		}
		if !strings.Contains(hr.Text, "since") || !strings.Contains(hr.Text, "7d") {
			t.Errorf("help does not say --since takes days:\n%s", hr.Text)
		}
	}
}

// A person's first command prints the usage on stdout and exits 0: the
// commands, and each flag with its default and its environment variable;
// a command's help shows its own flags only (docs/configuration.md, "Flags").
// Each command accepts only its own flags, and a command that fails says so
// on stderr once (exit 2 for bad usage).
// A config file may hold every command's settings: status skips the
// daemon's, and still rejects a key no command has.
func TestConfigFileOtherCommandsKeys(t *testing.T) {
	dir := t.TempDir()
	ok := filepath.Join(dir, "ok.json")
	if err := os.WriteFile(ok, []byte(`{"mongo-uri":"mongodb://127.0.0.1:1/fproxy","interval":"5s","since":"2h","lease-name":"x"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Parse([]string{"status", "--config", ok})
	if err != nil || c.LeaseName != "x" || c.Interval != DefaultInterval {
		t.Fatalf("status with a file holding the daemon's settings: %+v, %v", c, err)
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"mongo-uri":"mongodb://127.0.0.1:1/fproxy","intervall":"5s"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Parse([]string{"status", "--config", bad}); err == nil || !strings.Contains(err.Error(), "intervall") {
		t.Fatalf("unknown file key: %v", err)
	}
}
