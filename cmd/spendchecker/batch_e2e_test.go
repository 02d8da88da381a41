package main_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// The binary with a batch provider (docs/providers.md, "Batch reports"): the admin key
// from the environment, one report per run, the over key rotated, the
// unmapped key a failed check (exit 1); an upstream echoing the admin key
// in its refusal never gets it into the output.
func TestOnceWithBatchProvider(t *testing.T) {
	const admin = "sk-or-v1-e2e-management-0123456789abcdef"
	e := newEnv(t, map[string]float64{"k0": 0, "k1": 0, "k2": 0}, 2)
	keys := e.mdb.Database.Collection(openhands.KeysCollection)
	for i, id := range []string{"k0", "k1"} {
		if _, err := keys.UpdateByID(context.Background(), id, bson.M{"$set": bson.M{"upstreamKeyId": fmt.Sprintf("hash-%d", i)}}); err != nil {
			t.Fatal(err)
		}
	}
	var requests atomic.Int64
	var refuse atomic.Bool
	refuse.Store(true)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if refuse.Load() || r.Header.Get("Authorization") != "Bearer "+admin {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintf(w, `{"error":{"code":401,"message":"Invalid management key %s"}}`, admin)
			return
		}
		// openrouter.ai/docs/api/api-reference/api-keys/list; k0 over 9.95.
		fmt.Fprint(w, `{"data":[{"hash":"hash-0","name":"a","label":"sk-or-v1-0e6...1c96","disabled":false,"limit":null,"limit_remaining":null,"limit_reset":null,"usage":10.5},`+
			`{"hash":"hash-1","name":"b","label":"sk-or-v1-0e7...1c97","disabled":false,"limit":null,"limit_remaining":null,"limit_reset":null,"usage":1.25}]}`)
	}))
	defer up.Close()
	args := []string{"--mongo-uri", e.mdb.URI, "--database", e.mdb.Name, "--provider", "openrouter-keys", "--provider-url", up.URL,
		"--listen", "", "--log-format", "json", "--log-level", "debug", "--once"}

	code, out := run(t, args)
	if code != 2 || !strings.Contains(out, "SPENDCHECKER_ADMIN_KEY_OPENHANDS") {
		t.Fatalf("without an admin key: exit %d\n%s", code, out)
	}

	code, out = run(t, args, "SPENDCHECKER_ADMIN_KEY_OPENHANDS="+admin)
	if code != 1 || strings.Contains(out, admin) || !strings.Contains(out, "refused the admin key") {
		t.Fatalf("refused report: exit %d\n%s", code, out)
	}
	if requests.Load() != 1 {
		t.Fatalf("%d report requests for 3 keys, want 1", requests.Load())
	}

	refuse.Store(false)
	code, out = run(t, args, "SPENDCHECKER_ADMIN_KEY_OPENHANDS="+admin)
	if code != 1 || strings.Contains(out, admin) || !strings.Contains(out, "upstreamKeyId") {
		t.Fatalf("exit %d (want 1: k2 has no report id)\n%s", code, out)
	}
	if requests.Load() != 2 {
		t.Fatalf("%d report requests after the second run, want 2", requests.Load())
	}
	for id, want := range map[string]int64{"k0": 0, "k1": 1, "k2": 1} {
		if n, _ := keys.CountDocuments(context.Background(), bson.M{"_id": id}); n != want {
			t.Errorf("%s: %d documents, want %d\n%s", id, n, want, out)
		}
	}
	if n, _ := keys.CountDocuments(context.Background(), bson.M{"_id": "k1", "totalSpend": 1.25}); n != 1 {
		t.Errorf("k1's spend not written\n%s", out)
	}
}
