package config

import (
	"errors"
	"strings"
	"testing"
)

// A sidecar sharing the proxy's environment finds the proxy's database
// (docs/configuration.md, "Where settings come from").
func TestProxyEnvironmentFallbacks(t *testing.T) {
	const ours, proxys = "mongodb://ours:27017/oursdb", "mongodb://proxy:27017/admin?authSource=admin"
	tests := []struct {
		name             string
		args             []string
		env              map[string]string
		file             string
		wantURI, wantDB  string
		wantErr, errHide string
	}{
		{name: "proxy URI, its path is not the database (the proxy ignores it)",
			env: map[string]string{"MONGODB_URI": proxys}, wantURI: proxys, wantDB: "fproxy"},
		{name: "proxy URI and database name",
			env: map[string]string{"MONGODB_URI": proxys, "MONGODB_DB_NAME": "trollllm"}, wantURI: proxys, wantDB: "trollllm"},
		{name: "our URI wins, and its path names the database",
			env: map[string]string{"SPENDCHECKER_MONGO_URI": ours, "MONGODB_URI": proxys}, wantURI: ours, wantDB: "oursdb"},
		{name: "the proxy's database name wins over our URI's path",
			env: map[string]string{"SPENDCHECKER_MONGO_URI": ours, "MONGODB_DB_NAME": "trollllm"}, wantURI: ours, wantDB: "trollllm"},
		{name: "our database variable wins over the proxy's",
			env:     map[string]string{"MONGODB_URI": proxys, "MONGODB_DB_NAME": "trollllm", "SPENDCHECKER_DATABASE": "mine"},
			wantURI: proxys, wantDB: "mine"},
		{name: "flags win over everything",
			args: []string{"--mongo-uri", "mongodb://flag:27017/", "--database", "flagdb"},
			env: map[string]string{"SPENDCHECKER_MONGO_URI": ours, "SPENDCHECKER_DATABASE": "mine",
				"MONGODB_URI": proxys, "MONGODB_DB_NAME": "trollllm"},
			wantURI: "mongodb://flag:27017/", wantDB: "flagdb"},
		{name: "the config file wins over the proxy's variables",
			file:    `{"mongo-uri": "mongodb://file:27017/", "database": "filedb"}`,
			env:     map[string]string{"MONGODB_URI": proxys, "MONGODB_DB_NAME": "trollllm"},
			wantURI: "mongodb://file:27017/", wantDB: "filedb"},
		{name: "neither URI", env: map[string]string{"MONGODB_DB_NAME": "trollllm"},
			wantErr: "--mongo-uri (or SPENDCHECKER_MONGO_URI, the systemd credential mongo-uri, or the proxy's MONGODB_URI) is required"},
		{name: "bad proxy URI is named as such", env: map[string]string{"MONGODB_URI": "http://u:s3cr3t@h/"},
			wantErr: "MONGODB_URI must be a mongodb:// or mongodb+srv:// URI", errHide: "s3cr3t"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, k := range []string{"MONGODB_URI", "MONGODB_DB_NAME", "SPENDCHECKER_MONGO_URI", "SPENDCHECKER_DATABASE"} {
				t.Setenv(k, "")
			}
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			args := tt.args
			if tt.file != "" {
				args = append(args, "--config", writeFile(t, tt.file))
			}
			c, err := Parse(args)
			if tt.wantErr != "" {
				var ue *UsageError
				if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want a usage error with %q", err, tt.wantErr)
				}
				if tt.errHide != "" && strings.Contains(err.Error(), tt.errHide) {
					t.Fatalf("error shows %q: %v", tt.errHide, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.MongoURI != tt.wantURI || c.Database != tt.wantDB {
				t.Fatalf("got URI %q database %q, want %q %q", c.MongoURI, c.Database, tt.wantURI, tt.wantDB)
			}
		})
	}
}

// Factory keys talk to an upstream no built-in provider serves: polling them
// at the OpenHands endpoint would see every key rejected and rotate them all.
func TestFactoryPoolNeedsAnExplicitProvider(t *testing.T) {
	tests := []struct {
		name         string
		args         []string
		file         string
		wantErr      string
		wantProvider []string
	}{
		{name: "factory without provider", args: []string{"--pool", "factory"},
			wantErr: "pool factory: no built-in provider serves its upstream; name one with --provider"},
		{name: "factory with a provider", args: []string{"--pool", "factory", "--provider", "litellm", "--provider-url", "http://litellm:4000"},
			wantProvider: []string{"litellm"}},
		{name: "openhands keeps its default", args: nil, wantProvider: []string{"openhands"}},
		{name: "file: factory without provider",
			file:    `{"pools": [{"pool": "openhands"}, {"pool": "factory"}]}`,
			wantErr: "pool factory: no built-in provider"},
		{name: "file: factory names its provider",
			file:         `{"pools": [{"pool": "openhands"}, {"pool": "factory", "provider": "openrouter"}]}`,
			wantProvider: []string{"openhands", "openrouter"}},
		{name: "file: a top-level provider is explicit for every pool",
			file:         `{"provider": "openrouter", "pools": [{"pool": "openhands"}, {"pool": "factory"}]}`,
			wantProvider: []string{"openrouter", "openrouter"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("SPENDCHECKER_PROVIDER", "")
			args := append([]string{"--mongo-uri", uri}, tt.args...)
			if tt.file != "" {
				args = append(args, "--config", writeFile(t, tt.file))
			}
			c, err := Parse(args)
			if tt.wantErr != "" {
				var ue *UsageError
				if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("got %v, want one line with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range c.Pools {
				got = append(got, p.Provider)
			}
			if strings.Join(got, ",") != strings.Join(tt.wantProvider, ",") {
				t.Fatalf("providers %v, want %v", got, tt.wantProvider)
			}
		})
	}
}
