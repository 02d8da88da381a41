package main_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/rotation"
)

// A sidecar given only the proxy's environment polls and rotates in the
// proxy's database.
func TestOnceWithTheProxysEnvironment(t *testing.T) {
	e := newEnv(t, map[string]float64{"a": 12, "b": 1}, 1)
	code, out := run(t, []string{"--once", "--provider-url", e.up.URL, "--listen", "", "--log-format", "json"},
		"MONGODB_URI="+e.mdb.URI, "MONGODB_DB_NAME="+e.mdb.Name, "SPENDCHECKER_MONGO_URI=", "SPENDCHECKER_DATABASE=")
	if code != 0 || !strings.Contains(out, "rotated 1") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if n, _ := e.mdb.Database.Collection(openhands.HistoryCollection).CountDocuments(context.Background(), bson.M{"keyId": "a"}); n != 1 {
		t.Fatalf("%d history records for a in the proxy's database, want 1", n)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Every replica serves POST /v1/rotate, the follower too, and the leader
// answers a retry with the follower's rotation.
func TestRotateEndpointOnLeaderAndFollower(t *testing.T) {
	const token = "e2e-rotate-token-0123456789"
	e := newEnv(t, map[string]float64{"a": 1, "b": 2}, 2)
	common := []string{"--interval", "1h"}
	addrs := []string{freeAddr(t), freeAddr(t)}
	var procs []*daemonProc
	for i, name := range []string{"leader", "follower"} {
		args := append(e.args(common...), "--instance", name, "--listen", addrs[i])
		procs = append(procs, startDaemon(t, args, "SPENDCHECKER_ROTATE_TOKEN="+token))
		if i == 0 && !procs[i].waitFor("lease acquired") {
			t.Fatal("the first daemon did not lead")
		}
		if !procs[i].waitFor("spendchecker started") {
			t.Fatalf("%s did not start", name)
		}
	}
	post := func(addr, tok, body string) (int, map[string]string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/rotate", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var got map[string]string
		if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
			t.Fatal(err)
		}
		for _, v := range got {
			if strings.Contains(v, "sk-e2e-") {
				t.Fatalf("answer carries a secret: %v", got)
			}
		}
		return resp.StatusCode, got
	}
	if code, got := post(addrs[1], "wrong-token-0123456789", `{"keyId":"a","reason":"unauthorized"}`); code != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d %v", code, got)
	}
	code, first := post(addrs[1], token, `{"keyId":"a","reason":"unauthorized"}`)
	if code != http.StatusOK || first["outcome"] != "rotated" || first["newKeyId"] == "" {
		t.Fatalf("follower: %d %v", code, first)
	}
	code, again := post(addrs[0], token, `{"keyId":"a","reason":"unauthorized"}`)
	if code != http.StatusOK || again["outcome"] != "already_rotated" || again["rotationId"] != first["rotationId"] || again["newKeyId"] != first["newKeyId"] {
		t.Fatalf("leader on retry: %d %v, want the follower's %v", code, again, first)
	}
	if n, _ := e.mdb.Database.Collection(rotation.JournalCollection).CountDocuments(context.Background(), bson.M{}); n != 1 {
		t.Fatalf("%d rotations, want 1", n)
	}
}
