package cli

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation"
)

// `rotate --dry-run` reads what the real run reads and exits as it does,
// writing nothing; an empty key id is bad usage for both.
func TestRotateDryRunExitsAsTheRealRun(t *testing.T) {
	factory, _ := rotation.Preset("factory")
	twoPools := `{"pools": [{"pool": "openhands"}, {"pool": "factory"}]}`
	for _, tt := range []struct {
		name   string
		seed   func(t *testing.T, mdb *mongotest.DB)
		key    string
		config string // a config file's text, when set
		code   int
		dryOut string // in the dry run's stdout (exit 0) or stderr
	}{
		{"rotates", func(t *testing.T, mdb *mongotest.DB) { apiSeed(t, mdb.Database, apiPool, 2, 1) }, "k0", "", ExitOK, "would rotate k0"},
		{"not found", func(t *testing.T, mdb *mongotest.DB) { apiSeed(t, mdb.Database, apiPool, 2, 1) }, "nope", "", ExitPartial, "key nope not found"},
		{"no backup", func(t *testing.T, mdb *mongotest.DB) { apiSeed(t, mdb.Database, apiPool, 2, 0) }, "k0", "", ExitPartial, "no backup key left"},
		{"already rotated", func(t *testing.T, mdb *mongotest.DB) {
			apiSeed(t, mdb.Database, apiPool, 2, 2)
			if code, out, stderr := runCLI(t, "rotate", "k1", "--mongo-uri", mdb.URI, "--database", mdb.Name); code != ExitOK {
				t.Fatalf("first rotation: exit %d: %s %s", code, out, stderr)
			}
		}, "k1", "", ExitOK, "k1 was already rotated"},
		{"in two pools", func(t *testing.T, mdb *mongotest.DB) {
			apiSeed(t, mdb.Database, apiPool, 1, 1)
			apiSeed(t, mdb.Database, factory, 1, 1)
		}, "k0", twoPools, ExitUsage, "key k0 is in pools openhands and factory"},
		{"found in the second pool", func(t *testing.T, mdb *mongotest.DB) {
			apiSeed(t, mdb.Database, apiPool, 1, 1)
			apiSeed(t, mdb.Database, factory, 0, 0)
			if _, err := mdb.Database.Collection(factory.KeysCollection).InsertOne(context.Background(), bson.M{"_id": "f0", "apiKey": "sk-secret-factory-0000-abcdef"}); err != nil {
				t.Fatal(err)
			}
		}, "f0", twoPools, ExitPartial, "pool factory: no backup key left"},
		{"empty key id", func(t *testing.T, mdb *mongotest.DB) { apiSeed(t, mdb.Database, apiPool, 1, 1) }, "", "", ExitUsage, "key id"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mdb := mongotest.New(t)
			tt.seed(t, mdb)
			args := []string{"rotate", tt.key, "--mongo-uri", mdb.URI, "--database", mdb.Name}
			if tt.config != "" {
				args = append(args, "--config", writeFile(t, tt.config))
			}
			before := storeDump(t, mdb.Database)
			code, out, stderr := runCLI(t, append(args, "--dry-run")...)
			if code != tt.code || !strings.Contains(out+stderr, tt.dryOut) {
				t.Errorf("dry run: exit %d, stdout %q, stderr %q; want exit %d and %q", code, out, stderr, tt.code, tt.dryOut)
			}
			if after := storeDump(t, mdb.Database); after != before {
				t.Errorf("the dry run wrote:\nbefore %s\nafter  %s", before, after)
			}
			if code, out, stderr := runCLI(t, args...); code != tt.code {
				t.Errorf("real run: exit %d (%s %s), the dry run's was %d", code, out, stderr, tt.code)
			}
		})
	}
}

// storeDump is every collection of db, its documents and its indexes.
func storeDump(t *testing.T, db *mongo.Database) string {
	t.Helper()
	ctx := context.Background()
	names, err := db.ListCollectionNames(ctx, bson.M{})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		var docs, idx []bson.Raw
		cur, err := db.Collection(n).Find(ctx, bson.M{})
		if err == nil {
			err = cur.All(ctx, &docs)
		}
		if err != nil {
			t.Fatal(err)
		}
		if cur, err = db.Collection(n).Indexes().List(ctx); err == nil {
			err = cur.All(ctx, &idx)
		}
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s: %v %v; ", n, docs, idx)
	}
	return b.String()
}
