package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHelp(t *testing.T) {
	tests := []struct {
		args     []string
		want     []string
		dontWant []string
	}{
		{[]string{"--help"}, []string{"USAGE", "status", "rotate", "healthcheck", "-interval DURATION", "(default: 10s)", "[SPENDCHECKER_INTERVAL]", "[SPENDCHECKER_MONGO_URI]"}, []string{"-reason", "-since"}},
		{[]string{"-h"}, []string{"USAGE", "history", "-threshold", "(default: 9.95)"}, nil},
		{[]string{"help"}, []string{"USAGE", "verify", "-once"}, nil},
		{[]string{"help", "rotate"}, []string{"spendchecker rotate KEY_ID", "-reason", "(default: manual)", "[SPENDCHECKER_REASON]", "-mongo-uri"}, []string{"-since", "-interval", "-listen"}},
		{[]string{"status", "--help"}, []string{"spendchecker status", "-lease-name", "-mongo-uri"}, []string{"-reason", "-since", "-interval"}},
		{[]string{"history", "-h"}, []string{"-since", "(default: 24h)", "[SPENDCHECKER_SINCE]"}, []string{"-reason"}},
		{[]string{"healthcheck", "--help"}, []string{"-listen", "(default: 127.0.0.1:9090)"}, []string{"-mongo-uri"}},
		{[]string{"rotate", "k1", "--help"}, []string{"-reason"}, nil},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := Run(context.Background(), tt.args, Env{Stdout: &stdout, Stderr: &stderr})
			if code != ExitOK || stderr.Len() != 0 {
				t.Fatalf("exit %d, stderr %q; want 0 and nothing on stderr", code, stderr.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("help lacks %q:\n%s", w, stdout.String())
				}
			}
			for _, w := range tt.dontWant {
				if strings.Contains(stdout.String(), w) {
					t.Errorf("help shows %q, another command's flag:\n%s", w, stdout.String())
				}
			}
		})
	}
}

func TestCommandsOwnFlags(t *testing.T) {
	uri := "mongodb://127.0.0.1:1/fproxy"
	for _, args := range [][]string{
		{"status", "--mongo-uri", uri, "--since", "1h"},
		{"history", "--mongo-uri", uri, "--reason", "x"},
		{"verify", "--mongo-uri", uri, "--interval", "1s"},
		{"version", "--mongo-uri", uri},
		{"help", "nope"},
		{"nope"},
	} {
		var stdout, stderr bytes.Buffer
		code := Run(context.Background(), args, Env{Stdout: &stdout, Stderr: &stderr})
		if code != ExitUsage || stdout.Len() != 0 || strings.Count(stderr.String(), "\n") != 1 {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 2, one line on stderr", args, code, stdout.String(), stderr.String())
		}
	}
}

const uri = "mongodb://localhost:27017/fproxy"

// writeFile writes a config file for one test and returns its path.
func writeFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
