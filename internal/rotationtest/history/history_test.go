package history_test

import (
	"context"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation/history"
)

func TestTTLOf(t *testing.T) {
	spec := func(d bson.D) bson.Raw {
		b, err := bson.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name    string
		specs   []bson.Raw
		want    time.Duration
		wantTTL bool
	}{
		{"none", []bson.Raw{spec(bson.D{{Key: "name", Value: "_id_"}})}, 0, false},
		{"int32", []bson.Raw{spec(bson.D{{Key: "name", Value: "checkedAt_1"}, {Key: "expireAfterSeconds", Value: int32(10800)}})}, 3 * time.Hour, true},
		{"double", []bson.Raw{spec(bson.D{{Key: "name", Value: "x"}, {Key: "expireAfterSeconds", Value: 60.0}})}, time.Minute, true},
		{"garbage", []bson.Raw{spec(bson.D{{Key: "name", Value: "x"}, {Key: "expireAfterSeconds", Value: "soon"}})}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, after, found := history.TTLOf(tt.specs)
			if found != tt.wantTTL || after != tt.want {
				t.Errorf("got %v %v, want %v %v", after, found, tt.want, tt.wantTTL)
			}
		})
	}
}

func TestSince(t *testing.T) {
	ctx := context.Background()
	db := mongotest.New(t).Database
	s := history.NewStore(db.Collection("h"))
	if err := s.EnsureIndexes(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.EnsureIndexes(ctx); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	for i, id := range []string{"a", "b", "c"} {
		rec := history.Record{ID: id, KeyID: "k" + id, RotatedAt: t0.Add(time.Duration(i) * time.Hour)}
		if _, err := db.Collection("h").InsertOne(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Since(ctx, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != "b" || got[1].ID != "c" {
		t.Fatalf("got %+v", got)
	}
	if _, _, found, err := s.TTLIndex(ctx); err != nil || found {
		t.Fatalf("TTLIndex: %v %v", found, err)
	}
}

// Older deployments wrote history with an ObjectId _id and numbers of other
// types; one such record must not make the whole query fail.
func TestSinceReadsOlderRecordsLeniently(t *testing.T) {
	ctx := context.Background()
	db := mongotest.New(t).Database
	coll := db.Collection("h")
	t0 := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	oid := bson.NewObjectID()
	docs := []any{
		history.Record{ID: "new", KeyID: "k1", Spend: 10.2, Threshold: 9.95, RotatedAt: t0.Add(2 * time.Hour), LeaseEpoch: 3},
		bson.D{{Key: "_id", Value: oid}, {Key: "keyId", Value: "k0"}, {Key: "spend", Value: int32(10)},
			{Key: "threshold", Value: "9.95"}, {Key: "budget", Value: nil}, {Key: "rotatedAt", Value: t0.Add(time.Hour)},
			{Key: "leaseEpoch", Value: 2.0}, {Key: "wasActive", Value: "yes"}, {Key: "legacyField", Value: bson.D{{Key: "x", Value: 1}}}},
		bson.D{{Key: "_id", Value: int64(42)}, {Key: "keyId", Value: int32(7)}, {Key: "spend", Value: int64(11)},
			{Key: "rotatedAt", Value: t0.Add(90 * time.Minute)}, {Key: "newKeyId", Value: "b1"}},
	}
	if _, err := coll.InsertMany(ctx, docs); err != nil {
		t.Fatal(err)
	}
	got, err := history.NewStore(coll).Since(ctx, t0)
	if err != nil {
		t.Fatalf("Since failed on an older record: %v", err)
	}
	if len(got) != 3 {
		t.Fatalf("got %d records, want 3: %+v", len(got), got)
	}
	old, odd, cur := got[0], got[1], got[2]
	if old.ID != oid.Hex() || old.KeyID != "k0" || old.Spend != 10 || !old.RotatedAt.Equal(t0.Add(time.Hour)) || old.LeaseEpoch != 2 || old.Budget != nil {
		t.Errorf("older record read as %+v", old)
	}
	if odd.ID != "42" || odd.KeyID != "7" || odd.Spend != 11 || odd.NewKeyID != "b1" {
		t.Errorf("odd record read as %+v", odd)
	}
	if cur.ID != "new" || cur.Spend != 10.2 || cur.Threshold != 9.95 || cur.LeaseEpoch != 3 {
		t.Errorf("current record read as %+v", cur)
	}
}
