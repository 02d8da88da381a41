package cli

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
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
