package checker

import (
	"math"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// TestAdv13_NonFiniteStoredRateNeverHeals skips on FerretDB, which cannot
// store NaN or Inf: this is the same check at the decoding step. A stored
// spendRate that is not a finite, non-negative number is an unknown rate,
// relearned and overwritten (docs/design.md "Adaptive cadence").
func TestReadKeyNonFiniteRateIsUnknown(t *testing.T) {
	for _, bad := range []float64{math.NaN(), math.Inf(1), math.Inf(-1), -1} {
		raw, err := bson.Marshal(bson.M{"_id": "k", "apiKey": "sk-x", "spendRate": bad})
		if err != nil {
			t.Fatal(err)
		}
		k, err := readKey(raw)
		if err != nil {
			t.Fatal(err)
		}
		if k.rate != 0 || k.hasRate {
			t.Errorf("spendRate %v read as rate %v known %v, want unknown", bad, k.rate, k.hasRate)
		}
	}
}
