package rotation_test

import (
	"context"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation"
	"github.com/spendchecker/spendchecker/rotation/history"
)

// A rotation asked for by hand carries the threshold, provider and instance
// but no spend reading: its history record keeps the key's last recorded
// spend instead of $0, while a reading (even of $0) is recorded as read.
func TestHistorySpendOfObservation(t *testing.T) {
	at := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		obs  history.Observation
		want float64
	}{
		{"by hand: no reading", history.Observation{Threshold: 9.95, Provider: "openhands", Instance: "cli"}, 4.25},
		{"a reading", history.Observation{Spend: 9.99, Threshold: 9.95}, 9.99},
		{"a reading of zero", history.Observation{Spend: 0, Threshold: 9.95, CheckedAt: at}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			db := mongotest.New(t).Database
			seed(t, db, 2, 1, 0)
			if _, err := db.Collection(testPool.KeysCollection).UpdateOne(ctx, bson.M{"_id": "key-001"},
				bson.M{"$set": bson.M{rotation.FieldTotalSpend: 4.25}}); err != nil {
				t.Fatal(err)
			}
			r := newRotator(t, db, rotation.Config{Owner: "replica-1"})
			res, err := r.Rotate(ctx, "key-001", "manual", rotation.WithObservation(tc.obs))
			if err != nil || res.Outcome != rotation.Rotated {
				t.Fatalf("got %+v, %v; want rotated", res, err)
			}
			var h history.Record
			if err := db.Collection(testPool.HistoryCollection).FindOne(ctx, bson.M{"_id": res.RotationID}).Decode(&h); err != nil {
				t.Fatal(err)
			}
			if h.Spend != tc.want {
				t.Errorf("history spend = %v, want %v", h.Spend, tc.want)
			}
		})
	}
}
