package config

import (
	"strings"
	"testing"
)

// The adaptive planner's two settings per pool: the rate prior (USD an
// hour) and the burst factor. A pool's entry sets its own, a flag or
// variable overrides every pool, and a value the planner cannot use is
// exit 2 with one line naming the pool and the flag.
func TestPlannerSettings(t *testing.T) {
	two := `"pools": [{"pool": "openhands", "rate-prior": 36, "burst-factor": 4}, {"pool": "factory", "provider": "litellm", "provider-url": "http://l:4000"}]`
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		file    string
		want    map[string][2]float64 // pool: rate prior, burst factor
		wantErr string
	}{
		{name: "defaults", file: `"pools": [{"pool": "openhands"}]`, want: map[string][2]float64{"openhands": {0, 0}}},
		{name: "each pool its own", file: two, want: map[string][2]float64{"openhands": {36, 4}, "factory": {0, 0}}},
		{name: "file top level inherited", file: `"rate-prior": 20, "burst-factor": 16, "pools": [{"pool": "openhands"}]`,
			want: map[string][2]float64{"openhands": {20, 16}}},
		{name: "flag beats pool entry", args: []string{"--burst-factor", "2"}, file: two,
			want: map[string][2]float64{"openhands": {36, 2}, "factory": {0, 2}}},
		{name: "environment beats pool entry", env: map[string]string{"SPENDCHECKER_RATE_PRIOR": "50"}, file: two,
			want: map[string][2]float64{"openhands": {50, 4}, "factory": {50, 0}}},
		{name: "zero in the entry is the default, not inherited", file: `"burst-factor": 16, "pools": [{"pool": "openhands", "burst-factor": 0}]`,
			want: map[string][2]float64{"openhands": {0, 0}}},
		{name: "negative rate prior", args: []string{"--rate-prior", "-1"}, wantErr: "pool openhands: --rate-prior must be"},
		{name: "burst factor below 1", file: `"pools": [{"pool": "openhands", "burst-factor": 0.5}]`, wantErr: "pool openhands: --burst-factor must be 0 (learned) or from 1 to 32"},
		{name: "burst factor above the cap", args: []string{"--burst-factor", "33"}, wantErr: "--burst-factor must be"},
		{name: "not a number", args: []string{"--rate-prior", "fast"}, wantErr: "--rate-prior"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseWith(t, tt.args, tt.env, tt.file)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("err %v, want one line with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := map[string][2]float64{}
			for _, p := range c.Pools {
				pool, _ := p.Resolve()
				got[pool.Name] = [2]float64{p.RatePrior, p.BurstFactor}
			}
			if len(got) != len(tt.want) {
				t.Fatalf("pools %v, want %v", got, tt.want)
			}
			for name, w := range tt.want {
				if got[name] != w {
					t.Errorf("pool %s: rate prior, burst factor %v, want %v", name, got[name], w)
				}
			}
		})
	}
}
