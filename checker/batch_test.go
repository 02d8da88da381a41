package checker_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/checker"
	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/spend"
)

// A cycle over a pool read through OpenRouter's management key makes one
// report fetch (its pages), not one call per key; a key with no report id
// fails its check rather than reading as spend 0; a key whose reported
// spend plus what the report's lag may hide crosses the threshold rotates
// (docs/providers.md, "Batch reports").
func TestBatchProviderCycle(t *testing.T) {
	if testing.Short() {
		t.Skip("120 keys through a paged report (batch pools end to end: cmd/spendchecker's TestOnceWithBatchProvider)")
	}
	const n = 120
	const admin = "sk-or-v1-management-0123456789abcdef"
	usage := func(i int) float64 {
		switch i {
		case 7:
			return 10.5 // over
		case 8, 9, 10:
			// Under. Key 8's stored rate is a peak, not what the report
			// proves: it must not rotate; key 10's report rose fast enough
			// for the lag to carry it over; key 9 has no rate of its own:
			// the pool's fastest (key 8's, loaded at start with --adaptive)
			// must not rotate it, or a pool would burn every idle key and
			// backup at once.
			return 9
		}
		return float64(i) / 100
	}
	var requests atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if r.URL.Path != "/api/v1/keys" || r.Header.Get("Authorization") != "Bearer "+admin {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":{"code":401,"message":"No auth credentials found"}}`)
			return
		}
		off, _ := strconv.Atoi(r.URL.Query().Get("offset"))
		var items []string
		for i := off; i < n && i < off+100; i++ {
			// openrouter.ai/docs/api/api-reference/api-keys/list (ListData).
			items = append(items, fmt.Sprintf(`{"hash":"hash-%d","name":"k","label":"sk-or-v1-0e6...1c96","disabled":false,"limit":null,"limit_remaining":null,"limit_reset":null,"include_byok_in_limit":false,"usage":%v,"created_at":"2025-08-24T10:30:00Z","updated_at":"2025-08-24T15:45:00Z"}`, i, usage(i)))
		}
		fmt.Fprintf(w, `{"data":[%s]}`, strings.Join(items, ","))
	}))
	defer up.Close()

	ctx := context.Background()
	db := mongotest.New(t).Database
	keys := map[string]float64{}
	for i := range n {
		keys[fmt.Sprintf("k%03d", i)] = 0
	}
	seedPool(t, db, nil, openhands, keys, 3)
	coll := db.Collection(openhands.KeysCollection)
	for i := range n {
		if i == 5 {
			continue // no upstreamKeyId, no mapping
		}
		set := bson.M{"upstreamKeyId": fmt.Sprintf("hash-%d", i)}
		switch i {
		case 8:
			// USD/s, the fastest seen over one check interval: × 2 min of
			// lag it would "hide" $1.20, but a peak is not sustained.
			set["spendRate"] = 0.01
		case 10:
			// No stored rate, but $2 since its check 100 s ago: the
			// report proves at least $2/(100 s + 2 min), so the lag may
			// hide 120 × 2/220 = $1.09.
			set["totalSpend"], set["lastSpendCheck"] = 7.0, time.Now().UTC().Add(-100*time.Second)
		}
		if _, err := coll.UpdateByID(ctx, fmt.Sprintf("k%03d", i), bson.M{"$set": set}); err != nil {
			t.Fatal(err)
		}
	}
	prov, err := spend.NewBatch("openrouter-keys", up.URL, &spend.Client{MaxAttempts: 2, Wait: func(context.Context, time.Duration) error { return nil }},
		spend.BatchConfig{AdminKey: admin, Lag: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	chk, err := checker.New(db, checker.Config{
		Pools:    []checker.Pool{{Pool: openhands, Provider: prov, Threshold: 9.95}},
		Instance: "test-1", Epoch: func() int64 { return 1 }, Adaptive: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := chk.EnsureIndexes(ctx); err != nil {
		t.Fatal(err)
	}
	sum, err := chk.Cycle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// 100 + 20 keys: two pages for 120 keys.
	if got := requests.Load(); got != 2 {
		t.Fatalf("%d upstream requests in a cycle over %d keys, want 2 (the report's pages)", got, n)
	}
	tot := sum.Total()
	if tot.Due != n || tot.Failed != 1 || tot.Rotated != 2 || tot.Checked != n-1 {
		t.Fatalf("summary %+v", tot)
	}
	for id, want := range map[string]int64{"k007": 0, "k008": 1, "k009": 1, "k010": 0, "k005": 1} {
		if got := countDocs(t, coll, bson.M{"_id": id}); got != want {
			t.Errorf("key %s: %d documents, want %d (rotated: 0)", id, got, want)
		}
	}
	// The unmapped key has no spend written: not a reading of 0.
	if got := countDocs(t, coll, bson.M{"_id": "k005", "totalSpend": bson.M{"$exists": true}}); got != 0 {
		t.Error("the unmapped key got a spend")
	}
	if got := countDocs(t, coll, bson.M{"_id": "k009", "totalSpend": 9.0}); got != 1 {
		t.Error("key k009's spend not written")
	}
	if !strings.Contains(sum.Pools[0].FailedExample, "upstreamKeyId") {
		t.Errorf("failure example %q does not say what is missing", sum.Pools[0].FailedExample)
	}
}
