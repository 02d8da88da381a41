package checker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/spendchecker/spendchecker/checker"
	"github.com/spendchecker/spendchecker/internal/fakeupstream"
	"github.com/spendchecker/spendchecker/internal/fixture"
	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation"
	"github.com/spendchecker/spendchecker/rotation/history"
	"github.com/spendchecker/spendchecker/spend"
)

var openhands, _ = rotation.Preset("openhands")

func secret(id string) string { return "sk-test-" + id + "-0123456789" }

// seedPool writes keys (id → spend at the upstream, one binding each) and
// backups.
func seedPool(t testing.TB, db *mongo.Database, up *fakeupstream.Server, pool rotation.Pool, keys map[string]float64, backups int) {
	t.Helper()
	f := fixture.Pool{Bindings: 1, CreatedAt: time.Now().UTC()}
	for id, s := range keys {
		f.Keys = append(f.Keys, fixture.Key{ID: id, Secret: secret(id)})
		if up != nil {
			up.SetSpend(secret(id), s)
		}
	}
	for i := range backups {
		id := fmt.Sprintf("%s-backup-%02d", pool.Name, i)
		f.Backups = append(f.Backups, fixture.Backup{ID: id, Secret: secret(id)})
		if up != nil {
			up.SetSpend(secret(id), 0)
		}
	}
	if err := fixture.Write(context.Background(), db, pool, f); err != nil {
		t.Fatal(err)
	}
}

type setup struct {
	db  *mongo.Database
	up  *fakeupstream.Server
	chk *checker.Checker
}

// testWriteTimeout replaces the 30 s bound on a write-back command: the
// test store (FerretDB on SQLite, under the race detector) scans the whole
// table for each fenced update, and on a loaded machine a batch of them
// takes longer than a production store ever should.
const testWriteTimeout = 5 * time.Minute

