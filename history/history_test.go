package history_test

import (
	"context"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/history"
	"github.com/spendchecker/spendchecker/internal/mongotest"
)

func TestMask(t *testing.T) {
	tests := []struct{ in, want string }{
		{"sk-1234567890abcdefWXYZ", "sk-12...WXYZ"},
		{"short", "****"},
		{"", "****"},
		{"exactly16chars!!", "exact...rs!!"},
	}
	for _, tt := range tests {
		if got := history.Mask(tt.in); got != tt.want {
			t.Errorf("Mask(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if history.Fingerprint("a") == history.Fingerprint("b") || len(history.Fingerprint("a")) != 8 {
		t.Error("fingerprints collide or have the wrong length")
	}
}

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
