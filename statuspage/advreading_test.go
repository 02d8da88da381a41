package statuspage

import (
	"context"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation/secret"
)

// A key re-keyed in place keeps the old secret's reading; spendReadingOf
// says whose it is. Read as status reads keys (the projection included),
// the key is shown unread: not with the old secret's spend, rate and "over
// threshold" under the new secret's masked apiKey.
func TestReKeyedKeyShowsNoOtherSecretsReading(t *testing.T) {
	db := mongotest.New(t).Database
	keys := db.Collection("openhands_keys")
	if _, err := keys.InsertOne(context.Background(), bson.M{"_id": "k", "apiKey": secretB, "status": "healthy", "totalSpend": 9.96,
		"spendRate": 0.001, "lastSpendCheck": now.Add(-time.Minute),
		"spendReadingOf": secret.Fingerprint(secretA)}); err != nil {
		t.Fatal(err)
	}
	var views []KeyView
	if err := ScanKeys(context.Background(), keys, 9.95, nil, false, func(k KeyView) { views = append(views, k) }); err != nil {
		t.Fatal(err)
	}
	if len(views) != 1 {
		t.Fatalf("read %d keys, want 1", len(views))
	}
	if k := views[0]; k.Over || k.Spend != nil || k.RatePerHour != nil || k.ThresholdAt != nil {
		t.Errorf("re-keyed key shown with the old secret's reading: over=%v spend=%v rate/h=%v thresholdAt=%v",
			k.Over, deref(k.Spend), deref(k.RatePerHour), k.ThresholdAt)
	}
}

func deref(f *float64) any {
	if f == nil {
		return nil
	}
	return *f
}
