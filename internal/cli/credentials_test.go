package cli

import (
	"os"
	"path/filepath"
	"testing"
)

func TestExposedSecrets(t *testing.T) {
	const withPassword = "mongodb://spendchecker:s3cret@db1:27017/fproxy"
	tests := []struct {
		name    string
		config  string // body of the config file, "" for none
		env     string // body of the environment file, "" for none
		envURI  string // SPENDCHECKER_MONGO_URI
		mode    os.FileMode
		exposed int
	}{
		{"private config", `{"mongo-uri": "` + withPassword + `"}`, "", "", 0o600, 0},
		{"world-readable config", `{"mongo-uri": "` + withPassword + `"}`, "", "", 0o644, 1},
		{"group-readable config", `{"mongo-uri": "` + withPassword + `"}`, "", "", 0o640, 1},
		{"readable config without a password", `{"mongo-uri": "mongodb://db1/fproxy"}`, "", "", 0o644, 0},
		{"readable config without a URI", `{"threshold": 9}`, "", "", 0o644, 0},
		{"world-readable env file", "", "SPENDCHECKER_MONGO_URI=" + withPassword + "\n", withPassword, 0o644, 1},
		{"group-readable env file, quoted", "", "# x\nSPENDCHECKER_MONGO_URI=\"" + withPassword + "\"\n", withPassword, 0o640, 1},
		{"private env file", "", "SPENDCHECKER_MONGO_URI=" + withPassword + "\n", withPassword, 0o600, 0},
		{"readable env file, URI from elsewhere", "", "SPENDCHECKER_THRESHOLD=9\n", withPassword, 0o644, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			write := func(name, body string) string {
				if body == "" {
					return ""
				}
				p := filepath.Join(dir, name)
				if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(p, tt.mode); err != nil {
					t.Fatal(err)
				}
				return p
			}
			t.Setenv("SPENDCHECKER_MONGO_URI", tt.envURI)
			got := exposedSecrets(write("config.json", tt.config), write("spendchecker.env", tt.env))
			if len(got) != tt.exposed {
				t.Errorf("exposed %v, want %d", got, tt.exposed)
			}
		})
	}
}
