package cli

import (
	"strings"
	"testing"
)

// Each command takes only its own flags, but a config file and the
// environment may hold every command's settings (docs/design.md,
// "Decisions"): the file and variables a daemon runs with serve every
// command, none of them is a usage error there.
func TestEveryCommandAcceptsTheDaemonsConfigAndEnvironment(t *testing.T) {
	uri := "mongodb://127.0.0.1:1/x?serverSelectionTimeoutMS=200"
	file := writeFile(t, `{"mongo-uri": "`+uri+`", "interval": "20s", "concurrency": 8, "lease-name": "lx", "listen": "127.0.0.1:1",
		"store-wait": "1s", "reason": "manual", "since": "2h", "output": "json", "instance": "i1", "once": false, "log-level": "warn",
		"shutdown-grace": "5s", "notify-format": "json", "pools": [{"pool": "openhands", "threshold": 9}]}`)
	for _, env := range []string{"SPENDCHECKER_INTERVAL=30s", "SPENDCHECKER_ONCE=false", "SPENDCHECKER_REASON=leaked", "SPENDCHECKER_SINCE=1h",
		"SPENDCHECKER_OUTPUT=text", "SPENDCHECKER_LISTEN=127.0.0.1:1", "SPENDCHECKER_STORE_WAIT=1s", "SPENDCHECKER_NOTIFY_FORMAT=slack"} {
		k, v, _ := strings.Cut(env, "=")
		t.Setenv(k, v)
	}
	for _, args := range [][]string{{"status"}, {"verify"}, {"history"}, {"recover"}, {"rotate", "k1"}, {"healthcheck"}, {"--once"}} {
		t.Run(args[0], func(t *testing.T) {
			cmd := append(append([]string{}, args[0]), "--config", file)
			code, _, stderr := runCLI(t, append(cmd, args[1:]...)...)
			if code == ExitUsage || code == ExitOK && args[0] != "rotate" {
				t.Fatalf("exit %d, want 1 (store or daemon unreachable): %s", code, stderr)
			}
			for _, line := range strings.Split(strings.TrimSpace(stderr), "\n") {
				if line != "" && !strings.HasPrefix(line, "spendchecker: ") && !strings.HasPrefix(line, "{") && !strings.Contains(line, "level=") {
					t.Errorf("stderr line without the prefix: %q", line)
				}
			}
		})
	}
}
