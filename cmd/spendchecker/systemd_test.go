package main_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// systemd-analyze verify exits 0 on unknown keys and unparsable values, so
// any line it prints is a failure. CI installs systemd and sets
// SPENDCHECKER_REQUIRE_SYSTEMD so this test cannot skip there.
func TestSystemdUnitsVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("SPENDCHECKER_REQUIRE_SYSTEMD") != "" {
			t.Fatal("systemd-analyze not found and SPENDCHECKER_REQUIRE_SYSTEMD is set")
		}
		t.Skip("systemd-analyze not installed")
	}
	bin := binary(t)
	dir := t.TempDir()
	var names []string
	for _, name := range []string{"spendchecker.service", "spendchecker-once.service", "spendchecker-once.timer"} {
		b, err := os.ReadFile(filepath.Join("../../systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		// verify checks that ExecStart exists: point it at the built binary.
		text := strings.ReplaceAll(string(b), "/usr/local/bin/spendchecker", bin)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	cmd := exec.Command(analyze, append([]string{"verify"}, names...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify %v: %v\n%s", names, err, out)
	}
	for _, want := range []string{"Type=notify", "WatchdogSec=", "DynamicUser=yes", "CapabilityBoundingSet=\n", "SystemCallFilter=@system-service"} {
		b, _ := os.ReadFile("../../systemd/spendchecker.service")
		if !strings.Contains(string(b), want) {
			t.Errorf("spendchecker.service lacks %q", want)
		}
	}
	// Under DynamicUser= the secret reaches the process as a credential
	// (read from $CREDENTIALS_DIRECTORY), not as a file it cannot open.
	for _, name := range []string{"spendchecker.service", "spendchecker-once.service"} {
		b, _ := os.ReadFile(filepath.Join("../../systemd", name))
		if !strings.Contains(string(b), "\nLoadCredential=mongo-uri:") {
			t.Errorf("%s does not load the MongoDB URI as a credential", name)
		}
	}
}
