package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/spendchecker/spendchecker/cmd/spendchecker/config"
	"github.com/spendchecker/spendchecker/internal/fixture"
	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/lease"
	"github.com/spendchecker/spendchecker/rotation"
)

const testToken = "tok-0123456789abcdef-xyz"

// apiSeed writes keys k0..k(n-1), each with a binding, and backups
// b0..b(m-1) the way the proxy writes them.
func apiSeed(t *testing.T, db *mongo.Database, pool rotation.Pool, keys, backups int) {
	t.Helper()
	ctx := context.Background()
	f := fixture.Pool{Bindings: 1, CreatedAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	for i := range keys {
		f.Keys = append(f.Keys, fixture.Key{ID: fmt.Sprintf("k%d", i), Secret: fmt.Sprintf("sk-secret-key-%06d-abcdef", i)})
	}
	for i := range backups {
		f.Backups = append(f.Backups, fixture.Backup{ID: fmt.Sprintf("b%d", i), Secret: fmt.Sprintf("sk-secret-backup-%06d-abcdef", i)})
	}
	if err := fixture.Write(ctx, db, pool, f); err != nil {
		t.Fatal(err)
	}
	r, err := rotation.New(db, pool, rotation.Config{Owner: "seed"})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.EnsureIndexes(ctx); err != nil {
		t.Fatal(err)
	}
}

// releasedLease leaves a released lease, as a previous deployment does: the
// first start takes it at once instead of waiting a lease duration
// (docs/design.md "Lease").
func releasedLease(t *testing.T, db *mongo.Database) {
	t.Helper()
	if _, err := db.Collection(lease.Collection).InsertOne(context.Background(), lease.Record{
		ID: "spendchecker/00000000000000000000", Name: "spendchecker", Holder: "seed", Released: true}); err != nil {
		t.Fatal(err)
	}
}

func testRotators(t *testing.T, db *mongo.Database, owner string, pools ...string) apiRotators {
	t.Helper()
	var out []*rotation.Rotator
	for _, name := range pools {
		p, _ := rotation.Preset(name)
		r, err := rotation.New(db, p, rotation.Config{Owner: owner})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return apiRotators{db, out}
}

type apiAnswer struct {
	status int
	body   rotateResponse
	raw    string
}

func apiCall(t *testing.T, h http.Handler, auth, body string) apiAnswer {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/v1/rotate", strings.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	a := apiAnswer{status: rec.Code, raw: rec.Body.String()}
	if err := json.Unmarshal(rec.Body.Bytes(), &a.body); err != nil {
		t.Fatalf("answer is not JSON: %q", a.raw)
	}
	if strings.Contains(a.raw, "sk-secret") {
		t.Fatalf("answer carries a secret: %s", a.raw)
	}
	return a
}

func apiCount(t *testing.T, db *mongo.Database, coll string, filter any) int64 {
	t.Helper()
	n, err := db.Collection(coll).CountDocuments(context.Background(), filter)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

var apiPool, _ = rotation.Preset("openhands")

func TestRotateAPIDisabledWithoutToken(t *testing.T) {
	db := mongotest.New(t).Database
	apiSeed(t, db, apiPool, 1, 1)
	api := newRotateAPI("", testRotators(t, db, "r1", "openhands"), false, slog.New(slog.DiscardHandler))
	for _, auth := range []string{"", "Bearer ", "Bearer " + testToken} {
		a := apiCall(t, api, auth, `{"keyId":"k0","reason":"unauthorized"}`)
		if a.status != http.StatusForbidden || !strings.Contains(a.body.Error, "--rotate-token-file") {
			t.Errorf("auth %q: got %d %s, want 403 naming how to enable it", auth, a.status, a.raw)
		}
	}
	if n := apiCount(t, db, rotation.JournalCollection, bson.M{}); n != 0 {
		t.Fatalf("%d rotations", n)
	}
}

func TestRotateAPIRefusesBadTokens(t *testing.T) {
	db := mongotest.New(t).Database
	apiSeed(t, db, apiPool, 1, 1)
	api := newRotateAPI(testToken, testRotators(t, db, "r1", "openhands"), false, slog.New(slog.DiscardHandler))
	for _, auth := range []string{"", "Bearer", "Bearer ", "Basic " + testToken, "Bearer " + testToken[:len(testToken)-1],
		"Bearer " + testToken + "x", "Bearer " + strings.ToUpper(testToken), testToken} {
		a := apiCall(t, api, auth, `{"keyId":"k0","reason":"unauthorized"}`)
		if a.status != http.StatusUnauthorized || a.body.Outcome != "" {
			t.Errorf("auth %q: got %d %s, want 401", auth, a.status, a.raw)
		}
	}
	if n := apiCount(t, db, rotation.JournalCollection, bson.M{}); n != 0 {
		t.Fatalf("a refused request rotated: %d journal entries", n)
	}
	// The scheme is case-insensitive (RFC 7235).
	if a := apiCall(t, api, "bearer "+testToken, `{"keyId":"k0","reason":"unauthorized"}`); a.status != http.StatusOK {
		t.Fatalf("right token refused: %d %s", a.status, a.raw)
	}
}

func TestRotateAPIRefusesBadBodies(t *testing.T) {
	db := mongotest.New(t).Database
	apiSeed(t, db, apiPool, 1, 1)
	api := newRotateAPI(testToken, testRotators(t, db, "r1", "openhands"), false, slog.New(slog.DiscardHandler))
	cases := []struct {
		name, body string
		status     int
		want       string
	}{
		{"empty", ``, 400, "JSON object"},
		{"not JSON", `keyId=k0`, 400, "JSON object"},
		{"array", `[{"keyId":"k0"}]`, 400, "JSON object"},
		{"unknown field", `{"keyId":"k0","reason":"manual","apiKey":"sk-x"}`, 400, "unknown field"},
		{"wrong type", `{"keyId":7,"reason":"manual"}`, 400, "JSON object"},
		{"two objects", `{"keyId":"k0","reason":"manual"}{"keyId":"k0","reason":"manual"}`, 400, "trailing data"},
		{"no key id", `{"reason":"manual"}`, 400, "keyId"},
		{"key id too long", `{"keyId":"` + strings.Repeat("k", 300) + `","reason":"manual"}`, 400, "keyId"},
		{"no reason", `{"keyId":"k0"}`, 400, "reason"},
		{"bad reason", `{"keyId":"k0","reason":"Budget Exceeded!"}`, 400, "reason"},
		{"too large", `{"keyId":"k0","reason":"manual","pool":"` + strings.Repeat("p", 5000) + `"}`, 413, "larger than"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := apiCall(t, api, "Bearer "+testToken, c.body)
			if a.status != c.status || !strings.Contains(a.body.Error, c.want) {
				t.Errorf("got %d %s, want %d with %q", a.status, a.raw, c.status, c.want)
			}
		})
	}
	if n := apiCount(t, db, rotation.JournalCollection, bson.M{}); n != 0 {
		t.Fatalf("a refused request rotated: %d journal entries", n)
	}
}

func TestRotateAPIRetryGetsTheSameRotation(t *testing.T) {
	db := mongotest.New(t).Database
	apiSeed(t, db, apiPool, 2, 2)
	api := newRotateAPI(testToken, testRotators(t, db, "r1", "openhands"), false, slog.New(slog.DiscardHandler))
	first := apiCall(t, api, "Bearer "+testToken, `{"keyId":"k0","reason":"unauthorized"}`)
	if first.status != http.StatusOK || first.body.Outcome != "rotated" || first.body.NewKeyID != "b0" ||
		!strings.HasPrefix(first.body.RotationID, "rot_") || first.body.Pool != "openhands" || first.body.KeyID != "k0" {
		t.Fatalf("first: %d %s", first.status, first.raw)
	}
	for i := range 3 {
		again := apiCall(t, api, "Bearer "+testToken, `{"pool":"openhands","keyId":"k0","reason":"unauthorized"}`)
		if again.status != http.StatusOK || again.body.Outcome != "already_rotated" ||
			again.body.RotationID != first.body.RotationID || again.body.NewKeyID != first.body.NewKeyID {
			t.Fatalf("retry %d: %d %s, want already_rotated with %s", i, again.status, again.raw, first.raw)
		}
	}
	if n := apiCount(t, db, rotation.JournalCollection, bson.M{}); n != 1 {
		t.Fatalf("%d rotations, want 1", n)
	}
	if n := apiCount(t, db, apiPool.HistoryCollection, bson.M{}); n != 1 {
		t.Fatalf("%d history records, want 1", n)
	}
	if n := apiCount(t, db, apiPool.BackupsCollection, bson.M{"isUsed": true}); n != 1 {
		t.Fatalf("%d backups used, want 1", n)
	}
}

// Many requests for one key, on two replicas (each its own client and
// rotator): one rotation in the database, and every answer names it.
func TestRotateAPIConcurrentRequestsRotateOnce(t *testing.T) {
	mdb := mongotest.New(t)
	db := mdb.Database
	apiSeed(t, db, apiPool, 3, 3)
	other := mdb.NewClient(t).Database(mdb.Name)
	replicas := []http.Handler{
		newRotateAPI(testToken, testRotators(t, db, "r1", "openhands"), false, slog.New(slog.DiscardHandler)),
		newRotateAPI(testToken, testRotators(t, other, "r2", "openhands"), false, slog.New(slog.DiscardHandler)),
	}
	const n = 24
	answers := make([]apiAnswer, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			answers[i] = apiCall(t, replicas[i%2], "Bearer "+testToken, `{"keyId":"k1","reason":"unauthorized"}`)
		}()
	}
	close(start)
	wg.Wait()
	rotated := 0
	newKey := ""
	for _, a := range answers {
		if a.body.Outcome == "rotated" {
			newKey = a.body.NewKeyID
		}
	}
	for i, a := range answers {
		switch {
		case a.status == http.StatusOK && a.body.Outcome == "rotated":
			rotated++
		case a.status == http.StatusOK && a.body.Outcome == "already_rotated":
		case a.status == http.StatusAccepted && a.body.Outcome == "in_progress":
		default:
			t.Errorf("answer %d: %d %s", i, a.status, a.raw)
		}
		// An in_progress answered before the new key is in the pool names none.
		if a.body.RotationID != answers[0].body.RotationID || (a.body.NewKeyID != newKey && !(a.body.Outcome == "in_progress" && a.body.NewKeyID == "")) {
			t.Errorf("answer %d names another rotation: %s vs %s", i, a.raw, answers[0].raw)
		}
	}
	// One replica's concurrent callers share its single answer.
	if rotated == 0 {
		t.Error("no answer said rotated")
	}
	if got := apiCount(t, db, rotation.JournalCollection, bson.M{}); got != 1 {
		t.Fatalf("%d rotations in the journal, want 1", got)
	}
	if got := apiCount(t, db, apiPool.HistoryCollection, bson.M{}); got != 1 {
		t.Fatalf("%d history records, want 1", got)
	}
	if got := apiCount(t, db, apiPool.KeysCollection, bson.M{}); got != 3 {
		t.Fatalf("%d keys, want 3", got)
	}
	if got := apiCount(t, db, apiPool.BackupsCollection, bson.M{"isUsed": true}); got != 1 {
		t.Fatalf("%d backups used, want 1", got)
	}
	if got := apiCount(t, db, apiPool.BindingsCollection, bson.M{apiPool.BindingKeyField: newKey}); got != 1 {
		t.Fatalf("binding did not follow the key: %d on %s", got, newKey)
	}
}

func TestRotateAPIOutcomes(t *testing.T) {
	db := mongotest.New(t).Database
	apiSeed(t, db, apiPool, 3, 1)
	factory, _ := rotation.Preset("factory")
	apiSeed(t, db, factory, 0, 0)
	one := newRotateAPI(testToken, testRotators(t, db, "r1", "openhands"), false, slog.New(slog.DiscardHandler))
	two := newRotateAPI(testToken, testRotators(t, db, "r1", "openhands", "factory"), false, slog.New(slog.DiscardHandler))
	dry := newRotateAPI(testToken, testRotators(t, db, "r1", "openhands"), true, slog.New(slog.DiscardHandler))
	cases := []struct {
		name    string
		h       http.Handler
		body    string
		status  int
		outcome string
		errHas  string
	}{
		{"unknown pool", one, `{"pool":"nope","keyId":"k0","reason":"manual"}`, 404, "", `unknown pool "nope" (this daemon serves: openhands)`},
		{"pool required when several", two, `{"keyId":"k0","reason":"manual"}`, 400, "", "pool is required: this daemon serves factory, openhands"},
		{"dry run writes nothing", dry, `{"keyId":"k0","reason":"manual"}`, 503, "", "dry run"},
		{"not found", one, `{"keyId":"nope","reason":"manual"}`, 404, "not_found", ""},
		{"rotated", two, `{"pool":"openhands","keyId":"k0","reason":"manual"}`, 200, "rotated", ""},
		{"no backup", one, `{"keyId":"k1","reason":"budget_exceeded"}`, 409, "no_backup", ""},
		{"no backup in the other pool", two, `{"pool":"factory","keyId":"k1","reason":"manual"}`, 404, "not_found", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := apiCall(t, c.h, "Bearer "+testToken, c.body)
			if a.status != c.status || a.body.Outcome != c.outcome || !strings.Contains(a.body.Error, c.errHas) {
				t.Errorf("got %d %s, want %d outcome %q error with %q", a.status, a.raw, c.status, c.outcome, c.errHas)
			}
		})
	}
	if n := apiCount(t, db, rotation.JournalCollection, bson.M{}); n != 1 {
		t.Fatalf("%d rotations, want 1", n)
	}
	if n := apiCount(t, db, apiPool.KeysCollection, bson.M{"_id": "k1"}); n != 1 {
		t.Fatal("no backup: the key must stay")
	}
}

