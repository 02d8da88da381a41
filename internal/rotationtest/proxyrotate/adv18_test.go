package proxyrotate_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation/proxyrotate"
)

// adv18Seed writes keys (each with one binding) and backups the way the
// proxy's admin backend does, and nothing else: no index spendchecker
// creates, as on a database the daemon never prepared (it has not started
// yet, runs --dry-run, or the proxy was switched over first).
func adv18Seed(t *testing.T, db *mongo.Database, keys, backups []string) {
	t.Helper()
	ctx := context.Background()
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, id := range keys {
		if _, err := db.Collection("openhands_keys").InsertOne(ctx, bson.M{"_id": id,
			"apiKey": "sk-live-" + id + "-0123456789abcdef", "status": "healthy", "createdAt": at}); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Collection("openhands_bindings").InsertOne(ctx, bson.M{"_id": "bind-" + id,
			"proxyId": "p1", "openhandsKeyId": id, "priority": 1, "isActive": true, "createdAt": at}); err != nil {
			t.Fatal(err)
		}
	}
	for i, id := range backups {
		if _, err := db.Collection("openhands_backup_keys").InsertOne(ctx, bson.M{"_id": id,
			"apiKey": "sk-spare-" + id + "-0123456789abcdef", "isUsed": false, "activated": false,
			"createdAt": at.Add(time.Duration(i) * time.Second)}); err != nil {
			t.Fatal(err)
		}
	}
}

func adv18Open(t *testing.T, m *mongotest.DB, owner string) *proxyrotate.Rotator {
	t.Helper()
	r, err := proxyrotate.Open(context.Background(), m.URI, m.Name, "openhands", owner, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close(context.Background()) })
	return r
}

// Two proxy replicas adopt the library as the guide says (Open once, call
// Rotate where they used to rotate) on a database spendchecker has not
// prepared. Rotations are sequential — no race at all — yet proxy A's third
// rotation takes the backup proxy B already turned into a live key: the
// journal's unique backupId index, the only thing that stops a backup being
// used twice, is created by nobody on this path. The key k3 is archived and
// deleted, its binding moved onto b2, and the pool shrinks from 3 to 2.
// Open (or the first Rotate) should ensure the indexes the rotator's
// guarantees rest on; then k3 gets no_backup and stays.
func TestAdv18_LibraryWithoutDaemonIndexesUsesBackupTwice(t *testing.T) {
	ctx := context.Background()
	m := mongotest.New(t)
	adv18Seed(t, m.Database, []string{"k1", "k2", "k3"}, []string{"b1", "b2"})
	proxyA := adv18Open(t, m, "proxy-a")
	proxyB := adv18Open(t, m, "proxy-b")

	steps := []struct {
		who   *proxyrotate.Rotator
		name  string
		key   string
		want  string
		swapT string
	}{
		{proxyA, "A", "k1", "rotated", "b1"},
		{proxyB, "B", "k2", "rotated", "b2"},
		{proxyA, "A", "k3", "no_backup", ""},
	}
	for _, s := range steps {
		act, err := s.who.Rotate(ctx, s.key, proxyrotate.Decision{Reason: "unauthorized"})
		if err != nil {
			t.Errorf("proxy %s rotating %s: %v", s.name, s.key, err)
			continue
		}
		if act.Outcome != s.want || act.SwapTo != s.swapT {
			t.Errorf("proxy %s rotating %s: outcome %s swap to %q, want %s swap to %q",
				s.name, s.key, act.Outcome, act.SwapTo, s.want, s.swapT)
		}
	}
	keys, err := m.Database.Collection("openhands_keys").CountDocuments(ctx, bson.M{})
	if err != nil {
		t.Fatal(err)
	}
	if keys != 3 {
		t.Errorf("pool has %d keys after the rotations, want 3 (a key was lost)", keys)
	}
	var claims []bson.M
	cur, err := m.Database.Collection("key_rotations").Find(ctx, bson.M{"backupId": "b2"})
	if err != nil {
		t.Fatal(err)
	}
	if err := cur.All(ctx, &claims); err != nil {
		t.Fatal(err)
	}
	if len(claims) != 1 {
		var olds []any
		for _, c := range claims {
			olds = append(olds, c["oldKeyId"])
		}
		t.Errorf("backup b2 claimed by %d rotations (of %v), want 1", len(claims), fmt.Sprint(olds))
	}
}

// The guide's table: on already_rotated "swap in act.SwapTo (the new key id;
// load it ...)". A request that was in flight with k1 (a long stream) gets
// its 401 late, after k1 was rotated to b1 and b1 itself was rotated to b2.
// Rotate(k1) answers already_rotated with SwapTo "b1" — a key that was
// archived and deleted — so the proxy, doing as told, puts a dead id back
// in its pool. SwapTo must name a live key (b2, the end of the chain) or be
// empty (drop and wait for the reload); never a deleted one.
func TestAdv18_AlreadyRotatedSwapsToADeletedKey(t *testing.T) {
	ctx := context.Background()
	m := mongotest.New(t)
	adv18Seed(t, m.Database, []string{"k1"}, []string{"b1", "b2"})
	proxy := adv18Open(t, m, "proxy-a")

	for _, step := range []struct{ key, swapTo string }{{"k1", "b1"}, {"b1", "b2"}} {
		act, err := proxy.Rotate(ctx, step.key, proxyrotate.Decision{Reason: "unauthorized"})
		if err != nil || act.Outcome != "rotated" || act.SwapTo != step.swapTo {
			t.Fatalf("setup: rotate %s: %+v %v, want rotated to %s", step.key, act, err, step.swapTo)
		}
	}
	act, err := proxy.Rotate(ctx, "k1", proxyrotate.Decision{Reason: "unauthorized"})
	if err != nil {
		t.Fatal(err)
	}
	if act.Outcome != "already_rotated" {
		t.Fatalf("late 401 on k1: outcome %s, want already_rotated", act.Outcome)
	}
	if act.SwapTo == "" {
		return
	}
	n, err := m.Database.Collection("openhands_keys").CountDocuments(ctx, bson.M{"_id": act.SwapTo})
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("already_rotated tells the proxy to swap in %q, which is not a key any more (it was rotated to b2)", act.SwapTo)
	}
}

