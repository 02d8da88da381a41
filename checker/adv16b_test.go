package checker_test

// Adversarial review of the batch reports through the checker (issue 16,
// item 4). Each test fails on the code as reviewed; the comment above each
// says what it shows and what it costs.

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/spendchecker/spendchecker/checker"
	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/spend"
)

const adv16bAdmin = "sk-admin-adv16b-0123456789abcdef0123456789"

// openAICostsOne answers GET /v1/organization/costs (grouped by
// api_key_id, one daily bucket, has_more false) with the given key totals,
// in the documented page shape.
func openAICostsOne(totals map[string]float64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		results := ""
		for id, v := range totals {
			if results != "" {
				results += ","
			}
			results += fmt.Sprintf(`{"object":"organization.costs.result","amount":{"value":%v,"currency":"usd"},"line_item":null,"project_id":null,"api_key_id":%q}`, v, id)
		}
		fmt.Fprintf(w, `{"object":"page","data":[{"object":"bucket","start_time":1730419200,"end_time":1730505600,"results":[%s]}],"has_more":false,"next_page":null}`, results)
	})
}

// Shows: lagSpend measures "the key's own rate" as the reported spend's
// rise over the time since the last check. A lagging report does not rise
// smoothly: OpenAI's costs (daily buckets) and Anthropic's (whole hours)
// land in steps, so a rise of what the key spent over an hour can appear
// between two checks 20 s apart. Key k1 spends a steady $1/hour (its
// stored spendRate says so); the report moves from $3 to $4 between its
// last check 20 s ago and now. The checker takes $1/20 s = $0.05/s, times
// the 1 h default lag = $180 "hidden", and rotates the key at $4 of 9.95.
// A rise seen after dt can hold spend from up to lag before the last check,
// so the rate it proves is at most rise/(dt+lag) ≈ $1/h here (hidden ≈ $1).
// The inflated rate is also stored as spendRate (the fastest ever, never
// decays), so every later check of the key hides as much.
// Cost: keys rotated at a fraction of their budget: backups burnt, every
// time a report step lands between two close checks (near-threshold keys
// are checked every --min-check-interval).
func TestAdv16b_LagStepReadAsRateRotatesKeyFarBelowThreshold(t *testing.T) {
	ctx := context.Background()
	up := httptest.NewServer(openAICostsOne(map[string]float64{"key_a": 4}))
	defer up.Close()
	db := mongotest.New(t).Database
	seedPool(t, db, nil, openhands, map[string]float64{"k1": 0}, 2)
	coll := db.Collection(openhands.KeysCollection)
	if _, err := coll.UpdateByID(ctx, "k1", bson.M{"$set": bson.M{
		"upstreamKeyId": "key_a", "totalSpend": 3.0, "spendRate": 1.0 / 3600,
		"lastSpendCheck": time.Now().UTC().Add(-20 * time.Second),
	}}); err != nil {
		t.Fatal(err)
	}
	chk := adv16bChecker(t, db, "openai-costs", up.URL)
	sum, err := chk.Cycle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if tot := sum.Total(); tot.Rotated != 0 || countDocs(t, coll, bson.M{"_id": "k1"}) != 1 {
		t.Fatalf("k1 at $4 of $9.95, spending $1/h, rotated (summary %+v): a $1 report step 20 s after the last check read as $0.05/s, i.e. $180 hidden by the 1 h lag", tot)
	}
}

// Shows: the new key a rotation brings in carries no upstreamKeyId: the
// rotator builds it from the backup's _id and apiKey only, and drops the
// backup's upstreamKeyId. With report ids kept on the documents (the way
// docs/providers.md "Batch reports" puts first), every key rotated in fails its
// check for ever ("no report id for this key") — including when it is
// over its threshold.
// Cost: after the first rotation the pool's new keys are unguarded: an
// over key is never rotated and spends past its budget; the only sign is
// a failed-check count.
func TestAdv16b_RotatedInKeyLosesItsReportID(t *testing.T) {
	ctx := context.Background()
	// OpenRouter's list (openrouter.ai/docs/api/api-reference/api-keys/list):
	// the old key over, the backup's key over as well by the next cycle.
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		item := func(hash string, usage float64) string {
			return fmt.Sprintf(`{"hash":%q,"name":"k","label":"sk-or-v1-0e6...1c96","disabled":false,"limit":null,"limit_remaining":null,"limit_reset":null,"include_byok_in_limit":false,"usage":%v,"created_at":"2025-08-24T10:30:00Z","updated_at":"2025-08-24T15:45:00Z"}`, hash, usage)
		}
		fmt.Fprintf(w, `{"data":[%s,%s]}`, item("hash-old", 10.5), item("hash-new", 10.5))
	}))
	defer up.Close()
	db := mongotest.New(t).Database
	seedPool(t, db, nil, openhands, map[string]float64{"old": 0}, 2)
	coll := db.Collection(openhands.KeysCollection)
	if _, err := coll.UpdateByID(ctx, "old", bson.M{"$set": bson.M{"upstreamKeyId": "hash-old"}}); err != nil {
		t.Fatal(err)
	}
	backups := db.Collection(openhands.BackupsCollection)
	for i, h := range []string{"hash-new", "hash-spare"} {
		if _, err := backups.UpdateByID(ctx, fmt.Sprintf("%s-backup-%02d", openhands.Name, i), bson.M{"$set": bson.M{"upstreamKeyId": h}}); err != nil {
			t.Fatal(err)
		}
	}
	chk := adv16bChecker(t, db, "openrouter-keys", up.URL)
	if sum, err := chk.Cycle(ctx); err != nil || sum.Total().Rotated != 1 {
		t.Fatalf("cycle 1: %+v %v", sum.Total(), err)
	}
	var newKey bson.M
	if err := coll.FindOne(ctx, bson.M{"replacedKey": "old"}).Decode(&newKey); err != nil {
		t.Fatal(err)
	}
	sum, err := chk.Cycle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if tot := sum.Total(); tot.Rotated != 1 {
		t.Fatalf("cycle 2: the rotated-in key %v (upstreamKeyId %v; its backup had hash-new) is over at $10.50 and was not rotated: %+v, %q",
			newKey["_id"], newKey["upstreamKeyId"], tot, sum.Pools[0].FailedExample)
	}
}

