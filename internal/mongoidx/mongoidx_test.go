package mongoidx_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/internal/mongoidx"
	"github.com/spendchecker/spendchecker/internal/mongotest"
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
	if mongoidx.Transient(nil) || mongoidx.Transient(errors.New("bad")) || mongoidx.Transient(context.Canceled) {
		t.Fatal("plain errors taken for transient")
	}
}
