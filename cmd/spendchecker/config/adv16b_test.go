package config

import (
	"os"
	"path/filepath"
	"testing"
)

// Shows: the admin key may come from $SPENDCHECKER_ADMIN_KEY_<POOL>
// (docs/providers.md "Batch reports"), and the units read the environment file
// /etc/spendchecker/spendchecker.env, which the README installs with mode
// 0644. The start-up check for readable secret files knows only the
// MongoDB URI and the rotate token there: an admin key in a world-readable
// environment file is not warned about.
// Cost: the account's admin key (it reads, or on OpenRouter manages,
// every key of the account) readable by every local user, silently.
func TestAdv16b_ReadableEnvFileWithAdminKeyNotWarned(t *testing.T) {
	const admin = "sk-or-v1-management-0123456789abcdef"
	t.Setenv(adminKeyEnv("openhands"), admin)
	env := filepath.Join(t.TempDir(), "spendchecker.env")
	if err := os.WriteFile(env, []byte(adminKeyEnv("openhands")+"="+admin+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(env, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := exposedSecrets("", env); len(got) != 1 {
		t.Fatalf("world-readable environment file holding %s: %d warnings, want 1", adminKeyEnv("openhands"), len(got))
	}
}
