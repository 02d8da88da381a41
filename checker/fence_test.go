package checker

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation"
)

// readFence reads doc's fence as readKey does.
func readFence(doc bson.Raw) fenceRead {
	s, _ := doc.Lookup(rotation.FieldAPIKey).StringValueOK()
	return fenceOf(doc.Lookup(FieldLastCheck), s, doc)
}

// The fence checked on read (FenceOnRead) is the fence's filter
// (FenceInFilter) evaluated by the checker: over every kind of stored
// spendEpoch and lastSpendCheck, for writers of an ordinary epoch and at the
// top of the range, it admits exactly the keys the store's filter matches.
func TestFenceOnReadAgreesWithFilter(t *testing.T) {
	ctx := context.Background()
	mdb := mongotest.New(t)
	coll := mdb.Database.Collection("fence")
	t0 := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	at := t0.Add(500 * time.Microsecond) // stored dates are milliseconds
	epochs := []any{nil, "3", true, int32(2), int32(3), int32(4), int64(2), int64(3), int64(4), int64(1003), int64(1004),
		int64(1_000_000), 2.5, 3.0, 3.5, 1003.5, int64(math.MaxInt64), int64(math.MaxInt64 - 400), int64(math.MinInt64)}
	if !ferretDB(t, mdb.Database) {
		// FerretDB v1 stores neither NaN nor infinities.
		epochs = append(epochs, math.NaN(), math.Inf(1), math.Inf(-1), 1e300)
	}
	checks := []any{t0.Add(-time.Minute), t0.Add(-time.Millisecond), t0, t0.Add(time.Minute), "yesterday"}
	var docs []any
	for i, e := range append(epochs, "missing") {
		for j, c := range append(checks, "missing") {
			d := bson.D{{Key: "_id", Value: fmt.Sprintf("e%02d-c%d", i, j)}}
			if e != "missing" {
				d = append(d, bson.E{Key: FieldEpoch, Value: e})
			}
			if c != "missing" {
				d = append(d, bson.E{Key: FieldLastCheck, Value: c})
			}
			docs = append(docs, d)
		}
	}
	if _, err := coll.InsertMany(ctx, docs); err != nil {
		t.Fatal(err)
	}
	cur, err := coll.Find(ctx, bson.M{})
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string]bson.Raw{}
	for cur.Next(ctx) {
		stored[cur.Current.Lookup("_id").StringValue()] = append(bson.Raw(nil), cur.Current...)
	}
	if err := cur.Err(); err != nil || len(stored) != len(docs) {
		t.Fatalf("read %d of %d documents: %v", len(stored), len(docs), err)
	}
	for _, epoch := range []int64{3, math.MaxInt64 - 500, math.MaxInt64} {
		t.Run(fmt.Sprint(epoch), func(t *testing.T) {
			cur, err := coll.Find(ctx, bson.M{"$or": fence(epoch, at)})
			if err != nil {
				t.Fatal(err)
			}
			matched := map[string]bool{}
			for cur.Next(ctx) {
				matched[cur.Current.Lookup("_id").StringValue()] = true
			}
			if err := cur.Err(); err != nil {
				t.Fatal(err)
			}
			admitted := 0
			for id, doc := range stored {
				got := readFence(doc).admits(epoch, at)
				if got != matched[id] {
					t.Errorf("%s: on read %v, the store's filter %v", doc, got, matched[id])
				}
				if got {
					admitted++
				}
			}
			if admitted == 0 || admitted == len(stored) {
				t.Fatalf("%d of %d admitted: the table tells nothing", admitted, len(stored))
			}
		})
	}
}

// FerretDB v1's SQLite backend hands a filter to SQL only when it is _id
// alone, a string or an ObjectId (backends/sqlite, collection.Query); any
// other filter is evaluated in Go over every document. No way of writing
// the fence into the filter keeps that lookup, which is why FerretDB v1
// gets FenceOnRead. Should a FerretDB release push one of these forms down,
// this fails: the fence can then go back into the filter there.
func TestFencedFiltersScanOnFerretDBV1(t *testing.T) {
	ctx := context.Background()
	mdb := mongotest.New(t)
	if !ferretDB(t, mdb.Database) {
		t.Skip("FerretDB v1's pushdown rule; MongoDB finds each of these by _id")
	}
	coll := mdb.Database.Collection("keys")
	id := bson.NewObjectID()
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: id}}); err != nil {
		t.Fatal(err)
	}
	f := fence(3, time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC))
	tests := []struct {
		name   string
		filter bson.D
		pushed bool
	}{
		{"_id alone", bson.D{{Key: "_id", Value: id}}, true},
		{"_id and the fence", bson.D{{Key: "_id", Value: id}, {Key: "$or", Value: f}}, false},
		{"the fence, then _id", bson.D{{Key: "$or", Value: f}, {Key: "_id", Value: id}}, false},
		{"$and of _id and the fence", bson.D{{Key: "$and", Value: bson.A{bson.D{{Key: "_id", Value: id}}, bson.D{{Key: "$or", Value: f}}}}}, false},
		{"_id by $eq and the fence", bson.D{{Key: "_id", Value: bson.D{{Key: "$eq", Value: id}}}, {Key: "$or", Value: f}}, false},
		{"_id by $eq alone", bson.D{{Key: "_id", Value: bson.D{{Key: "$eq", Value: id}}}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var plan bson.Raw
			cmd := bson.D{{Key: "explain", Value: bson.D{{Key: "find", Value: coll.Name()}, {Key: "filter", Value: tt.filter}}}}
			if err := mdb.Database.RunCommand(ctx, cmd).Decode(&plan); err != nil {
				t.Fatal(err)
			}
			pushed, ok := plan.Lookup("filterPushdown").BooleanOK()
			if !ok || pushed != tt.pushed {
				t.Errorf("filterPushdown %v (reported: %v), want %v: %s", pushed, ok, tt.pushed, plan)
			}
		})
	}
}

// ferretDB says whether the test's store is FerretDB: mdb.Store is nil on
// a real MongoDB, and also under -race, where the tests share an embedded
// store in a process of its own (mongotest).
func ferretDB(t *testing.T, db *mongo.Database) bool {
	t.Helper()
	var info bson.Raw
	if err := db.RunCommand(context.Background(), bson.D{{Key: "buildInfo", Value: 1}}).Decode(&info); err != nil {
		t.Fatal(err)
	}
	_, err := info.LookupErr("ferretdbVersion")
	return err == nil
}
