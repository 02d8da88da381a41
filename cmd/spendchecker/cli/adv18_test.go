package cli

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/cmd/spendchecker/config"
	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation"
)

// The guide for the library says "leave recovery to the daemon: the proxy
// never calls Recover", and to build one rotator per pool, "factory" for
// factory_keys. Here a proxy's factory rotation stopped part-way (its
// process died after inserting the new key): the journal is claimed, the
// pool has one key too many and the binding still points at the old key.
// The operator runs `spendchecker recover --pool factory` — a command that
// never talks to any upstream — and it must complete the rotation. It exits
// 2 instead ("no built-in provider serves its upstream"), and so do verify
// and status: the factory pool's unfinished rotations can be finished only
// by naming a spend provider the pool does not have.
func TestAdv18_FactoryPoolRecoverAndVerifyNeedNoProvider(t *testing.T) {
	mdb := mongotest.New(t)
	db := mdb.Database
	factory, _ := rotation.Preset("factory")
	apiSeed(t, db, factory, 2, 1)

	// The proxy's library rotation dies right after inserting the new key.
	crash := errors.New("proxy process killed")
	proxyRot, err := rotation.New(db, factory, rotation.Config{Owner: "proxy-1",
		AfterStep: func(_ context.Context, _ string, s rotation.Step) error {
			if s == rotation.StepInsertKey {
				return crash
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := proxyRot.Rotate(context.Background(), "k0", "unauthorized"); !errors.Is(err, crash) {
		t.Fatalf("setup: want the saga cut after insert_key, got %v", err)
	}
	if n := apiCount(t, db, rotation.JournalCollection, bson.M{"state": "claimed"}); n != 1 {
		t.Fatalf("setup: %d claimed rotations, want 1", n)
	}

	t.Setenv("SPENDCHECKER_PROVIDER", "")
	for _, cmd := range [][]string{{"verify"}, {"status"}, {"recover"}} {
		t.Run(cmd[0], func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append(append([]string{}, cmd...), "--mongo-uri", mdb.URI, "--database", mdb.Name, "--pool", "factory")
			code := Run(context.Background(), args, Env{Stdout: &stdout, Stderr: &stderr})
			if code == ExitUsage {
				t.Fatalf("spendchecker %s --pool factory: exit 2: %s", cmd[0], stderr.String())
			}
		})
	}
	if n := apiCount(t, db, rotation.JournalCollection, bson.M{"state": "done"}); n != 1 {
		t.Errorf("the factory rotation is still unfinished after recover: %d done", n)
	}
	if n := apiCount(t, db, factory.KeysCollection, bson.M{}); n != 2 {
		t.Errorf("factory pool has %d keys, want 2", n)
	}
}

// One daemon serves both pools on /v1/rotate. Their backups live in two
// collections whose ids are typed by hand in the proxy's admin pages
// (backend openhands.service.ts createBackupKey: _id = data.id), so "b0"
// can exist in both. The journal's backupId index is unique across pools,
// so once the openhands pool used its b0, the factory pool's own unused b0
// can never be claimed: its key gets 409 no_backup while the factory pool
// has a backup left (and BackupsAvailable counts it). Same key id k0 in both
// pools, too. Want: the factory k0 rotated onto the factory b0.
func TestAdv18_RotateAPISameIDsInTwoPools(t *testing.T) {
	db := mongotest.New(t).Database
	factory, _ := rotation.Preset("factory")
	apiSeed(t, db, apiPool, 1, 1)
	apiSeed(t, db, factory, 1, 1)
	api := newRotateAPI(testToken, testRotators(t, db, "r1", "openhands", "factory"), false, slog.New(slog.DiscardHandler))

	oh := apiCall(t, api, "Bearer "+testToken, `{"pool":"openhands","keyId":"k0","reason":"unauthorized"}`)
	if oh.status != 200 || oh.body.Outcome != "rotated" || oh.body.NewKeyID != "b0" {
		t.Fatalf("openhands k0: %d %s", oh.status, oh.raw)
	}
	fa := apiCall(t, api, "Bearer "+testToken, `{"pool":"factory","keyId":"k0","reason":"unauthorized"}`)
	if fa.status != 200 || fa.body.Outcome != "rotated" || fa.body.NewKeyID != "b0" || fa.body.RotationID == oh.body.RotationID {
		t.Errorf("factory k0: %d %s, want 200 rotated onto the factory pool's own unused b0", fa.status, fa.raw)
	}
	if n := apiCount(t, db, factory.BackupsCollection, bson.M{"isUsed": true}); n != 1 {
		t.Errorf("factory pool: %d backups used, want 1", n)
	}
}

// After switching the proxy to the endpoint, the README says to "watch
// spendchecker_rotations_total" (migration step 6), and its alert fires on
// increase(spendchecker_rotations_total{outcome=~"error|no_backup"}[15m]).
// Rotations asked for on POST /v1/rotate — from then on most of them — are
// never counted: a proxy-driven rotation and a proxy-driven no_backup leave
// the metric at 0, so the backups-exhausted alert stays silent.
func TestAdv18_RotateEndpointCountsItsRotations(t *testing.T) {
	mdb := mongotest.New(t)
	apiSeed(t, mdb.Database, apiPool, 2, 1)
	t.Setenv(config.EnvRotateToken, testToken)
	cfg, err := config.Parse([]string{"--mongo-uri", mdb.URI, "--database", mdb.Name, "--listen", ""})
	if err != nil {
		t.Fatal(err)
	}
	a, err := connect(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	mux := http.NewServeMux()
	a.rotateRoutes(mux)

	for _, c := range []struct{ key, outcome string }{{"k0", "rotated"}, {"k1", "no_backup"}} {
		got := apiCall(t, mux, "Bearer "+testToken, `{"keyId":"`+c.key+`","reason":"unauthorized"}`)
		if got.body.Outcome != c.outcome {
			t.Fatalf("%s: %d %s, want %s", c.key, got.status, got.raw, c.outcome)
		}
	}
	for _, outcome := range []string{"rotated", "no_backup"} {
		if v := adv18Counter(t, a, "spendchecker_rotations_total", "openhands", outcome); v != 1 {
			t.Errorf(`spendchecker_rotations_total{pool="openhands",outcome=%q} = %v after one such answer on /v1/rotate, want 1`, outcome, v)
		}
	}
}

// adv18Counter reads one pool/outcome sample from the daemon's registry, as
// a scrape of /metrics would.
func adv18Counter(t *testing.T, a *app, name, pool, outcome string) float64 {
	t.Helper()
	mfs, err := a.met.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["pool"] == pool && labels["outcome"] == outcome {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// daemon() wires POST /v1/rotate in serveHTTP before its prepare loop has
// created the indexes (and keeps serving it while prepare fails and
// retries: "store not ready; retrying"). The rotator's "no backup used
// twice" rests on the journal's unique backupId index, which only prepare
// creates. Two replicas on a database not yet prepared (a fresh one, or a
// prepare that keeps failing), asked in turn — no race — for k1 (A), k2 (B),
// k3 (A): A's cached candidate b2 is already B's live key, the journal
// accepts the second claim, and k3 is deleted with its binding moved onto
// b2. The pool goes from 3 keys to 2. Whatever the fix (serve rotations only
// once prepared, or ensure the indexes first), the pool must keep 3 keys
// and b2 must have one claim.
func TestAdv18_RotateEndpointBeforePrepareUsesBackupTwice(t *testing.T) {
	mdb := mongotest.New(t)
	db := mdb.Database
	ctx := context.Background()
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, id := range []string{"k1", "k2", "k3"} {
		if _, err := db.Collection(apiPool.KeysCollection).InsertOne(ctx, bson.M{"_id": id,
			"apiKey": "sk-secret-" + id + "-0123456789", "status": "healthy", "createdAt": at}); err != nil {
			t.Fatal(err)
		}
		if i < 2 {
			b := []string{"b1", "b2"}[i]
			if _, err := db.Collection(apiPool.BackupsCollection).InsertOne(ctx, bson.M{"_id": b,
				"apiKey": "sk-secret-" + b + "-0123456789", "isUsed": false, "createdAt": at.Add(time.Duration(i) * time.Second)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Setenv(config.EnvRotateToken, testToken)
	replica := func() http.Handler {
		cfg, err := config.Parse([]string{"--mongo-uri", mdb.URI, "--database", mdb.Name, "--listen", ""})
		if err != nil {
			t.Fatal(err)
		}
		a, err := connect(ctx, cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(a.close)
		mux := http.NewServeMux()
		a.rotateRoutes(mux) // as serveHTTP does, before prepare
		return mux
	}
	a, b := replica(), replica()
	for _, s := range []struct {
		h   http.Handler
		key string
	}{{a, "k1"}, {b, "k2"}, {a, "k3"}} {
		apiCall(t, s.h, "Bearer "+testToken, `{"keyId":"`+s.key+`","reason":"unauthorized"}`)
	}
	if n := apiCount(t, db, apiPool.KeysCollection, bson.M{}); n != 3 {
		t.Errorf("pool has %d keys, want 3: a key was lost", n)
	}
	if n := apiCount(t, db, rotation.JournalCollection, bson.M{"backupId": "b2"}); n > 1 {
		t.Errorf("backup b2 claimed by %d rotations", n)
	}
}

// A key whose _id is an ObjectId (the proxy's admin backend or a hand edit
// may write one; the README's endpoint is for proxies in any language, which
// would send its hex). The endpoint answers 404 not_found, which the README
// defines as "the key is gone and no rotation of it is recorded — drop it":
// a live key is dropped from service on a false answer. It should say what
// is wrong (the id exists but is not a string) rather than not_found.
func TestAdv18_RotateAPIObjectIDKeyIsNotNotFound(t *testing.T) {
	db := mongotest.New(t).Database
	apiSeed(t, db, apiPool, 0, 1)
	oid := bson.NewObjectID()
	if _, err := db.Collection(apiPool.KeysCollection).InsertOne(context.Background(), bson.M{"_id": oid,
		"apiKey": "sk-secret-oid-0123456789", "status": "healthy"}); err != nil {
		t.Fatal(err)
	}
	api := newRotateAPI(testToken, testRotators(t, db, "r1", "openhands"), false, slog.New(slog.DiscardHandler))
	a := apiCall(t, api, "Bearer "+testToken, `{"keyId":"`+oid.Hex()+`","reason":"unauthorized"}`)
	if a.body.Outcome == "not_found" {
		t.Errorf("key %s exists (ObjectId _id) but the answer is %d %s", oid.Hex(), a.status, a.raw)
	}
}

// Start-up warns when a secret file is group- or world-readable (README,
// credentials), but the rotate token file — the one secret that lets anyone
// on the host rotate keys and burn backups — is not checked: a 0644 token
// file starts the daemon without a word. (Nor is a MONGODB_URI or
// SPENDCHECKER_ROTATE_TOKEN in the unit's environment file: only
// SPENDCHECKER_MONGO_URI is looked for there.)
func TestAdv18_WorldReadableRotateTokenFileWarns(t *testing.T) {
	mdb := mongotest.New(t)
	tok := t.TempDir() + "/rotate-token"
	if err := os.WriteFile(tok, []byte(testToken+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tok, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(config.EnvRotateToken, "")
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // start, warn, and stop at once: only the start-up checks matter
	var stdout, stderr bytes.Buffer
	code := Run(ctx, []string{"--mongo-uri", mdb.URI, "--database", mdb.Name, "--listen", "", "--log-format", "json",
		"--rotate-token-file", tok}, Env{Stdout: &stdout, Stderr: &stderr})
	if code == ExitUsage {
		t.Fatalf("exit 2: %s", stderr.String())
	}
	if !strings.Contains(stderr.String(), "readable by other users") || !strings.Contains(stderr.String(), tok) {
		t.Errorf("no warning about the world-readable token file %s; stderr:\n%s", tok, stderr.String())
	}
	if strings.Contains(stderr.String()+stdout.String(), testToken) {
		t.Errorf("the token itself was printed")
	}
}
