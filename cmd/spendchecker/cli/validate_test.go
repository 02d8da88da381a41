package cli

import (
	"errors"
	"strings"
	"testing"
)

// Two pools never share a keys or backups collection: each would poll and
// rotate the other's documents through its own journal, and a backup could
// be claimed by both.
func TestPoolsShareNoCollection(t *testing.T) {
	const factory = `"pool": "factory", "provider": "litellm", "provider-url": "http://l:4000"`
	tests := []struct {
		name  string
		pools string
		want  []string // in the one-line message; none: accepted
	}{
		{"the presets", `{"pool": "openhands"}, {` + factory + `}`, nil},
		{"same keys collection", `{"pool": "openhands", "keys-collection": "k"}, {` + factory + `, "keys-collection": "k"}`,
			[]string{"openhands", "factory", `"k"`}},
		{"one pool's backups are another's keys", `{"pool": "openhands"}, {` + factory + `, "keys-collection": "openhands_backup_keys"}`,
			[]string{"openhands", "factory", `"openhands_backup_keys"`}},
		{"one pool's keys are another's backups", `{"pool": "openhands", "backups-collection": "factory_keys"}, {` + factory + `}`,
			[]string{"openhands", "factory", `"factory_keys"`}},
		{"one backups collection for two pools", `{"pool": "openhands"}, {` + factory + `, "backups-collection": "openhands_backup_keys"}`,
			[]string{"openhands", "factory", `"openhands_backup_keys"`}},
	}
	for _, tt := range tests {
		for _, cmd := range []string{"", "verify", "status"} {
			t.Run(tt.name+"/"+cmd, func(t *testing.T) {
				var args []string
				if cmd != "" {
					args = append(args, cmd)
				}
				args = append(args, "--config", writeFile(t, `{"mongo-uri": "`+uri+`", "pools": [`+tt.pools+`]}`))
				_, err := Parse(args)
				if tt.want == nil {
					if err != nil {
						t.Fatal(err)
					}
					return
				}
				var ue *UsageError
				if !errors.As(err, &ue) {
					t.Fatalf("err %v, want a usage error (exit 2)", err)
				}
				for _, w := range tt.want {
					if msg := err.Error(); !strings.Contains(msg, w) || strings.Contains(msg, "\n") {
						t.Errorf("message %q: want one line naming %s", msg, w)
					}
				}
			})
		}
	}
}
