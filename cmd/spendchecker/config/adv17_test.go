package config

import (
	"os"
	"path/filepath"
	"testing"
)

// Adversarial review of issue 17 (branch adv17): each test fails on the
// reviewed code and passes once the defect it names is fixed.

// The start-up warning about secret files readable by others (issue 17,
// case 10) looks only for SPENDCHECKER_MONGO_URI in the environment file
// and mongo-uri in the config file. It misses the other secrets the daemon
// reads: the proxy's MONGODB_URI (used when ours is unset; docs/proxy.md,
// "Running next to the proxy"), the rotate token that lets anyone on the
// host rotate every key through POST /v1/rotate (SPENDCHECKER_ROTATE_TOKEN
// in the environment file, or --rotate-token-file).
func TestAdv17_SecretFileWarningMissesOtherSecrets(t *testing.T) {
	const withPassword = "mongodb://spendchecker:s3cret@db1:27017/fproxy"
	const token = "0123456789abcdef0123456789abcdef"
	tests := []struct {
		name  string
		env   string // the environment file, mode 0644
		vars  map[string]string
		token bool // a --rotate-token-file, mode 0644
	}{
		{name: "proxy's MONGODB_URI in a world-readable env file", env: "MONGODB_URI=" + withPassword + "\n",
			vars: map[string]string{"MONGODB_URI": withPassword}},
		{name: "rotate token in a world-readable env file", env: "SPENDCHECKER_ROTATE_TOKEN=" + token + "\n",
			vars: map[string]string{"SPENDCHECKER_ROTATE_TOKEN": token}},
		{name: "world-readable --rotate-token-file", token: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			t.Setenv("SPENDCHECKER_MONGO_URI", "")
			t.Setenv("SPENDCHECKER_ROTATE_TOKEN", "")
			t.Setenv("MONGODB_URI", "")
			for k, v := range tt.vars {
				t.Setenv(k, v)
			}
			var exposed []ExposedSecret
			if tt.env != "" {
				p := filepath.Join(dir, "spendchecker.env")
				if err := os.WriteFile(p, []byte(tt.env), 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(p, 0o644); err != nil {
					t.Fatal(err)
				}
				exposed = exposedSecrets("", p)
				if len(exposed) == 0 {
					t.Fatalf("a world-readable %s holding a secret is not reported", p)
				}
				return
			}
			p := filepath.Join(dir, "rotate-token")
			if err := os.WriteFile(p, []byte(token+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, 0o644); err != nil {
				t.Fatal(err)
			}
			// What the program warns of at start (TestAdv18_WorldReadableRotateTokenFileWarns
			// in package cli sees the warning itself).
			if len(exposedSecrets("", "", p)) == 0 {
				t.Fatalf("a world-readable --rotate-token-file %s is not reported", p)
			}
		})
	}
}
