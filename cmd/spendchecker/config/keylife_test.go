package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// testMasterKey is a pool's management key (LiteLLM's master key).
const testMasterKey = "sk-litellm-master-key-0123456789abcdef"

func TestParseKeylife(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "management")
	if err := os.WriteFile(keyFile, []byte(testMasterKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	entry := func(extra string) string {
		return `{"mongo-uri": "` + uri + `", "pools": [{"pool": "openhands", "provider": "litellm", "provider-url": "http://127.0.0.1:4000", "threshold": 9.95` + extra + `}]}`
	}
	c, err := Parse([]string{"--config", writeFile(t, entry(`, "refill-below": 3, "refill-to": 10000, "retire": true, "retire-grace": "2m", "management-key-file": "`+keyFile+`"`))})
	if err != nil {
		t.Fatal(err)
	}
	p := c.Pools[0]
	rc := p.RefillConfig()
	if p.ManagementKey() != testMasterKey || rc.Limit != 10 || rc.Below != 3 || rc.To != 10000 {
		t.Fatalf("%+v %+v", p, rc)
	}
	if g, _, _ := p.RetireTimes(); g.Minutes() != 2 {
		t.Fatalf("retire-grace %v", g)
	}
	if got := adminKeyFiles(c); len(got) != 1 || got[0] != keyFile {
		t.Fatalf("secret files %v", got)
	}

	// From the environment, then a systemd credential before it.
	t.Setenv("SPENDCHECKER_MANAGEMENT_KEY_OPENHANDS", "sk-from-the-environment-0123456789")
	file := writeFile(t, entry(`, "retire": true`))
	if c, err = Parse([]string{"--config", file}); err != nil || c.Pools[0].managementKey != "sk-from-the-environment-0123456789" {
		t.Fatal(c, err)
	}
	creds := t.TempDir()
	if err := os.WriteFile(filepath.Join(creds, "management-key-openhands"), []byte("sk-from-a-credential-0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	if c, err = Parse([]string{"--config", file}); err != nil || c.Pools[0].managementKey != "sk-from-a-credential-0123456789" {
		t.Fatal(c, err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	t.Setenv("SPENDCHECKER_MANAGEMENT_KEY_OPENHANDS", "")

	// None: the pool runs, with refill and retire off.
	if c, err = Parse([]string{"--config", file}); err != nil || c.Pools[0].managementKey != "" || !strings.Contains(c.Pools[0].keylifeOff, "SPENDCHECKER_MANAGEMENT_KEY_OPENHANDS") {
		t.Fatal(c, err)
	}
	// OpenRouter's batch provider reads with the management key already.
	t.Setenv("SPENDCHECKER_ADMIN_KEY_OPENHANDS", testAdminKey)
	c, err = Parse([]string{"--config", writeFile(t, `{"mongo-uri": "`+uri+`", "pools": [{"pool": "openhands", "provider": "openrouter-keys", "retire": true}]}`)})
	if err != nil || c.Pools[0].managementKey != testAdminKey {
		t.Fatal(c, err)
	}
}

func TestParseKeylifeInvalid(t *testing.T) {
	t.Setenv("SPENDCHECKER_MANAGEMENT_KEY_OPENHANDS", testMasterKey)
	for _, tt := range []struct{ name, extra, want string }{
		{"no management API", `, "provider": "deepseek", "retire": true`, "key-management API"},
		{"refill-below alone", `, "refill-below": 3`, "refill-below and refill-to"},
		{"refill-to below refill-below", `, "refill-below": 5, "refill-to": 2`, "refill-to"},
		{"keys cap past the hard bound", `, "refill-below": 1, "refill-to": 2, "refill-max-keys-per-day": 5000`, "refill-max-keys-per-day"},
		{"USD cap below one key", `, "refill-below": 1, "refill-to": 2, "refill-key-limit": 50, "refill-max-usd-per-day": 20`, "refill-max-usd-per-day"},
		{"negative key limit", `, "refill-below": 1, "refill-to": 2, "refill-key-limit": -1`, "key limit"},
		{"grace without retire", `, "retire-grace": "2m"`, `"retire": true`},
		{"bad grace", `, "retire": true, "retire-grace": "soon"`, "retire-grace"},
		{"bad delete-after", `, "retire": true, "retire-delete-after": "-1h"`, "retire-delete-after"},
		{"missing key file", `, "retire": true, "management-key-file": "/nonexistent/key"`, "/nonexistent/key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			provider := `, "provider": "litellm", "provider-url": "http://127.0.0.1:4000"`
			if strings.Contains(tt.extra, `"provider"`) {
				provider = ""
			}
			_, err := Parse([]string{"--config", writeFile(t, `{"mongo-uri": "`+uri+`", "pools": [{"pool": "openhands"`+provider+tt.extra+`}]}`)})
			var ue *UsageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want a usage error about %q", err, tt.want)
			}
		})
	}
}
