package statuspage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/spendchecker/spendchecker/checker"
	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/lease"
)

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const (
	secretA = "sk-secret-aaaaaaaaaaaa-0001"
	secretB = "sk-secret-bbbbbbbbbbbb-0002"
)

type countBackups struct {
	n   int64
	err error
}

func (c countBackups) BackupsAvailable(context.Context) (int64, error) { return c.n, c.err }

// seed writes keys as the proxy and the checker leave them: a checked key
// with a rate, an unchecked one, one over threshold, one rejected, one
// with fields of the wrong type; two history records and a lease.
func seed(t *testing.T, db *mongo.Database) Source {
	t.Helper()
	ctx := context.Background()
	keys := db.Collection("openhands_keys")
	docs := []any{
		bson.M{"_id": "a", "apiKey": secretA, "status": "healthy", "totalSpend": 4.0, "spendBudget": 10.0,
			"spendRate": 1.0 / 3600, "lastSpendCheck": now.Add(-time.Minute), "nextSpendCheck": now.Add(10 * time.Minute)},
		bson.M{"_id": "b", "apiKey": secretB, "status": "healthy"},
		bson.M{"_id": "c", "apiKey": "sk-secret-cccccccccccc-0003", "status": "healthy", "totalSpend": 9.96,
			"spendRate": 0.001, "lastSpendCheck": now.Add(-2 * time.Second)},
		bson.M{"_id": "d", "apiKey": "sk-secret-dddddddddddd-0004", "status": "healthy", "spendCheckError": "unauthorized",
			"totalSpend": 1.0, "lastSpendCheck": now.Add(-time.Hour)},
		bson.M{"_id": "e", "apiKey": 42, "status": "healthy", "totalSpend": "lots", "spendRate": "fast", "lastSpendCheck": "yesterday"},
	}
	if _, err := keys.InsertMany(ctx, docs); err != nil {
		t.Fatal(err)
	}
	hist := db.Collection("openhands_key_spend_history")
	for i, at := range []time.Time{now.Add(-2 * time.Hour), now.Add(-time.Hour)} {
		if _, err := hist.InsertOne(ctx, bson.M{"_id": "rot" + string(rune('0'+i)), "keyId": "old" + string(rune('0'+i)),
			"apiKeyMasked": "sk-se...000" + string(rune('0'+i)), "spend": 9.97, "threshold": 9.95, "rotatedAt": at,
			"rotationReason": "proactive_threshold_9.97", "newKeyId": "new" + string(rune('0'+i)), "instance": "host-1", "leaseEpoch": 7}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Collection(lease.Collection).InsertOne(ctx, bson.M{"_id": "spendchecker-7", "name": "spendchecker", "epoch": int64(7),
		"holder": "host-1", "acquiredAt": now.Add(-time.Hour), "renewedAt": now.Add(-time.Second)}); err != nil {
		t.Fatal(err)
	}
	return Source{
		Pools:  []Pool{{Name: "openhands", Keys: keys, History: hist, Threshold: 9.95, Backups: countBackups{n: 3}}},
		Leases: db.Collection(lease.Collection), LeaseName: "spendchecker", Rotations: 10,
		Now: func() time.Time { return now },
	}
}

func TestReadBuildsTheViewModel(t *testing.T) {
	db := mongotest.New(t).Database
	snap := seed(t, db).Read(context.Background())
	if len(snap.Errors) != 0 {
		t.Fatalf("errors: %v", snap.Errors)
	}
	if l := snap.Lease; l.State != "held" || l.Holder != "host-1" || l.Epoch != 7 || l.RenewedAt == nil {
		t.Fatalf("lease: %+v", l)
	}
	p := snap.Pools[0]
	if p.Name != "openhands" || p.KeysCollection != "openhands_keys" || p.BackupsLeft == nil || *p.BackupsLeft != 3 || len(p.Keys) != 5 {
		t.Fatalf("pool: %+v", p)
	}
	byID := map[string]KeyView{}
	for _, k := range p.Keys {
		byID[k.ID] = k
	}
	a := byID["a"]
	if a.APIKeyMasked != "sk-se...0001" || *a.Spend != 4 || *a.Budget != 10 || math.Abs(*a.PercentOfThreshold-100*4/9.95) > 1e-9 || a.Over {
		t.Errorf("a: %+v", a)
	}
	// $1/h from 4.00 to 9.95: 5.95 h after its last check.
	if math.Abs(*a.RatePerHour-1) > 1e-9 || a.ThresholdAt == nil ||
		a.ThresholdAt.Sub(now.Add(-time.Minute+5*time.Hour+57*time.Minute)).Abs() > time.Second {
		t.Errorf("a's rate and threshold time: %v %v", *a.RatePerHour, a.ThresholdAt)
	}
	if b := byID["b"]; b.Spend != nil || b.PercentOfThreshold != nil || b.RatePerHour != nil || b.ThresholdAt != nil || b.LastCheck != nil || b.NextCheck != nil {
		t.Errorf("unchecked b: %+v", b)
	}
	if c := byID["c"]; !c.Over || c.ThresholdAt != nil {
		t.Errorf("c over threshold: %+v", c)
	}
	if d := byID["d"]; d.CheckError != "unauthorized" {
		t.Errorf("d: %+v", d)
	}
	if e := byID["e"]; e.APIKeyMasked != "****" || e.Spend != nil || e.RatePerHour != nil || e.LastCheck != nil {
		t.Errorf("e with odd types: %+v", e)
	}
	if len(p.Rotations) != 2 || p.Rotations[0].ID != "rot1" || p.Rotations[0].Pool != "openhands" {
		t.Errorf("rotations, newest first: %+v", p.Rotations)
	}
}

func TestReadKeepsGoingPastErrors(t *testing.T) {
	db := mongotest.New(t).Database
	src := seed(t, db)
	src.Pools[0].Backups = countBackups{err: errors.New("count backups: boom")}
	snap := src.Read(context.Background())
	p := snap.Pools[0]
	if p.BackupsLeft != nil || !strings.Contains(p.Error, "boom") || len(p.Keys) != 5 || len(snap.Errors) != 1 {
		t.Fatalf("a failed backup count hides the rest or goes unreported: %+v %v", p, snap.Errors)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	snap = seed(t, mongotest.New(t).Database).Read(ctx)
	if snap.Lease.Error == "" || len(snap.Errors) < 2 {
		t.Fatalf("a dead store reads as fine: %+v", snap)
	}
}

func TestSnapshotJSONIsMasked(t *testing.T) {
	db := mongotest.New(t).Database
	src := seed(t, db)
	ring := NewRing(3)
	ring.Add(CycleOf(now, checker.Summary{Pools: []checker.PoolSummary{{Pool: "openhands", Due: 2, Checked: 2, Rotated: 1}}, Duration: 1500 * time.Millisecond}, nil))
	src.Cycles = ring
	out, err := json.Marshal(src.Read(context.Background()))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{secretA, secretB, "aaaaaaaaaaaa", "bbbbbbbbbbbb"} {
		if bytes.Contains(out, []byte(s)) {
			t.Fatalf("JSON carries a secret %q: %s", s, out)
		}
	}
	var got struct {
		Lease struct {
			State, Holder string
			Epoch         int64
		}
		Pools []struct {
			Name        string
			BackupsLeft *int64
			Keys        []map[string]any
			Rotations   []map[string]any `json:"recentRotations"`
		}
		Cycles []map[string]any
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if got.Lease.Holder != "host-1" || got.Lease.Epoch != 7 || got.Pools[0].Name != "openhands" || *got.Pools[0].BackupsLeft != 3 {
		t.Fatalf("shape: %s", out)
	}
	k := got.Pools[0].Keys[0]
	for _, f := range []string{"id", "apiKeyMasked", "status", "spend", "budget", "percentOfThreshold", "ratePerHour", "thresholdAt", "overThreshold", "lastCheck", "nextCheck"} {
		if _, ok := k[f]; !ok {
			t.Errorf("key has no %q: %v", f, k)
		}
	}
	if k["apiKeyMasked"] != "sk-se...0001" || k["lastCheck"] != "2026-03-01T11:59:00Z" {
		t.Errorf("key: %v", k)
	}
	if len(got.Pools[0].Rotations) != 2 || len(got.Cycles) != 1 || got.Cycles[0]["durationSeconds"] != 1.5 || got.Cycles[0]["rotated"] != 1.0 {
		t.Errorf("rotations or cycles: %s", out)
	}
}

func TestRingKeepsTheLastCycles(t *testing.T) {
	tests := []struct {
		size, add int
		want      []int // minutes of the cycles kept, newest first
	}{
		{3, 0, []int{}},
		{3, 2, []int{1, 0}},
		{3, 3, []int{2, 1, 0}},
		{3, 7, []int{6, 5, 4}},
		{1, 2, []int{1}},
	}
	var none *Ring
	if got := none.Recent(); len(got) != 0 {
		t.Fatalf("nil ring: %v", got)
	}
	for _, tt := range tests {
		r := NewRing(tt.size)
		for i := range tt.add {
			r.Add(Cycle{At: now.Add(time.Duration(i) * time.Minute)})
		}
		got := r.Recent()
		if len(got) != len(tt.want) {
			t.Fatalf("size %d after %d: %d cycles, want %d", tt.size, tt.add, len(got), len(tt.want))
		}
		for i, m := range tt.want {
			if !got[i].At.Equal(now.Add(time.Duration(m) * time.Minute)) {
				t.Errorf("size %d after %d: #%d is %v, want minute %d", tt.size, tt.add, i, got[i].At, m)
			}
		}
	}
}

func TestCycleOfResults(t *testing.T) {
	clean := checker.Summary{Pools: []checker.PoolSummary{{Checked: 3}}}
	partial := checker.Summary{Pools: []checker.PoolSummary{{Checked: 2, Failed: 1}}}
	for _, tt := range []struct {
		sum  checker.Summary
		err  error
		want string
	}{{clean, nil, "ok"}, {partial, nil, "partial"}, {clean, errors.New("lost the lease"), "error"}} {
		if c := CycleOf(now, tt.sum, tt.err); c.Result != tt.want {
			t.Errorf("%+v %v: %s, want %s", tt.sum, tt.err, c.Result, tt.want)
		}
	}
}

// Times are written in UTC whatever the host's zone (docs/operating.md, "Operations").
func TestTimesAreUTC(t *testing.T) {
	cet := time.FixedZone("CET", 3600)
	snap := Source{Now: func() time.Time { return now.In(cet) }}.Read(context.Background())
	c := CycleOf(now.In(cet), checker.Summary{}, nil)
	out, _ := json.Marshal(struct {
		S *Snapshot
		C Cycle
	}{snap, c})
	if strings.Contains(string(out), "+01:00") {
		t.Fatalf("local times in JSON: %s", out)
	}
}
