package cli

import (
	"testing"

	"github.com/spendchecker/spendchecker/checker"
)

// A configured provider is validated at start-up: a bad path or template
// is a usage error (exit 2) in one line naming the pool; a good one loads
// with the balance settings.
// The built-in balance and oneapi providers need only their name (and a
// URL for oneapi); --min-remaining and --account apply to every pool.
// The metrics carry the lowest balance and the keys without a reading
// (status shows them: statuspage's TestRemainingAndNoReading).
func TestRemainingMetrics(t *testing.T) {
	m := newMetrics()
	low := 0.75
	m.cycle(checker.Summary{Pools: []checker.PoolSummary{{Pool: "p", NoReading: 2, LowestRemaining: &low, LowestCurrency: "USD"}}}, nil, 1)
	if v := value(t, m.remaining.WithLabelValues("p", "USD")); v != 0.75 {
		t.Fatalf("remaining gauge %v", v)
	}
	if v := value(t, m.checked.WithLabelValues("p", "no_reading")); v != 2 {
		t.Fatalf("no_reading %v", v)
	}
}

// status heads a balance pool with its minimum remaining, any other with
// its threshold.
