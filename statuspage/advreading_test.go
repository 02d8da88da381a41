package statuspage

import (
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/rotation/secret"
)

// Adversarial review of spendReadingOf (already so before it, when
// nothing could tell).
//
// A key re-keyed in place keeps the old secret's reading; spendReadingOf
// says whose it is. The status view ignores it and shows the old secret's
// spend, rate and "over threshold" under the new secret's masked apiKey:
// a new, unread secret listed as over its threshold, with a threshold ETA
// computed from another secret's rate.
func TestAdvReading_ReKeyedKeyShowsNoOtherSecretsReading(t *testing.T) {
	b, err := bson.Marshal(bson.M{"_id": "k", "apiKey": secretB, "status": "healthy", "totalSpend": 9.96,
		"spendRate": 0.001, "lastSpendCheck": now.Add(-time.Minute),
		"spendReadingOf": secret.Fingerprint(secretA)})
	if err != nil {
		t.Fatal(err)
	}
	k := keyView(bson.Raw(b), 9.95, nil)
	if k.Over || k.Spend != nil || k.RatePerHour != nil || k.ThresholdAt != nil {
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