// ShouldRotate claims to follow the proxy's own CheckAndRotateOnError, and
// the README says it "is the same rule". The factory pool's rule
// (goproxy/internal/keypool/rotation.go, CheckAndRotateOnError, TrollLLM
// main) also rotates a key whose error body says invalid_api_key or revoked,
// whatever the status but 429 (bodyLower contains "invalid_api_key" or
// "revoked"). ShouldRotate drops that branch, so once the proxy adopts it a
// revoked factory key answered with such a body stays in service — and the
// daemon cannot catch it either, as no built-in provider polls factory keys.
func TestAdv18_ShouldRotateMissesTheFactoryRevokedKeyRule(t *testing.T) {
	cases := []struct {
		status int
		body   string
	}{
		{400, `{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","code":"invalid_api_key"}}`},
		{500, `{"error":{"message":"This API key has been revoked."}}`},
		{404, `{"detail":"invalid_api_key"}`},
	}
	for _, c := range cases {
		if _, ok := proxyrotate.ShouldRotate(c.status, c.body); !ok {
			t.Errorf("ShouldRotate(%d, %s) = false; the proxy's factory rule rotates it", c.status, c.body)
		}
	}
	// 429 stays a cooldown in the proxy's rule too.
	if _, ok := proxyrotate.ShouldRotate(429, `{"error":"rate limited, key revoked? no"}`); ok {
		t.Error("429 must stay a cooldown")
	}
}

// ShouldRotate is what the guide tells the proxy to rotate on. The project's
// own rule for the same upstream answers (spend/provider.go, docs/providers.md
// "Providers"): a 401/403 is a dead key only when it is the provider's JSON
// error, never a CDN/WAF block page; and a budget shared by many keys (a
// LiteLLM team budget) never rotates one key — "rotating would burn backups
// without helping". ShouldRotate rotates on all of them. The proxy sends
// every key of an egress IP through the same CDN, and every key of a team
// hits the same team budget, so one block page or one team budget turns
// into one rotation per key until the backups are gone; the new keys fail
// the same way. Fixtures: the texts spend/spend_test.go already cites
// (Cloudflare's block page and error 1020; litellm auth_checks.py and
// user_api_key_auth.py team-budget errors).
func TestAdv18_ShouldRotateBurnsBackupsOnBlocksAndSharedBudgets(t *testing.T) {
	cases := []struct {
		name   string
		status int
		body   string
	}{
		{"CDN block page", 403, `<!DOCTYPE html><html><head><title>Attention Required! | Cloudflare</title></head><body><h1>Sorry, you have been blocked</h1></body></html>`},
		{"CDN error 1020", 403, `{"type":"https://developers.cloudflare.com/support/troubleshooting/http-status-codes/cloudflare-1xxx-errors/error-1020/","title":"Error 1020: Access denied","status":403,"detail":"The site owner has blocked access based on your browser's signature.","error_code":1020}`},
		{"LiteLLM team budget", 400, `{"error":{"message":"Budget has been exceeded! Team=team-a Current cost: 51.2, Max budget: 50.0","type":"budget_exceeded","param":null,"code":"400"}}`},
		{"LiteLLM team budget, token form", 401, `{"error":{"message":"Authentication Error, ExceededTokenBudget: Current Team Spend: 51.2; Max Budget for Team: 50.0","type":"auth_error","param":"None","code":"401"}}`},
	}
	for _, c := range cases {
		if reason, ok := proxyrotate.ShouldRotate(c.status, c.body); ok {
			t.Errorf("%s (%d): ShouldRotate says rotate (%s); not a statement about this key", c.name, c.status, reason)
		}
	}
}

// Open's doc says dbName is "the proxy's MONGODB_DB_NAME". The proxy treats
// an unset MONGODB_DB_NAME as fproxy (goproxy/db/mongodb.go GetDatabase);
// a proxy that passes os.Getenv("MONGODB_DB_NAME") straight through, as the
// doc invites, gets a Rotator that Open accepted and whose every Rotate
// fails — and the guide says to drop the key on an error and carry on, so
// dead keys are dropped and never rotated. Open must default "" to fproxy
// like the proxy, or refuse it at start-up.
func TestAdv18_OpenWithUnsetDatabaseName(t *testing.T) {
	ctx := context.Background()
	m := mongotest.New(t)
	r, err := proxyrotate.Open(ctx, m.URI, "", "openhands", "proxy-a", nil)
	if err != nil {
		return // refused at start-up: fine
	}
	defer r.Close(ctx)
	if _, err := r.Rotate(ctx, "k-unknown", proxyrotate.Decision{Reason: "unauthorized"}); err != nil {
		t.Errorf("Open accepted database name \"\" and every Rotate now fails: %v", err)
	}
}
