package config

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

// A database or collection name the store would refuse, or one with
// spaces around it (a trailing space in an environment file), is exit 2
// naming it: the store would refuse it only at the first command, or, for
// a collection, read another, empty one.
func TestStoreNamesAreChecked(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string // in the one-line message; "": accepted
	}{
		{"URI database with a trailing space", []string{"--mongo-uri", "mongodb://h/fproxy "}, nil, `"fproxy "`},
		{"database variable with a trailing space", []string{"--mongo-uri", uri}, map[string]string{"SPENDCHECKER_DATABASE": "fproxy "}, `"fproxy "`},
		{"database with a slash", []string{"--mongo-uri", "mongodb://h/a%2Fb"}, nil, `"a/b"`},
		{"database with a dot", []string{"--mongo-uri", uri, "--database", "a.b"}, nil, `"a.b"`},
		{"database with a dollar", []string{"--mongo-uri", uri, "--database", "a$b"}, nil, `"a$b"`},
		{"database too long", []string{"--mongo-uri", uri, "--database", strings.Repeat("d", 64)}, nil, "64"},
		{"proxy's database name with a space", nil, map[string]string{"MONGODB_URI": uri, "MONGODB_DB_NAME": " trollllm"}, `" trollllm"`},
		{"keys collection with a trailing space", []string{"--mongo-uri", uri}, map[string]string{"SPENDCHECKER_KEYS_COLLECTION": "keys "}, `"keys "`},
		{"backups collection with a leading tab", []string{"--mongo-uri", uri, "--backups-collection", "\tbackups"}, nil, `"\tbackups"`},
		{"a system collection", []string{"--mongo-uri", uri, "--history-collection", "system.history"}, nil, `"system.history"`},
		{"accepted names", []string{"--mongo-uri", "mongodb://h/my_db-1", "--keys-collection", "my keys"}, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			_, err := Parse(tt.args)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var ue *UsageError
			if !errors.As(err, &ue) {
				t.Fatalf("err %v, want a usage error (exit 2)", err)
			}
			if msg := err.Error(); !strings.Contains(msg, tt.want) || strings.Contains(msg, "\n") {
				t.Errorf("message %q: want one line naming %s", msg, tt.want)
			}
		})
	}
}
