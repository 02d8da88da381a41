package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/internal/fakeupstream"
	"github.com/spendchecker/spendchecker/internal/mongotest"
)

const testMasterKey = "sk-litellm-master-key-0123456789abcdef"

// A pool's refill and retire settings come from its config entry; its
// management key from a file, the systemd credential, the environment, or
// (openrouter-keys) its admin key; never the config file. Without one the
// pool runs with both off.
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
	rc := p.refillConfig()
	if p.managementKey != testMasterKey || rc.Limit != 10 || rc.Below != 3 || rc.To != 10000 {
		t.Fatalf("%+v %+v", p, rc)
	}
	if g, _, _ := p.retireTimes(); g.Minutes() != 2 {
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

// End to end through the command line on a simulated LiteLLM: a --once run
// rotates the key over its threshold, disables it upstream (refused from
// then on) and refills the pool; a dry run only says what it would do.
func TestKeylifeEndToEnd(t *testing.T) {
	mdb := mongotest.New(t)
	apiSeed(t, mdb.Database, apiPool, 3, 1)
	up := fakeupstream.New("litellm")
	t.Cleanup(up.Close)
	up.EnableAdmin(testMasterKey)
	for i := range 3 {
		up.AddManagedKey(fmt.Sprintf("key-%d", i), fmt.Sprintf("sk-secret-key-%06d-abcdef", i), 10)
	}
	up.AddManagedKey("backup-0", "sk-secret-backup-000000-abcdef", 10)
	old := "sk-secret-key-000000-abcdef"
	up.SetSpend(old, 12)
	t.Setenv("SPENDCHECKER_MANAGEMENT_KEY_OPENHANDS", testMasterKey)
	file := writeFile(t, `{"pools": [{"pool": "openhands", "provider": "litellm", "provider-url": "`+up.URL+
		`", "refill-below": 2, "refill-to": 3, "retire": true, "retire-grace": "1ms"}]}`)
	base := []string{"--once", "--mongo-uri", mdb.URI, "--database", mdb.Name, "--config", file, "--listen", "", "--lease-duration", "4s", "--adaptive=false"}

	var out bytes.Buffer
	if code := Run(context.Background(), append(base, "--dry-run"), Env{Stdout: &out, Stderr: &out}); code != ExitOK {
		t.Fatalf("dry run exit %d: %s", code, out.String())
	}
	if !strings.Contains(out.String(), "pool openhands: dry run: would create 2 backup keys upstream") || len(up.ManagedKeys()) != 4 {
		t.Fatalf("dry run:\n%s", out.String())
	}

	out.Reset()
	if code := Run(context.Background(), base, Env{Stdout: &out, Stderr: &out}); code != ExitOK {
		t.Fatalf("--once exit %d: %s", code, out.String())
	}
	if strings.Contains(out.String(), testMasterKey) {
		t.Fatal("the output carries the master key")
	}
	if !up.Disabled(old) {
		t.Fatalf("the rotated key is still enabled upstream:\n%s", out.String())
	}
	req, _ := http.NewRequest(http.MethodGet, up.URL+"/key/info", nil)
	req.Header.Set("Authorization", "Bearer "+old)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the retired key is answered %d", resp.StatusCode)
	}
	n, err := mdb.Database.Collection(apiPool.BackupsCollection).CountDocuments(context.Background(), bson.M{"isUsed": false})
	if err != nil || n != 3 {
		t.Fatalf("%d unused backups after the refill, want 3 (%v)", n, err)
	}
	out.Reset()
	if code := Run(context.Background(), []string{"verify", "--mongo-uri", mdb.URI, "--database", mdb.Name, "--config", file}, Env{Stdout: &out, Stderr: &out}); code != ExitOK {
		t.Fatalf("verify exit %d:\n%s", code, out.String())
	}
}

// Without its management key the pool runs with refill and retire off,
// said once.
func TestKeylifeOffWithoutKey(t *testing.T) {
	mdb := mongotest.New(t)
	apiSeed(t, mdb.Database, apiPool, 1, 1)
	up := fakeupstream.New("litellm")
	t.Cleanup(up.Close)
	up.SetSpend("sk-secret-key-000000-abcdef", 1)
	t.Setenv("SPENDCHECKER_MANAGEMENT_KEY_OPENHANDS", "")
	file := writeFile(t, `{"pools": [{"pool": "openhands", "provider": "litellm", "provider-url": "`+up.URL+`", "retire": true, "refill-below": 2, "refill-to": 3}]}`)
	var out bytes.Buffer
	code := Run(context.Background(), []string{"--once", "--mongo-uri", mdb.URI, "--database", mdb.Name, "--config", file, "--listen", "", "--lease-duration", "4s", "--log-format", "text"},
		Env{Stdout: &out, Stderr: &out})
	if code != ExitOK || strings.Count(out.String(), "refill and retire are off") != 1 {
		t.Fatalf("exit %d:\n%s", code, out.String())
	}
}