func newSetup(t testing.TB, keys map[string]float64, backups int, mutate func(*checker.Config)) setup {
	t.Helper()
	db := mongotest.New(t).Database
	up := fakeupstream.New("openhands")
	t.Cleanup(up.Close)
	seedPool(t, db, up, openhands, keys, backups)
	prov, err := spend.New("openhands", up.URL, &spend.Client{MaxAttempts: 2, Wait: func(context.Context, time.Duration) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	cfg := checker.Config{
		Pools:        []checker.Pool{{Pool: openhands, Provider: prov, Threshold: 9.95, RotateUnauthorized: true}},
		Instance:     "test-1",
		Epoch:        func() int64 { return 3 },
		WriteTimeout: testWriteTimeout,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	chk, err := checker.New(db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := chk.EnsureIndexes(context.Background()); err != nil {
		t.Fatal(err)
	}
	return setup{db: db, up: up, chk: chk}
}

func countDocs(t testing.TB, c *mongo.Collection, f any) int64 {
	t.Helper()
	n, err := c.CountDocuments(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func verifyClean(t testing.TB, s setup) {
	t.Helper()
	for _, r := range s.chk.Rotators() {
		probs, err := r.Verify(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range probs {
			t.Errorf("verify: %s", p)
		}
	}
}

func TestCycleDecidesAndRotates(t *testing.T) {
	ctx := context.Background()
	s := newSetup(t, map[string]float64{
		"under": 3.2, "at": 9.95, "over": 10.4, "budget": 10.02, "dead": 1, "broken": 1, "unclear": 1,
	}, 6, nil)
	s.up.SetBudget(secret("budget"), 10)
	s.up.SetStatus(secret("dead"), 401)
	s.up.SetStatus(secret("broken"), 500)
	s.up.SetStatus(secret("unclear"), 404)
	// The upstream rejected "dead" on an earlier check too: a second
	// rejection in a row makes it dead (docs/reliability.md, Reliability).
	if _, err := s.db.Collection(openhands.KeysCollection).UpdateOne(ctx, bson.M{"_id": "dead"}, bson.M{"$set": bson.M{"spendRejectedAt": time.Now().Add(-time.Minute)}}); err != nil {
		t.Fatal(err)
	}

	sum, err := s.chk.Cycle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := sum.Total()
	if got.Due != 7 || got.Rotated != 4 || got.Over != 4 || got.Failed != 2 || got.Unauthorized != 1 || got.BackupsLeft != 2 {
		t.Fatalf("summary %+v", got)
	}
	if sum.Clean() {
		t.Error("a cycle with failed checks reported clean")
	}
	hist := s.db.Collection(openhands.HistoryCollection)
	want := map[string]string{"at": "proactive_threshold_9.95", "over": "proactive_threshold_10.40", "budget": "budget_exceeded_10.02", "dead": "unauthorized"}
	var recs []history.Record
	cur, _ := hist.Find(ctx, bson.M{})
	if err := cur.All(ctx, &recs); err != nil {
		t.Fatal(err)
	}
	if len(recs) != len(want) {
		t.Fatalf("%d history records, want %d", len(recs), len(want))
	}
	for _, r := range recs {
		if want[r.KeyID] != r.RotationReason || r.Threshold != 9.95 || r.LeaseEpoch != 3 || r.Provider != "openhands" || r.Instance != "test-1" {
			t.Errorf("history %+v", r)
		}
	}
	var under bson.M
	if err := s.db.Collection(openhands.KeysCollection).FindOne(ctx, bson.M{"_id": "under"}).Decode(&under); err != nil {
		t.Fatal(err)
	}
	if under["totalSpend"] != 3.2 || under["lastSpendCheck"] == nil || under["nextSpendCheck"] == nil {
		t.Errorf("observation not written back: %v", under)
	}
	for _, id := range []string{"broken", "unclear"} {
		if n := countDocs(t, s.db.Collection(openhands.KeysCollection), bson.M{"_id": id, "lastSpendCheck": bson.M{"$exists": false}}); n != 1 {
			t.Errorf("failed check of %s was rotated or recorded", id)
		}
	}
	verifyClean(t, s)

	// The new keys spend nothing: a second cycle rotates nothing more.
	sum, err = s.chk.Cycle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Total().Rotated != 0 || countDocs(t, hist, bson.M{}) != 4 {
		t.Errorf("second cycle: %+v", sum.Total())
	}
	if n := countDocs(t, s.db.Collection(openhands.KeysCollection), bson.M{}); n != 7 {
		t.Errorf("pool size %d, want 7", n)
	}
}

func TestCycleWithoutBackups(t *testing.T) {
	s := newSetup(t, map[string]float64{"a": 10, "b": 11, "c": 12, "ok": 1}, 1, nil)
	sum, err := s.chk.Cycle(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := sum.Total()
	if got.Rotated != 1 || got.NoBackup != 2 || len(got.Errors) != 2 || sum.Clean() || got.BackupsLeft != 0 {
		t.Fatalf("summary %+v", got)
	}
	if n := countDocs(t, s.db.Collection(openhands.HistoryCollection), bson.M{}); n != 1 {
		t.Errorf("%d history records, want 1", n)
	}
	if n := countDocs(t, s.db.Collection(rotation.JournalCollection), bson.M{}); n != 1 {
		t.Errorf("%d journal entries: no-backup attempts wrote something", n)
	}
	verifyClean(t, s)
}

func TestDryRunWritesNothing(t *testing.T) {
	s := newSetup(t, map[string]float64{"a": 10, "b": 1, "c": 9.99}, 3, func(c *checker.Config) { c.DryRun = true })
	before := dump(t, s.db)
	sum, err := s.chk.Cycle(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := sum.Total(); got.Over != 2 || got.Rotated != 0 {
		t.Fatalf("summary %+v", got)
	}
	if after := dump(t, s.db); after != before {
		t.Errorf("dry run changed the database:\nbefore %s\nafter  %s", before, after)
	}
}

func dump(t testing.TB, db *mongo.Database) string {
	t.Helper()
	ctx := context.Background()
	names, err := db.ListCollectionNames(ctx, bson.M{})
	if err != nil {
		t.Fatal(err)
	}
	out := fmt.Sprint(len(names), " collections\n")
	for _, n := range names {
		cur, err := db.Collection(n).Find(ctx, bson.M{})
		if err != nil {
			t.Fatal(err)
		}
		for cur.Next(ctx) {
			out += n + " " + cur.Current.String() + "\n"
		}
	}
	return out
}

// The proxy rotates a key while our request for its spend is in flight: our
// rotation reports already rotated, and writes no second history record.
func TestKeyRotatedMeanwhileWritesNoHistory(t *testing.T) {
	ctx := context.Background()
	s := newSetup(t, map[string]float64{"k": 12}, 3, nil)
	proxy, err := rotation.New(s.db, openhands, rotation.Config{Owner: "proxy"})
	if err != nil {
		t.Fatal(err)
	}
	s.up.OnRequest = func(sec string) {
		if sec == secret("k") {
			if _, err := proxy.Rotate(ctx, "k", "unauthorized"); err != nil {
				t.Error(err)
			}
		}
	}
	sum, err := s.chk.Cycle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := sum.Total(); got.Rotated != 0 || got.AlreadyRotated != 1 {
		t.Fatalf("summary %+v", got)
	}
	var h history.Record
	if err := s.db.Collection(openhands.HistoryCollection).FindOne(ctx, bson.M{}).Decode(&h); err != nil || h.Instance != "proxy" {
		t.Fatalf("history %+v %v", h, err)
	}
	if n := countDocs(t, s.db.Collection(openhands.HistoryCollection), bson.M{}); n != 1 {
		t.Errorf("%d history records, want 1", n)
	}
	verifyClean(t, s)
}

func TestConcurrencyBound(t *testing.T) {
	keys := map[string]float64{}
	for i := range 60 {
		keys[fmt.Sprintf("k%02d", i)] = 1
	}
	s := newSetup(t, keys, 0, func(c *checker.Config) { c.Concurrency = 5 })
	s.up.Latency = 5 * time.Millisecond
	if _, err := s.chk.Cycle(context.Background()); err != nil {
		t.Fatal(err)
	}
	if m := s.up.MaxInFlight(); m > 5 || m < 2 {
		t.Fatalf("max %d requests in flight, want 2..5", m)
	}
	if s.up.TotalCalls() != 60 {
		t.Fatalf("%d calls, want 60", s.up.TotalCalls())
	}
}

func TestMalformedKeyDocuments(t *testing.T) {
	ctx := context.Background()
	s := newSetup(t, map[string]float64{"good": 1}, 1, func(c *checker.Config) { c.Adaptive = true })
	keys := s.db.Collection(openhands.KeysCollection)
	bad := []any{
		// A plan that is not a date must not hide the key from every cycle.
		bson.M{"_id": "string-plan", "apiKey": secret("string-plan"), "status": "healthy", "nextSpendCheck": "soon"},
		bson.M{"_id": "null-plan", "apiKey": secret("null-plan"), "status": "healthy", "nextSpendCheck": nil},
		bson.M{"_id": "no-secret", "status": "healthy"},
		bson.M{"_id": "num-secret", "apiKey": 42, "status": "healthy"},
		bson.M{"_id": 7, "apiKey": "sk-int-id-000000000", "status": "healthy"},
		bson.M{"_id": "string-spend", "apiKey": secret("string-spend"), "status": "healthy", "totalSpend": "lots", "lastSpendCheck": "yesterday"},
	}
	if _, err := keys.InsertMany(ctx, bad); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"string-spend", "string-plan", "null-plan"} {
		s.up.SetSpend(secret(id), 2)
	}
	sum, err := s.chk.Cycle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := sum.Total(); got.Checked != 4 || got.Failed != 3 || got.Rotated != 0 {
		t.Fatalf("summary %+v", got)
	}
	if n := countDocs(t, keys, bson.M{}); n != 7 {
		t.Errorf("%d keys, want 7: malformed documents must be left alone", n)
	}
	// The checked ones now carry well-typed spend and plan.
	if n := countDocs(t, keys, bson.M{"totalSpend": 2.0, "nextSpendCheck": bson.M{"$type": "date"}}); n != 3 {
		t.Errorf("%d of the 3 mistyped keys rewritten with a number and a date", n)
	}
}

func TestSeveralPools(t *testing.T) {
	ctx := context.Background()
	db := mongotest.New(t).Database
	factory, _ := rotation.Preset("factory")
	upA, upB := fakeupstream.New("openhands"), fakeupstream.New("openrouter")
	defer upA.Close()
	defer upB.Close()
	seedPool(t, db, upA, openhands, map[string]float64{"oa": 9.96, "ob": 2}, 2)
	seedPool(t, db, upB, factory, map[string]float64{"fa": 4.5, "fb": 2}, 2)
	pa, _ := spend.New("openhands", upA.URL, &spend.Client{})
	pb, _ := spend.New("openrouter", upB.URL, &spend.Client{})
	chk, err := checker.New(db, checker.Config{Pools: []checker.Pool{
		{Pool: openhands, Provider: pa, Threshold: 9.95},
		{Pool: factory, Provider: pb, Threshold: 4},
	}})
	if err != nil {
		t.Fatal(err)
	}
	sum, err := chk.Cycle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Pools) != 2 || sum.Pools[0].Rotated != 1 || sum.Pools[1].Rotated != 1 {
		t.Fatalf("summary %+v", sum.Pools)
	}
	for _, id := range []string{"oa", "fa"} {
		if n := countDocs(t, db.Collection(rotation.JournalCollection), bson.M{"oldKeyId": id, "state": "done"}); n != 1 {
			t.Errorf("key %s not rotated", id)
		}
	}
}

func TestNextInterval(t *testing.T) {
	minI, maxI := 10*time.Second, 30*time.Minute
	tests := []struct {
		name           string
		headroom, rate float64
		want           time.Duration
	}{
		{"over", -1, 1, minI},
		{"unknown rate", 5, -1, minI},
		{"idle, no prior", 5, 0, maxI},
		{"far and slow", 9, 0.0001, maxI},
		{"near and fast", 0.05, 0.01, minI},
		{"in between", 1, 0.001, 125 * time.Second},
	}
	for _, tt := range tests {
		if got := checker.NextInterval(tt.headroom, tt.rate, 0, 8, minI, maxI); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

// Simulated spend trajectories on a fake clock: a key far from its
// threshold is polled rarely, a key approaching it ends up polled at the
// minimum interval and is rotated with an overshoot of at most one interval's
// spend.
func TestAdaptiveCadence(t *testing.T) {
	ctx := context.Background()
	clock := clockwork.NewFakeClockAt(time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC))
	s := newSetup(t, map[string]float64{"slow": 1, "near": 9, "idle": 2}, 2, func(c *checker.Config) {
		c.Adaptive, c.Clock = true, clock
		c.MinInterval, c.MaxInterval = 10*time.Second, 30*time.Minute
	})
	rates := map[string]float64{"slow": 0.00001, "near": 0.0005, "idle": 0} // USD per second; near crosses 9.95 after 1900 s
	polls := map[string][]time.Time{}
	spendAtPoll := map[string]float64{}
	s.up.OnRequest = func(sec string) {
		for id := range rates {
			if sec == secret(id) {
				polls[id] = append(polls[id], clock.Now())
				spendAtPoll[id] = s.up.Spend(sec)
			}
		}
	}
	for range 360 { // one simulated hour, a cycle every 10 s
		clock.Advance(10 * time.Second)
		for id, r := range rates {
			s.up.AddSpend(secret(id), r*10)
		}
		if _, err := s.chk.Cycle(ctx); err != nil {
			t.Fatal(err)
		}
	}
	gaps := func(id string) (minGap, maxGap time.Duration) {
		ts := polls[id]
		minGap = time.Hour
		for i := 2; i < len(ts); i++ { // from the third poll on: the rate is known
			g := ts[i].Sub(ts[i-1])
			minGap, maxGap = min(minGap, g), max(maxGap, g)
		}
		return minGap, maxGap
	}
	if n := len(polls["idle"]); n > 4 {
		t.Errorf("idle key polled %d times in an hour, want at most 4", n)
	}
	slowMin, _ := gaps("slow")
	nearMin, nearMax := gaps("near")
	t.Logf("polls in one hour: slow %d (shortest gap %v), near %d (gaps %v..%v)", len(polls["slow"]), slowMin, len(polls["near"]), nearMin, nearMax)
	if len(polls["slow"]) > 5 || slowMin < 29*time.Minute {
		t.Errorf("key far from threshold polled %d times, shortest gap %v", len(polls["slow"]), slowMin)
	}
	if nearMin != 10*time.Second {
		t.Errorf("key approaching its threshold never polled at the minimum interval (shortest gap %v)", nearMin)
	}
	var h history.Record
	if err := s.db.Collection(openhands.HistoryCollection).FindOne(ctx, bson.M{"keyId": "near"}).Decode(&h); err != nil {
		t.Fatalf("near key not rotated: %v", err)
	}
	if over := h.Spend - 9.95; over < 0 || over > rates["near"]*10+1e-9 {
		t.Errorf("rotated at %.4f: overshoot %.4f exceeds one minimum interval's spend", h.Spend, over)
	}
}

// More keys than FerretDB v1 can hold statements open for in one update
// command (about 100): the write-back must still complete, every key
// written. With one bulk write per 500 keys it deadlocks the store.
func TestWriteBackOfManyKeys(t *testing.T) {
	if testing.Short() {
		t.Skip("250 fenced updates, each a table scan on the embedded store")
	}
	ctx := context.Background()
	keys := map[string]float64{}
	for i := range 250 {
		keys[fmt.Sprintf("k%03d", i)] = float64(i%9) + 0.5
	}
	s := newSetup(t, keys, 0, nil)
	sum, err := s.chk.Cycle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := sum.Total(); got.Checked != 250 || got.Failed != 0 || len(got.Errors) != 0 {
		t.Fatalf("summary %+v", got)
	}
	if n := countDocs(t, s.db.Collection(openhands.KeysCollection), bson.M{"totalSpend": bson.M{"$gt": 0}, "lastSpendCheck": bson.M{"$exists": true}}); n != 250 {
		t.Fatalf("%d keys written back, want 250", n)
	}
}