// The daemon's listener: the route is wired from the configuration, and a
// GET is not a rotation.
func TestRotateEndpointOnTheDaemonListener(t *testing.T) {
	mdb := mongotest.New(t)
	apiSeed(t, mdb.Database, apiPool, 1, 1)
	t.Setenv(config.EnvRotateToken, testToken)
	cfg, err := config.Parse([]string{"--mongo-uri", mdb.URI, "--database", mdb.Name, "--listen", ""})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RotateToken != testToken {
		t.Fatalf("token not read from %s", config.EnvRotateToken)
	}
	a, err := connect(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	mux := http.NewServeMux()
	a.rotateRoutes(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/v1/rotate")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET: %d, want 405", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/rotate", strings.NewReader(`{"keyId":"k0","reason":"unauthorized"}`))
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got rotateResponse
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || got.Outcome != "rotated" || got.NewKeyID != "b0" || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("POST: %d %+v", resp.StatusCode, got)
	}
}

// k0 was rotated to b0 and b0 to b1; a late request for k0 gets the live end
// of the chain (b1), never b0, which is deleted (docs/proxy.md, "Way 2").
func TestRotateAPIAlreadyRotatedNamesTheLiveKey(t *testing.T) {
	db := mongotest.New(t).Database
	apiSeed(t, db, apiPool, 1, 2)
	api := newRotateAPI(testToken, testRotators(t, db, "r1", "openhands"), false, slog.New(slog.DiscardHandler))
	first := apiCall(t, api, "Bearer "+testToken, `{"keyId":"k0","reason":"unauthorized"}`)
	second := apiCall(t, api, "Bearer "+testToken, `{"keyId":"b0","reason":"unauthorized"}`)
	if first.body.NewKeyID != "b0" || second.body.NewKeyID != "b1" {
		t.Fatalf("setup: %s then %s", first.raw, second.raw)
	}
	late := apiCall(t, api, "Bearer "+testToken, `{"keyId":"k0","reason":"unauthorized"}`)
	if late.status != http.StatusOK || late.body.Outcome != "already_rotated" || late.body.NewKeyID != "b1" ||
		late.body.RotationID != first.body.RotationID {
		t.Errorf("late request for k0: %d %s, want already_rotated naming b1 with rotation %s", late.status, late.raw, first.body.RotationID)
	}
}

// While the journal's unique backupId index cannot be created (here: the
// journal already holds two claims of one backup), no rotation is served:
// 503 with Retry-After. Once it can, the next request rotates.
func TestRotateAPIWaitsForTheIndexes(t *testing.T) {
	db := mongotest.New(t).Database
	apiSeed(t, db, apiPool, 1, 1)
	ctx := context.Background()
	// A database prepared before, whose index was dropped since.
	if err := db.Collection(rotation.JournalCollection).Indexes().DropOne(ctx, "pool_1_backupId_1_unique"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"rot_x1", "rot_x2"} {
		if _, err := db.Collection(rotation.JournalCollection).InsertOne(ctx, bson.M{"_id": id, "pool": "openhands",
			"oldKeyId": "gone-" + id, "backupId": "dup", "newKeyId": "dup", "state": "done"}); err != nil {
			t.Fatal(err)
		}
	}
	api := newRotateAPI(testToken, testRotators(t, db, "r1", "openhands"), false, slog.New(slog.DiscardHandler))
	req := httptest.NewRequest(http.MethodPost, "/v1/rotate", strings.NewReader(`{"keyId":"k0","reason":"unauthorized"}`))
	req.Header.Set("Authorization", "Bearer "+testToken)
	rec := httptest.NewRecorder()
	api.ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("without the indexes: %d (Retry-After %q) %s, want 503 with Retry-After", rec.Code, rec.Header().Get("Retry-After"), rec.Body)
	}
	if n := apiCount(t, db, rotation.JournalCollection, bson.M{"oldKeyId": "k0"}); n != 0 {
		t.Fatalf("rotated without the indexes: %d journal entries for k0", n)
	}
	if _, err := db.Collection(rotation.JournalCollection).DeleteOne(ctx, bson.M{"_id": "rot_x2"}); err != nil {
		t.Fatal(err)
	}
	if a := apiCall(t, api, "Bearer "+testToken, `{"keyId":"k0","reason":"unauthorized"}`); a.status != http.StatusOK || a.body.Outcome != "rotated" {
		t.Fatalf("once the indexes can be made: %d %s, want rotated", a.status, a.raw)
	}
}

