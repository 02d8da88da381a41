package config

import (
	"errors"
	"strings"
	"testing"
)

// user-budget is a pool setting like min-remaining: a flag, its environment
// variable, the file's top level or a pool's entry, in that precedence;
// anything but auto, rotate or hold is a usage error naming the setting.
func TestUserBudgetSetting(t *testing.T) {
	two := `"pools": [{"pool": "openhands"}, {"pool": "factory", "provider": "litellm", "provider-url": "http://l:4000", "user-budget": "hold"}]`
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		file    string
		want    string // pool=user-budget, space separated
		wantErr string
	}{
		{name: "default", file: `"pools": [{"pool": "openhands"}]`, want: "openhands=auto"},
		{name: "pool entry", file: two, want: "openhands=auto factory=hold"},
		{name: "file top level, pool entry beats it", file: `"user-budget": "rotate", ` + two, want: "openhands=rotate factory=hold"},
		{name: "environment beats pool entry", env: map[string]string{"SPENDCHECKER_USER_BUDGET": "rotate"}, file: two, want: "openhands=rotate factory=rotate"},
		{name: "flag beats environment", args: []string{"--user-budget", "hold"}, env: map[string]string{"SPENDCHECKER_USER_BUDGET": "rotate"},
			file: `"pools": [{"pool": "openhands"}]`, want: "openhands=hold"},
		{name: "bad flag", args: []string{"--user-budget", "never"}, wantErr: `--user-budget "never": want auto, rotate, hold`},
		{name: "bad pool entry", file: `"pools": [{"pool": "openhands", "user-budget": "Rotate"}]`, wantErr: `--user-budget "Rotate"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseWith(t, tt.args, tt.env, tt.file)
			if tt.wantErr != "" {
				var ue *UsageError
				if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("err %v, want a one-line usage error with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range c.Pools {
				got = append(got, p.Pool+"="+p.UserBudget)
			}
			if g := strings.Join(got, " "); g != tt.want {
				t.Errorf("got %s, want %s", g, tt.want)
			}
		})
	}
}
