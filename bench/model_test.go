package main

import (
	"context"
	"slices"
	"testing"

	"github.com/spendchecker/spendchecker/internal/mongotest"
)

// The bench takes fixed polling's figures from the model, not the checker
// (72,000 polls and write-backs a scenario on the store): the model must
// give the real checker's calls, rotations and overshoot on the same
// trajectories, key by key.
func TestModelFixedPollingIsTheCheckers(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the checker over simulated minutes")
	}
	tests := []struct {
		scenario string
		seed     uint64
	}{
		{"burst10", 1}, // rotations, with the backups brought in
		{"lag", 2},     // a lagging upstream
	}
	for _, tt := range tests {
		t.Run(tt.scenario, func(t *testing.T) {
			i := slices.IndexFunc(scenarios, func(sc scenario) bool { return sc.name == tt.scenario })
			if i < 0 {
				t.Fatalf("no scenario %q", tt.scenario)
			}
			s := settings{simKeys: 60, simTicks: 120, seed: tt.seed}
			db := mongotest.New(t)
			got, err := simulate(context.Background(), db.Database, func() error {
				if db.Store == nil {
					return nil // the store runs in a process of its own (-race): no index, only slower
				}
				return db.Store.IndexIDs(context.Background(), db.Name)
			}, s, false, scenarios[i])
			if err != nil {
				t.Fatal(err)
			}
			m := model(s, scenarios[i], fixedPolicy)
			if got.rotations == 0 {
				t.Fatalf("no rotation in %d ticks: the comparison shows nothing", s.simTicks)
			}
			if m.calls != got.calls || m.rotations != got.rotations || m.worst != got.worst || m.mean != got.mean {
				t.Errorf("model: %d calls, %d rotations, worst $%.6f, mean $%.6f; checker: %d, %d, $%.6f, $%.6f",
					m.calls, m.rotations, m.worst, m.mean, got.calls, got.rotations, got.worst, got.mean)
			}
			if !slices.Equal(m.checks, got.checks) {
				t.Errorf("the model and the checker check different keys: %v against %v", m.checks, got.checks)
			}
		})
	}
}