// Shows: a cost report that names none of the pool's keys reads every key
// as $0, even a key whose document holds $9.50 read from this same
// cumulative report an hour ago. An admin key of another organization (or
// project), a report-since moved forward, or an upstream answering an
// empty page all look like this; the checker writes $0 over $9.50 and the
// key is planned as far from its threshold.
// Cost: the key keeps spending past $9.95 unrotated until the report is
// right again. (docs/providers.md "Batch reports" states that a wrong id reads $0;
// a cumulative figure falling from $9.50 to $0 is a cheap signal to fail
// the check instead.)
func TestAdv16b_EmptyCostReportWipesKnownSpend(t *testing.T) {
	ctx := context.Background()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"object":"page","data":[],"has_more":false,"next_page":null}`)
	}))
	defer up.Close()
	db := mongotest.New(t).Database
	seedPool(t, db, nil, openhands, map[string]float64{"k1": 0}, 1)
	coll := db.Collection(openhands.KeysCollection)
	if _, err := coll.UpdateByID(ctx, "k1", bson.M{"$set": bson.M{
		"upstreamKeyId": "key_a", "totalSpend": 9.5, "lastSpendCheck": time.Now().UTC().Add(-time.Hour),
	}}); err != nil {
		t.Fatal(err)
	}
	chk := adv16bChecker(t, db, "openai-costs", up.URL)
	sum, err := chk.Cycle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := countDocs(t, coll, bson.M{"_id": "k1", "totalSpend": 0.0}); n != 0 || sum.Total().Checked != 0 {
		t.Fatalf("k1 ($9.50 an hour ago) read as a clear $0 from an empty cost report: %+v", sum.Total())
	}
}

// Shows: the lag rule multiplies the lag by spendRate, which is the
// FASTEST rate ever seen over one check interval (a peak: it never
// decays), not a rate the key sustains for the lag's length. A pool moved
// from the per-key `openrouter` provider to `openai-costs` (lag 1 h) keeps
// its keys' stored peaks: five keys at $1–$2 whose fastest 10-second
// window once showed $0.03 (one request finishing: $0.003/s) each "hide"
// $10.80 and are all rotated at the first batch cycle, though the report
// says each spent under $2 of $9.95.
// Cost: a whole pool rotated at once on switching provider (or on any key
// whose one burst × lag passes the threshold): every backup burnt, the
// pool's keys thrown away at 10–20% of their budget.
func TestAdv16b_PeakRateTimesLagRotatesWholePool(t *testing.T) {
	ctx := context.Background()
	totals := map[string]float64{}
	keys := map[string]float64{}
	for i := range 5 {
		totals[fmt.Sprintf("key_%d", i)] = 1 + float64(i)/5
		keys[fmt.Sprintf("k%d", i)] = 0
	}
	up := httptest.NewServer(openAICostsOne(totals))
	defer up.Close()
	db := mongotest.New(t).Database
	seedPool(t, db, nil, openhands, keys, 5)
	coll := db.Collection(openhands.KeysCollection)
	for i := range 5 {
		// As the per-key provider left them: spend read an hour ago, the
		// fastest rate seen over a check interval.
		if _, err := coll.UpdateByID(ctx, fmt.Sprintf("k%d", i), bson.M{"$set": bson.M{
			"upstreamKeyId": fmt.Sprintf("key_%d", i), "totalSpend": totals[fmt.Sprintf("key_%d", i)],
			"spendRate": 0.003, "lastSpendCheck": time.Now().UTC().Add(-time.Hour),
		}}); err != nil {
			t.Fatal(err)
		}
	}
	chk := adv16bChecker(t, db, "openai-costs", up.URL)
	sum, err := chk.Cycle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if tot := sum.Total(); tot.Rotated != 0 {
		t.Fatalf("%d of 5 keys at $1.00-$1.80 of $9.95 rotated (backups left %d): a stored peak rate of $0.003/s taken as sustained for the 1 h lag", tot.Rotated, tot.BackupsLeft)
	}
}

// adv16bChecker is a checker over openhands (threshold $9.95, polling every
// key) whose provider is the batch report kind at url, indexes ensured.
func adv16bChecker(t *testing.T, db *mongo.Database, kind, url string) *checker.Checker {
	t.Helper()
	prov, err := spend.NewBatch(kind, url, &spend.Client{MaxAttempts: 1}, spend.BatchConfig{AdminKey: adv16bAdmin})
	if err != nil {
		t.Fatal(err)
	}
	chk, err := checker.New(db, checker.Config{Pools: []checker.Pool{{Pool: openhands, Provider: prov, Threshold: 9.95}}, Instance: "t", Adaptive: false})
	if err != nil {
		t.Fatal(err)
	}
	if err := chk.EnsureIndexes(context.Background()); err != nil {
		t.Fatal(err)
	}
	return chk
}
