package cli

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/spendchecker/spendchecker/checker"
)

// Issue 13 case 9: a cycle that could not count the backups keeps the last
// known value (no false low-backups alert) and counts the failure.
func TestBackupGaugeKeptWhenCountFails(t *testing.T) {
	m := newMetrics()
	m.cycle(checker.Summary{Pools: []checker.PoolSummary{{Pool: "p", BackupsLeft: 7}}}, nil, 1)
	m.cycle(checker.Summary{Pools: []checker.PoolSummary{{Pool: "p", BackupsUnknown: true}}}, nil, 2)
	if v := value(t, m.backups.WithLabelValues("p")); v != 7 {
		t.Fatalf("backups gauge %v after a failed count, want the last value 7", v)
	}
	if v := value(t, m.backupCountFailures.WithLabelValues("p")); v != 1 {
		t.Fatalf("failed counts %v, want 1", v)
	}
}

func value(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	if d.Gauge != nil {
		return d.Gauge.GetValue()
	}
	return d.Counter.GetValue()
}
