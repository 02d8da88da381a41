package main

import (
	"context"
	"slices"
	"testing"

	"github.com/spendchecker/spendchecker/internal/mongotest"
)

// The adaptive figures are the planner's on given trajectories: two runs of
// one scenario and seed make the same checks of the same keys, and rotate
// the same keys with the same overshoot.
func TestAdaptiveSimulationIsDeterministic(t *testing.T) {
	if testing.Short() {
		t.Skip("simulates two runs of 15 minutes")
	}
	tests := []struct {
		scenario string
		seed     uint64
	}{
		{"idle-burst", 1},
	}
	for _, tt := range tests {
		t.Run(tt.scenario, func(t *testing.T) {
			i := slices.IndexFunc(scenarios, func(sc scenario) bool { return sc.name == tt.scenario })
			if i < 0 {
				t.Fatalf("no scenario %q", tt.scenario)
			}
			s := settings{simKeys: 200, simTicks: 90, seed: tt.seed}
			var runs []simResult
			for range 2 {
				db := mongotest.New(t)
				res, err := simulate(context.Background(), db.Database, func() error {
					if db.Store == nil {
						return nil // the store runs in a process of its own (-race): no index, only slower
					}
					return db.Store.IndexIDs(context.Background(), db.Name)
				}, s, true, scenarios[i])
				if err != nil {
					t.Fatal(err)
				}
				runs = append(runs, res)
			}
			a, b := runs[0], runs[1]
			if a.calls != b.calls || a.rotations != b.rotations || a.worst != b.worst {
				t.Errorf("two runs differ: %d and %d calls, %d and %d rotations, worst overshoot %.6f and %.6f",
					a.calls, b.calls, a.rotations, b.rotations, a.worst, b.worst)
			}
			differ := 0
			for k := range a.checks {
				if a.checks[k] != b.checks[k] {
					if differ++; differ <= 5 {
						t.Errorf("key sim-%04d checked %d times in one run, %d in the other", k, a.checks[k], b.checks[k])
					}
				}
			}
			if differ > 5 {
				t.Errorf("and %d more keys checked a different number of times", differ-5)
			}
		})
	}
}
