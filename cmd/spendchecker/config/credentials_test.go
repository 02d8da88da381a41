package config

import (
	"os"
	"path/filepath"
	"strings"
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
		token   string            // body of the rotate token file, "" for none
		setenv  map[string]string // more of the process's environment
	}{
		{"private config", `{"mongo-uri": "` + withPassword + `"}`, "", "", 0o600, 0, "", nil},
		{"world-readable config", `{"mongo-uri": "` + withPassword + `"}`, "", "", 0o644, 1, "", nil},
		{"group-readable config", `{"mongo-uri": "` + withPassword + `"}`, "", "", 0o640, 1, "", nil},
		{"readable config without a password", `{"mongo-uri": "mongodb://db1/fproxy"}`, "", "", 0o644, 0, "", nil},
		{"readable config without a URI", `{"threshold": 9}`, "", "", 0o644, 0, "", nil},
		{"world-readable env file", "", "SPENDCHECKER_MONGO_URI=" + withPassword + "\n", withPassword, 0o644, 1, "", nil},
		{"group-readable env file, quoted", "", "# x\nSPENDCHECKER_MONGO_URI=\"" + withPassword + "\"\n", withPassword, 0o640, 1, "", nil},
		{"private env file", "", "SPENDCHECKER_MONGO_URI=" + withPassword + "\n", withPassword, 0o600, 0, "", nil},
		{"readable env file, URI from elsewhere", "", "SPENDCHECKER_THRESHOLD=9\n", withPassword, 0o644, 0, "", nil},
		{"world-readable token file", "", "", "", 0o644, 1, "0123456789abcdef0123", nil},
		{"group-readable token file", "", "", "", 0o640, 1, "0123456789abcdef0123", nil},
		{"private token file", "", "", "", 0o600, 0, "0123456789abcdef0123", nil},
		{"readable env file with the proxy's URI", "", "MONGODB_URI=" + withPassword + "\n", "", 0o644, 1, "",
			map[string]string{"MONGODB_URI": withPassword}},
		{"readable env file with the rotate token", "", "SPENDCHECKER_ROTATE_TOKEN=0123456789abcdef0123\n", "", 0o644, 1, "",
			map[string]string{EnvRotateToken: "0123456789abcdef0123"}},
		{"private env file with the rotate token", "", "SPENDCHECKER_ROTATE_TOKEN=0123456789abcdef0123\n", "", 0o600, 0, "",
			map[string]string{EnvRotateToken: "0123456789abcdef0123"}},
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
			for _, k := range []string{envProxyURI, EnvRotateToken} {
				t.Setenv(k, tt.setenv[k])
			}
			got := exposedSecrets(write("config.json", tt.config), write("spendchecker.env", tt.env), write("rotate-token", tt.token))
			if len(got) != tt.exposed {
				t.Errorf("exposed %v, want %d", got, tt.exposed)
			}
		})
	}
}

// testToken is a rotate token of the accepted shape.
const testToken = "tok-0123456789abcdef-xyz"

func TestRotateTokenConfiguration(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "token")
	if err := os.WriteFile(good, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte("abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"--mongo-uri", "mongodb://localhost:27017/"}
	cases := []struct {
		name    string
		args    []string
		env     string
		want    string
		wantErr string
	}{
		{"none: disabled", nil, "", "", ""},
		{"file", []string{"--rotate-token-file", good}, "", testToken, ""},
		{"environment", nil, testToken, testToken, ""},
		{"both", []string{"--rotate-token-file", good}, testToken, "", "not both"},
		{"missing file", []string{"--rotate-token-file", filepath.Join(dir, "nope")}, "", "", "--rotate-token-file"},
		{"short", []string{"--rotate-token-file", short}, "", "", "at least 16 characters"},
		{"two words", nil, "abcdefgh ijklmnopq", "", "one word"},
		{"once does not read it", []string{"--once", "--rotate-token-file", filepath.Join(dir, "nope")}, "", "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv(EnvRotateToken, c.env)
			cfg, err := Parse(append(append([]string{}, base...), c.args...))
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("got %v, want an error with %q", err, c.wantErr)
				}
				if strings.Contains(err.Error(), testToken) {
					t.Fatalf("error carries the token: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.RotateToken != c.want {
				t.Fatalf("token %q, want %q", cfg.RotateToken, c.want)
			}
		})
	}
}
