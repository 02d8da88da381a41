package config

import (
	"errors"
	"testing"
)

// --min-remaining is never validated, unlike --threshold (which refuses 0,
// negatives and NaN). From a flag or SPENDCHECKER_MIN_REMAINING, "NaN"
// parses: `remaining <= NaN` is false for every balance, so no key of the
// pool ever rotates however drained its account (and the planner's headroom
// is NaN); "inf" parses too: every balance is at or below it, so every key
// rotates at its first check, and every backup after it.
// Cost: NaN — drained accounts left serving; Inf — the whole backup pool
// burnt in a few cycles. Both start without a word (exit 0).
func TestAdv16a_MinRemainingNotFiniteAccepted(t *testing.T) {
	for _, v := range []string{"NaN", "inf", "-Inf"} {
		_, err := Parse([]string{"--mongo-uri", uri, "--pool", "factory", "--provider", "deepseek", "--min-remaining", v})
		var ue *UsageError
		if !errors.As(err, &ue) {
			t.Errorf("--min-remaining %s: err %v, want a usage error (exit 2)", v, err)
		}
	}
}