// A client that hangs up is not a failure: the rotation completes and the
// log says so calmly (no "rotate request failed").
func TestRotateAPIClientHangsUp(t *testing.T) {
	db := mongotest.New(t).Database
	apiSeed(t, db, apiPool, 1, 1)
	var logs syncBuffer
	api := newRotateAPI(testToken, testRotators(t, db, "r1", "openhands"), false, slog.New(slog.NewTextHandler(&logs, nil)))
	// Indexes first, so the hang-up lands on the rotation itself.
	if err := api.ensureIndexes(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/v1/rotate", strings.NewReader(`{"keyId":"k0","reason":"unauthorized"}`))
	req.Header.Set("Authorization", "Bearer "+testToken)
	api.ServeHTTP(httptest.NewRecorder(), req)
	// A second request joins the flight still running, or reads its result.
	if a := apiCall(t, api, "Bearer "+testToken, `{"keyId":"k0","reason":"unauthorized"}`); a.body.Outcome != "rotated" && a.body.Outcome != "already_rotated" {
		t.Fatalf("after the hang-up: %d %s", a.status, a.raw)
	}
	if n := apiCount(t, db, rotation.JournalCollection, bson.M{"oldKeyId": "k0", "state": "done"}); n != 1 {
		t.Errorf("rotation of k0 not completed: %d done", n)
	}
	if strings.Contains(logs.String(), "rotate request failed") || strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("a hang-up was logged as a failure:\n%s", logs.String())
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A key whose _id is not a string (a number, an ObjectId, a UUID) cannot
// be rotated by the rotator; answering not_found would tell the proxy to
// drop a live key, so the answer is 422: rotate it by hand.
func TestRotateAPINonStringID(t *testing.T) {
	db := mongotest.New(t).Database
	apiSeed(t, db, apiPool, 1, 2)
	oid := bson.NewObjectID()
	uuid := bson.Binary{Subtype: bson.TypeBinaryUUID, Data: []byte{0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0}}
	for i, id := range []any{int32(42), int64(9007199254740993), 42.5, oid, uuid} {
		if _, err := db.Collection(apiPool.KeysCollection).InsertOne(context.Background(),
			bson.M{"_id": id, "apiKey": fmt.Sprintf("sk-secret-odd-id-%06d-abcdef", i), "status": "healthy"}); err != nil {
			t.Fatal(err)
		}
	}
	api := newRotateAPI(testToken, testRotators(t, db, "r1", "openhands"), false, slog.New(slog.DiscardHandler))
	var counted []string
	api.counted = func(_, outcome string) { counted = append(counted, outcome) }
	for _, c := range []struct {
		keyID  string
		status int
	}{
		{"42", 422}, {"42.0", 422}, {"9007199254740993", 422}, {"42.5", 422}, {oid.Hex(), 422},
		{"12345678-9abc-def0-1234-56789abcdef0", 422},
		{"43", 404}, {"9007199254740992", 404}, {"nope", 404},
	} {
		t.Run(c.keyID, func(t *testing.T) {
			counted = nil
			a := apiCall(t, api, "Bearer "+testToken, fmt.Sprintf(`{"keyId":%q,"reason":"unauthorized"}`, c.keyID))
			if a.status != c.status {
				t.Fatalf("got %d %s, want %d", a.status, a.raw, c.status)
			}
			if c.status == 422 && (a.body.Outcome != "" || !strings.Contains(a.body.Error, "rotate it by hand") || len(counted) != 1 || counted[0] == "not_found") {
				t.Errorf("got %s, counted %v; want no outcome, an error saying to rotate it by hand, not counted as not_found", a.raw, counted)
			}
			if c.status == 404 && a.body.Outcome != "not_found" {
				t.Errorf("got %s, want not_found", a.raw)
			}
		})
	}
	if n := apiCount(t, db, apiPool.KeysCollection, bson.M{}); n != 6 {
		t.Errorf("%d keys, want 6", n)
	}
}
