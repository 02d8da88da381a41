package cli

import (
	"testing"
	"time"
)

// A higher --rate-prior or --burst-factor at a restart pulls forward the
// plans the last run made under the lower one (docs/design.md, "When the
// prior rises"): the key is not polled again, its stored plan is made again.
func TestAdvKnobs_RaisedAtARestartPullsPlansForward(t *testing.T) {
	tests := []struct {
		name          string
		rate          float64 // stored fastest and sustained, USD/s; $1 under it 100 s ago, $6 now
		first, second []string
		after         time.Duration // the second run's plan, at most, after the reading
	}{
		// Idle: 3.95 / 0.00276 ≈ 1430 s under the default prior; at 360
		// USD an hour (0.1 USD/s), (3.95 + 0.5) / 0.1 ≈ 45 s.
		{"idle, --rate-prior raised", 0, nil, []string{"--rate-prior", "360"}, 60 * time.Second},
		{"idle, --rate-prior 36 then 360", 0, []string{"--rate-prior", "36"}, []string{"--rate-prior", "360"}, 60 * time.Second},
		// Spending at 0.01 USD/s: factor 1, about 400 s; factor 32, (3.95 +
		// 1.6) / 0.32 ≈ 17 s.
		{"spending, --burst-factor 1 then 32", 0.01, []string{"--burst-factor", "1"}, []string{"--burst-factor", "32"}, 30 * time.Second},
		// The learned default (8): (3.95 + 0.4) / 0.08 ≈ 54 s.
		{"spending, --burst-factor 1 then learned", 0.01, []string{"--burst-factor", "1"}, nil, 60 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := newPlannedKey(t, 6.0-tt.rate*100, tt.rate, 6)
			p1 := k.run(tt.first...)
			if w := p1.Next.Sub(p1.Last); w < 2*tt.after {
				t.Fatalf("the first run planned the key %v after its reading: the test needs it later than %v", w, 2*tt.after)
			}
			calls := k.up.Calls(plannedSecret)
			p2 := k.run(tt.second...)
			if got := k.up.Calls(plannedSecret); got != calls {
				t.Errorf("the second run polled the key %d times, want none (it is not due)", got-calls)
			}
			if w := p2.Next.Sub(p2.Last); w > tt.after {
				t.Errorf("after %v then %v the key is planned %v after its reading, want at most %v", tt.first, tt.second, w, tt.after)
			}
		})
	}
}
