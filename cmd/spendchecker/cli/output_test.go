package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/spendchecker/spendchecker/internal/mongotest"
)

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Run(context.Background(), args, Env{Stdout: &stdout, Stderr: &stderr})
	return code, stdout.String(), stderr.String()
}

// --output takes text or json; anything else is bad usage: exit 2, one line.
func TestOutputFlagValidated(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		env  string
	}{
		{"flag", []string{"status", "--mongo-uri", "mongodb://127.0.0.1:1/x", "--output", "yaml"}, ""},
		{"environment", []string{"history", "--mongo-uri", "mongodb://127.0.0.1:1/x"}, "JSON"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("SPENDCHECKER_OUTPUT", tt.env)
			code, stdout, stderr := runCLI(t, tt.args...)
			if code != ExitUsage || stdout != "" || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "--output must be text or json") {
				t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
			}
		})
	}
}

func TestStatusJSON(t *testing.T) {
	mdb := mongotest.New(t)
	apiSeed(t, mdb.Database, apiPool, 2, 3)
	if _, err := mdb.Database.Collection(apiPool.KeysCollection).UpdateOne(context.Background(), bson.M{"_id": "k1"},
		bson.M{"$set": bson.M{"totalSpend": 5.0, "spendRate": 0.001}}); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := runCLI(t, "status", "--mongo-uri", mdb.URI, "--database", mdb.Name, "--output", "json", "--threshold", "10")
	if code != ExitOK {
		t.Fatalf("exit %d: %s %s", code, out, stderr)
	}
	if strings.Contains(out, "sk-secret") {
		t.Fatalf("status JSON carries a secret:\n%s", out)
	}
	var got struct {
		Lease struct{ Name, State string }
		Pools []struct {
			Name, KeysCollection string
			Threshold            float64
			BackupsLeft          int64
			Keys                 []struct {
				ID, APIKeyMasked, Status string
				Spend                    *float64
				PercentOfThreshold       *float64
				RatePerHour              *float64
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if got.Lease.Name != "spendchecker" || got.Lease.State != "never" || len(got.Pools) != 1 {
		t.Fatalf("%s", out)
	}
	p := got.Pools[0]
	if p.Name != "openhands" || p.KeysCollection != "openhands_keys" || p.Threshold != 10 || p.BackupsLeft != 3 || len(p.Keys) != 2 {
		t.Fatalf("pool: %+v", p)
	}
	k0, k1 := p.Keys[0], p.Keys[1]
	if k0.ID != "k0" || k0.APIKeyMasked != "sk-se...cdef" || k0.Status != "healthy" || k0.Spend != nil || k0.PercentOfThreshold != nil {
		t.Errorf("k0: %+v", k0)
	}
	if k1.Spend == nil || *k1.Spend != 5 || *k1.PercentOfThreshold != 50 || *k1.RatePerHour != 3.6 {
		t.Errorf("k1: %+v", k1)
	}
}

func TestHistoryJSON(t *testing.T) {
	mdb := mongotest.New(t)
	apiSeed(t, mdb.Database, apiPool, 2, 1)
	base := []string{"--mongo-uri", mdb.URI, "--database", mdb.Name}
	if code, out, _ := runCLI(t, append([]string{"history", "--output", "json"}, base...)...); code != ExitOK || strings.TrimSpace(out) != "[]" {
		t.Fatalf("no history: exit %d, %q, want []", code, out)
	}
	if code, out, stderr := runCLI(t, append([]string{"rotate", "k0", "--reason", "manual"}, base...)...); code != ExitOK {
		t.Fatalf("rotate: exit %d: %s %s", code, out, stderr)
	}
	code, out, stderr := runCLI(t, append([]string{"history", "--output", "json"}, base...)...)
	if code != ExitOK {
		t.Fatalf("exit %d: %s %s", code, out, stderr)
	}
	if strings.Contains(out, "sk-secret") {
		t.Fatalf("history JSON carries a secret:\n%s", out)
	}
	var recs []map[string]any
	if err := json.Unmarshal([]byte(out), &recs); err != nil {
		t.Fatalf("not a JSON array: %v\n%s", err, out)
	}
	if len(recs) != 1 {
		t.Fatalf("%d records:\n%s", len(recs), out)
	}
	r := recs[0]
	for f, want := range map[string]any{"pool": "openhands", "keyId": "k0", "newKeyId": "b0", "apiKeyMasked": "sk-se...cdef", "rotationReason": "manual"} {
		if r[f] != want {
			t.Errorf("%s: %v, want %v", f, r[f], want)
		}
	}
	for _, f := range []string{"id", "spend", "threshold", "rotatedAt", "instance", "leaseEpoch"} {
		if _, ok := r[f]; !ok {
			t.Errorf("record has no %q: %v", f, r)
		}
	}
	// Text stays the default.
	if _, out, _ := runCLI(t, append([]string{"history"}, base...)...); !strings.HasPrefix(out, "ROTATED AT") || !strings.Contains(out, "openhands  k0") {
		t.Errorf("text history:\n%s", out)
	}
}

// A number too large to be finite once scaled (a percentage of the
// threshold, a rate per hour) or an old record's "NaN" prints as null: the
// output is JSON, never empty with exit 0.
func TestJSONNonFiniteNumbers(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name  string
		cmd   string
		seed  func(t *testing.T, db *mongo.Database)
		nulls []string // JSON paths printed as null
	}{
		{"status percent of threshold", "status", func(t *testing.T, db *mongo.Database) {
			setKey(t, db, "k0", bson.M{"totalSpend": 1e307})
		}, []string{"pools.0.keys.0.percentOfThreshold"}},
		{"status rate", "status", func(t *testing.T, db *mongo.Database) {
			setKey(t, db, "k0", bson.M{"totalSpend": 1.0, "spendRate": 1e306, "lastSpendCheck": time.Now()})
		}, []string{"pools.0.keys.0.ratePerHour"}},
		{"history spend NaN", "history", func(t *testing.T, db *mongo.Database) {
			if _, err := db.Collection(apiPool.HistoryCollection).InsertOne(ctx, bson.M{"_id": "rot_old", "keyId": "old",
				"spend": "NaN", "threshold": "+Inf", "budget": "-Infinity", "rotatedAt": time.Now().Add(-time.Hour)}); err != nil {
				t.Fatal(err)
			}
		}, []string{"0.spend", "0.threshold", "0.budget"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mdb := mongotest.New(t)
			apiSeed(t, mdb.Database, apiPool, 1, 1)
			tt.seed(t, mdb.Database)
			args := []string{tt.cmd, "--mongo-uri", mdb.URI, "--database", mdb.Name}
			if tt.cmd == "status" {
				args = append(args, "--threshold", "10")
			}
			code, out, stderr := runCLI(t, append(args, "--output", "json")...)
			if code != ExitOK || stderr != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q", code, out, stderr)
			}
			var got any
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("not JSON (%v): %q", err, out)
			}
			for _, path := range tt.nulls {
				v, ok := jsonPath(got, path)
				if !ok || v != nil {
					t.Errorf("%s = %v (present %v), want null\n%s", path, v, ok, out)
				}
			}
			// Text shows such a number as unknown, not as NaN or Inf.
			code, out, stderr = runCLI(t, args...)
			if code != ExitOK || strings.Contains(out, "NaN") || strings.Contains(out, "Inf") {
				t.Errorf("text: exit %d, stdout %q, stderr %q", code, out, stderr)
			}
		})
	}
}

func setKey(t *testing.T, db *mongo.Database, id string, set bson.M) {
	t.Helper()
	if _, err := db.Collection(apiPool.KeysCollection).UpdateOne(context.Background(), bson.M{"_id": id}, bson.M{"$set": set}); err != nil {
		t.Fatal(err)
	}
}

// jsonPath follows a dotted path of keys and array indexes.
func jsonPath(v any, path string) (any, bool) {
	for _, p := range strings.Split(path, ".") {
		switch c := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = c[p]; !ok {
				return nil, false
			}
		case []any:
			i, err := strconv.Atoi(p)
			if err != nil || i >= len(c) {
				return nil, false
			}
			v = c[i]
		default:
			return nil, false
		}
	}
	return v, true
}
