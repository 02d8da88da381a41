package mongoidx_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/topology"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation/mongoidx"
)

// Issue 13 case 7: many processes starting at once on a fresh database all
// ensure the same indexes (FerretDB v1 drops the connection on concurrent
// index creation). Every one of them succeeds, and each index exists once.
func TestConcurrentEnsure(t *testing.T) {
	ctx := context.Background()
	mdb := mongotest.New(t)
	idx := []mongoidx.Index{
		{Name: "a_1", Keys: bson.D{{Key: "a", Value: 1}}, Unique: true},
		{Name: "b_1_c_-1", Keys: bson.D{{Key: "b", Value: 1}, {Key: "c", Value: -1}}},
	}
	const n = 20
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		client := mdb.NewClient(t)
		coll := client.Database(mdb.Name).Collection(fmt.Sprintf("c%d", i%2))
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = mongoidx.Ensure(ctx, coll, idx...)
		}()
	}
	close(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent ensure: %v", err)
	}
	for _, c := range []string{"c0", "c1"} {
		names, err := mongoidx.Names(ctx, mdb.Database.Collection(c))
		if err != nil {
			t.Fatal(err)
		}
		if !names["a_1"] || !names["b_1_c_-1"] {
			t.Fatalf("%s indexes %v", c, names)
		}
	}
}

func TestTransient(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"plain", errors.New("bad"), false},
		{"cancelled", context.Canceled, false},
		{"deadline", context.DeadlineExceeded, false},
		{"permanent", mongoidx.Permanent(topology.ServerSelectionError{Wrapped: errors.New("x")}), false},
		// The driver's own server selection timeout (10 s by default)
		// wraps a deadline of its own: the next selection may find the
		// store, and Retry stops at its caller's deadline anyway.
		{"server selection timeout", fmt.Errorf("list indexes: %w", topology.ServerSelectionError{Wrapped: context.DeadlineExceeded}), true},
		{"no server selectable", topology.ServerSelectionError{Wrapped: errors.New("no primary")}, true},
	} {
		if got := mongoidx.Transient(tt.err); got != tt.want {
			t.Errorf("%s: Transient(%v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}

// An index with the right name but another key spec or uniqueness is an
// error naming it and how to fix it; the right one is accepted again.
func TestEnsureRefusesSameNameOtherSpec(t *testing.T) {
	ctx := context.Background()
	db := mongotest.New(t).Database
	keys := bson.D{{Key: "pool", Value: 1}, {Key: "backupId", Value: 1}}
	want := mongoidx.Index{Name: "pool_1_backupId_1_unique", Keys: keys, Unique: true}
	for name, made := range map[string]mongo.IndexModel{
		"not unique":   {Keys: keys, Options: options.Index().SetName(want.Name)},
		"other keys":   {Keys: bson.D{{Key: "pool", Value: 1}}, Options: options.Index().SetName(want.Name).SetUnique(true)},
		"other order":  {Keys: bson.D{{Key: "backupId", Value: 1}, {Key: "pool", Value: 1}}, Options: options.Index().SetName(want.Name).SetUnique(true)},
		"other values": {Keys: bson.D{{Key: "pool", Value: 1}, {Key: "backupId", Value: -1}}, Options: options.Index().SetName(want.Name).SetUnique(true)},
	} {
		coll := db.Collection("j_" + strings.ReplaceAll(name, " ", "_"))
		if _, err := coll.Indexes().CreateOne(ctx, made); err != nil {
			t.Fatal(err)
		}
		err := mongoidx.Ensure(ctx, coll, want)
		if err == nil || !strings.Contains(err.Error(), want.Name) || !strings.Contains(err.Error(), "dropIndex") {
			t.Errorf("%s: Ensure = %v, want an error naming %s and saying to drop it", name, err, want.Name)
		}
	}
	coll := db.Collection("j_right")
	for range 2 {
		if err := mongoidx.Ensure(ctx, coll, want); err != nil {
			t.Fatal(err)
		}
	}
}
