package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/spendchecker/spendchecker/checker"
	"github.com/spendchecker/spendchecker/internal/fixture"
	"github.com/spendchecker/spendchecker/rotation"
	"github.com/spendchecker/spendchecker/spend"
)

const benchAdminKey = "sk-bench-admin-0123456789abcdef"

// batchCalls: upstream requests per cycle over the same pool of N keys read
// per key (OpenRouter's GET /api/v1/key with each key) against read from
// one report (GET /api/v1/keys with the management key, 100 keys a page;
// OpenAI's costs grouped by api_key_id, 90 daily buckets a page from the
// default start; Anthropic's analytics cost in 31-day windows, one page
// each here), through the real checker, each upstream an httptest
// server counting what it is asked (docs/providers.md, "Batch reports").
func batchCalls(ctx context.Context, s settings) error {
	const cycles = 3
	n := s.batchKeys
	ch, err := startChild(0, nil)
	if err != nil {
		return err
	}
	defer ch.stop()
	db := ch.client.Database(fmt.Sprintf("batch_%d", n))
	if err := db.Drop(ctx); err != nil {
		return err
	}
	if err := seedBatchKeys(ctx, db, n); err != nil {
		return err
	}
	if err := ch.indexIDs(db.Name()); err != nil {
		return err
	}

	var perKey, list, costs, anth atomic.Int64
	perKeySrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		perKey.Add(1)
		// openrouter.ai/docs/api/api-reference/api-keys/get-current-key.
		fmt.Fprint(w, `{"data":{"label":"sk-or-v1-au7...890","limit":null,"limit_remaining":null,"limit_reset":null,"usage":1,"is_free_tier":false}}`)
	}))
	defer perKeySrv.Close()
	listSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		list.Add(1)
		off, _ := strconv.Atoi(r.URL.Query().Get("offset"))
		var items []string
		for i := off; i < n && i < off+100; i++ {
			items = append(items, fmt.Sprintf(`{"hash":"hash-%d","name":"k","label":"sk-or-v1-0e6...1c96","disabled":false,"limit":null,"limit_remaining":null,"limit_reset":null,"usage":1}`, i))
		}
		fmt.Fprintf(w, `{"data":[%s]}`, strings.Join(items, ","))
	}))
	defer listSrv.Close()
	costSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		costs.Add(1)
		// Buckets from start_time to now, limit a page; every key spent
		// in the page's last bucket.
		q := r.URL.Query()
		start, _ := strconv.ParseInt(q.Get("start_time"), 10, 64)
		limit, _ := strconv.Atoi(q.Get("limit"))
		page, _ := strconv.Atoi(q.Get("page"))
		days := int(time.Since(time.Unix(start, 0)).Hours()/24) + 1
		var res []string
		for i := range n {
			res = append(res, fmt.Sprintf(`{"object":"organization.costs.result","amount":{"value":0.01,"currency":"usd"},"api_key_id":"hash-%d"}`, i))
		}
		more, next := "false", "null"
		if (page+1)*limit < days {
			more, next = "true", fmt.Sprintf(`"%d"`, page+1)
		}
		fmt.Fprintf(w, `{"object":"page","data":[{"object":"bucket","results":[%s]}],"has_more":%s,"next_page":%s}`, strings.Join(res, ","), more, next)
	}))
	defer costSrv.Close()
	anthSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		anth.Add(1)
		// One page per window: Anthropic's page size is not documented.
		var rows []string
		for i := range n {
			rows = append(rows, fmt.Sprintf(`{"group":{"api_key_id":"hash-%d"},"cost":{"amount":"1.5","currency":"USD"}}`, i))
		}
		fmt.Fprintf(w, `{"data":[%s],"has_more":false,"next_page":null}`, strings.Join(rows, ","))
	}))
	defer anthSrv.Close()

	fmt.Printf("\n## upstream calls per cycle: %d keys, %d cycles each, every key due (fixed polling), dry run\n", n, cycles)
	fmt.Printf("%-58s %9s %12s %12s\n", "provider", "keys", "calls/cycle", "wall/cycle")
	hc := &http.Client{Transport: &http.Transport{MaxIdleConns: 16, MaxIdleConnsPerHost: 16}}
	for _, v := range []struct {
		name  string
		count *atomic.Int64
		prov  func() (spend.Provider, error)
	}{
		{"openrouter (per key: GET /api/v1/key)", &perKey, func() (spend.Provider, error) {
			return spend.New("openrouter", perKeySrv.URL, &spend.Client{HTTP: hc})
		}},
		{"openrouter-keys (batch: GET /api/v1/keys, 100 a page)", &list, func() (spend.Provider, error) {
			return spend.NewBatch("openrouter-keys", listSrv.URL, &spend.Client{HTTP: hc}, spend.BatchConfig{AdminKey: benchAdminKey})
		}},
		{"openai-costs (batch: 90 daily buckets a page since 2023)", &costs, func() (spend.Provider, error) {
			return spend.NewBatch("openai-costs", costSrv.URL, &spend.Client{HTTP: hc}, spend.BatchConfig{AdminKey: benchAdminKey})
		}},
		{"anthropic-costs (batch: 31-day windows since 2026-01-01)", &anth, func() (spend.Provider, error) {
			return spend.NewBatch("anthropic-costs", anthSrv.URL, &spend.Client{HTTP: hc}, spend.BatchConfig{AdminKey: benchAdminKey})
		}},
	} {
		prov, err := v.prov()
		if err != nil {
			return err
		}
		chk, err := checker.New(db, checker.Config{
			Pools:       []checker.Pool{{Pool: pool, Provider: prov, Threshold: 9.95, RotateUnauthorized: true}},
			Concurrency: 16, Adaptive: false, BatchSize: 500, Instance: "bench", DryRun: true,
		})
		if err != nil {
			return err
		}
		before := v.count.Load()
		var wall time.Duration
		for range cycles {
			d, err := cycleOnce(ctx, chk, n)
			if err != nil {
				return fmt.Errorf("%s: %w", v.name, err)
			}
			wall += d
		}
		calls := float64(v.count.Load()-before) / cycles
		fmt.Printf("%-58s %9d %12.1f %12s\n", v.name, n, calls, (wall / cycles).Round(time.Millisecond))
	}
	return nil
}

// seedBatchKeys writes n healthy keys, key i reported as hash-i.
func seedBatchKeys(ctx context.Context, db *mongo.Database, n int) error {
	keys := make([]fixture.Key, n)
	for i := range keys {
		keys[i] = fixture.Key{ID: fmt.Sprintf("key-%07d", i), Secret: secretOf(i),
			Fields: bson.M{rotation.FieldUpstreamKeyID: fmt.Sprintf("hash-%d", i)}}
	}
	return fixture.Write(ctx, db, pool, fixture.Pool{Keys: keys, CreatedAt: time.Now().UTC()})
}
