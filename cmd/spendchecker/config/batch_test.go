package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spendchecker/spendchecker/spend"
)

const testAdminKey = "sk-or-v1-management-key-0123456789abcdef"

// A batch pool's settings come from its config entry; its admin key from a
// file, the systemd credential or the environment, never the config file.
func TestParseBatchPool(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "admin")
	if err := os.WriteFile(keyFile, []byte(testAdminKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	file := writeFile(t, `{"mongo-uri": "`+uri+`", "pools": [{"pool": "openhands", "provider": "openrouter-keys", "admin-key-file": "`+keyFile+`",
		"upstream-key-ids": {"key-1": "hash-1"}, "report-lag": "2m", "report-since": "2026-03-01"}]}`)
	c, err := Parse([]string{"--config", file})
	if err != nil {
		t.Fatal(err)
	}
	p := c.Pools[0]
	bc, err := p.batchConfig()
	if err != nil || p.adminKey != testAdminKey || bc.Lag != 2*time.Minute || !bc.Since.Equal(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)) || bc.KeyIDs["key-1"] != "hash-1" {
		t.Fatalf("%+v %+v %v", p, bc, err)
	}
	prov, err := p.NewProvider(&spend.Client{})
	if err != nil || prov.Name() != "openrouter-keys" {
		t.Fatal(prov, err)
	}
	if got := adminKeyFiles(c); len(got) != 1 || got[0] != keyFile {
		t.Fatalf("admin key files %v", got)
	}

	// From the environment, named after the pool.
	t.Setenv("SPENDCHECKER_ADMIN_KEY_OPENHANDS", testAdminKey)
	c, err = Parse([]string{"--mongo-uri", uri, "--provider", "openai-costs"})
	if err != nil || c.Pools[0].adminKey != testAdminKey {
		t.Fatal(c, err)
	}
	// A systemd credential comes before the environment.
	creds := t.TempDir()
	if err := os.WriteFile(filepath.Join(creds, "admin-key-openhands"), []byte("sk-admin-from-credential-0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	c, err = Parse([]string{"--mongo-uri", uri, "--provider", "openai-costs"})
	if err != nil || c.Pools[0].adminKey != "sk-admin-from-credential-0123456789" {
		t.Fatal(c, err)
	}
}

func TestParseBatchInvalid(t *testing.T) {
	for _, tt := range []struct {
		name, file string
		args       []string
		want       string
	}{
		{"no admin key", `{"mongo-uri": "` + uri + `", "pools": [{"pool": "openhands", "provider": "anthropic-costs"}]}`, nil, "SPENDCHECKER_ADMIN_KEY_OPENHANDS"},
		{"flags, no admin key", "", []string{"--mongo-uri", uri, "--provider", "openrouter-keys"}, "admin-key-openhands"},
		{"missing key file", `{"mongo-uri": "` + uri + `", "pools": [{"pool": "openhands", "provider": "openrouter-keys", "admin-key-file": "/nonexistent/admin"}]}`, nil, "/nonexistent/admin"},
		{"bad lag", `{"mongo-uri": "` + uri + `", "pools": [{"pool": "openhands", "provider": "openrouter-keys", "report-lag": "5"}]}`, nil, "report-lag"},
		{"bad since", `{"mongo-uri": "` + uri + `", "pools": [{"pool": "openhands", "provider": "openai-costs", "report-since": "last year"}]}`, nil, "report-since"},
		{"empty mapping", `{"mongo-uri": "` + uri + `", "pools": [{"pool": "openhands", "provider": "openai-costs", "upstream-key-ids": {"k": ""}}]}`, nil, "upstream-key-ids"},
		{"batch settings on a per-key provider", `{"mongo-uri": "` + uri + `", "pools": [{"pool": "openhands", "provider": "openhands", "upstream-key-ids": {"k": "x"}}]}`, nil, "batch providers"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if tt.file != "" {
				args = append(args, "--config", writeFile(t, tt.file))
			}
			_, err := Parse(args)
			var ue *UsageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want a usage error about %q", err, tt.want)
			}
		})
	}
	// The commands that never poll need no admin key.
	if _, err := Parse([]string{"status", "--mongo-uri", uri, "--provider", "openrouter-keys"}); err != nil {
		t.Fatal(err)
	}
}

func TestAdminKeyEnv(t *testing.T) {
	if got := adminKeyEnv("my-pool.2"); got != "SPENDCHECKER_ADMIN_KEY_MY_POOL_2" {
		t.Fatal(got)
	}
}
