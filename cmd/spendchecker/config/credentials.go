package config

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// Systemd credentials (docs/operating.md, "Deploying"): with LoadCredential= systemd
// copies a root-only file into a directory only the service can read, named
// by $CREDENTIALS_DIRECTORY, which works under DynamicUser= where the file
// itself is out of reach.
const (
	credMongoURI = "mongo-uri"   // the MongoDB URI, password included
	credConfig   = "config.json" // the --config file
)

// unitEnvFile is the environment file the shipped units name.
const unitEnvFile = "/etc/spendchecker/spendchecker.env"

// credentialPath is the path of a credential handed to this process, or ""
// when there is none.
func credentialPath(name string) string {
	dir := os.Getenv("CREDENTIALS_DIRECTORY")
	if dir == "" {
		return ""
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// readCredential reads a credential's value; ok is false when there is none.
func readCredential(name string) (string, bool, error) {
	p := credentialPath(name)
	if p == "" {
		return "", false, nil
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return "", false, fmt.Errorf("credential %s: %w", name, err)
	}
	return strings.TrimSpace(string(b)), true, nil
}

func hasPassword(uri string) bool {
	u, err := url.Parse(strings.TrimSpace(uri))
	if err != nil || u.User == nil {
		return false
	}
	_, ok := u.User.Password()
	return ok
}

// ExposedSecret is a file holding a secret (the MongoDB password, the
// rotate token, an admin or management key) that users other than its
// owner can read.
type ExposedSecret struct {
	Path string
	Mode fs.FileMode
}

// ExposedSecrets are the secret files of this configuration other users
// can read (the program warns of each at start): the config file, the
// units' environment file, the token and the key files.
func (c *Config) ExposedSecrets() []ExposedSecret {
	return exposedSecrets(c.ConfigFile, unitEnvFile, append([]string{c.RotateTokenFile}, adminKeyFiles(c)...)...)
}

// envSecret reports whether an environment file line sets a secret: a
// MongoDB URI with a password (ours, or the proxy's MONGODB_URI that we
// fall back to), the rotate token, or a pool's admin key.
func envSecret(k, v string) bool {
	switch k {
	case "SPENDCHECKER_MONGO_URI", "MONGODB_URI":
		return hasPassword(v)
	case EnvRotateToken:
		return v != ""
	}
	// A pool's admin key (docs/providers.md, "Batch reports") reads, or on OpenRouter
	// manages, every key of its account.
	return (strings.HasPrefix(k, envAdminKeyPrefix) || strings.HasPrefix(k, envManagementKeyPrefix)) && v != ""
}

// exposedSecrets finds the secret files other users can read: the config
// file when it holds a URI with a password, the environment file when it
// sets a secret (envSecret) that is in our environment, and the token
// files (--rotate-token-file).
func exposedSecrets(configFile, envFile string, tokenFiles ...string) []ExposedSecret {
	var out []ExposedSecret
	check := func(path string, holds func([]byte) bool) {
		st, err := os.Stat(path)
		if err != nil || st.Mode().Perm()&0o044 == 0 {
			return
		}
		if b, err := os.ReadFile(path); err == nil && holds(b) {
			out = append(out, ExposedSecret{path, st.Mode().Perm()})
		}
	}
	if configFile != "" {
		check(configFile, func(b []byte) bool {
			var top struct {
				URI string `json:"mongo-uri"`
			}
			return json.Unmarshal(b, &top) == nil && hasPassword(top.URI)
		})
	}
	inEnv := false
	for _, k := range []string{"SPENDCHECKER_MONGO_URI", "MONGODB_URI", EnvRotateToken} {
		inEnv = inEnv || envSecret(k, os.Getenv(k))
	}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		inEnv = inEnv || envSecret(k, v)
	}
	if envFile != "" && inEnv {
		check(envFile, func(b []byte) bool {
			for _, line := range strings.Split(string(b), "\n") {
				k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
				if ok && envSecret(strings.TrimSpace(k), strings.Trim(strings.TrimSpace(v), `"'`)) {
					return true
				}
			}
			return false
		})
	}
	for _, f := range tokenFiles {
		if f != "" {
			check(f, func(b []byte) bool { return len(strings.TrimSpace(string(b))) > 0 })
		}
	}
	return out
}

// EnvRotateToken carries the endpoint's bearer token itself. It is not a
// flag, so the token never shows in a process listing.
const EnvRotateToken = "SPENDCHECKER_ROTATE_TOKEN"

// minTokenLen is the rotate token's shortest length.
const minTokenLen = 16

// rotateToken reads the endpoint's token from --rotate-token-file or
// SPENDCHECKER_ROTATE_TOKEN; "" (endpoint disabled) when neither is set.
func rotateToken(file string) (string, error) {
	env := os.Getenv(EnvRotateToken)
	if file != "" && env != "" {
		return "", usage("set --rotate-token-file or %s, not both", EnvRotateToken)
	}
	tok, from := env, EnvRotateToken
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", usage("--rotate-token-file: %v", err)
		}
		tok, from = string(b), "--rotate-token-file "+file
	}
	if file == "" && env == "" {
		return "", nil
	}
	tok = strings.TrimSpace(tok)
	if len(tok) < minTokenLen || strings.ContainsAny(tok, " \t\r\n") {
		return "", usage("%s: the rotate token must be one word of at least %d characters", from, minTokenLen)
	}
	return tok, nil
}
