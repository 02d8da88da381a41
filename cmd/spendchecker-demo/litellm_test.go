package main

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
)

// The refill and retire demo, as a user runs it: the pool creates backups
// upstream, each rotated-out key is disabled and refused by the upstream,
// verify is clean, and nothing is left behind.
func TestLiteLLMDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon for 10 s")
	}
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	var out, errOut bytes.Buffer
	if code := demo(context.Background(), []string{"-provider", "litellm"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d:\n%s\n%s", code, out.String(), errOut.String())
	}
	got := out.String()
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`backup key created upstream`),
		regexp.MustCompile(`rotated key disabled upstream`),
		regexp.MustCompile(`oh-key-0[1-4] \(sk-de\.\.\.y-0[1-4]\): disabled upstream, answers HTTP 401`),
		regexp.MustCompile(`== [1-9]\d* keys created upstream as backups, [1-9]\d* rotated-out keys refused by the upstream; verify clean`),
	} {
		if !want.MatchString(got) {
			t.Errorf("output lacks %s:\n%s", want, got)
		}
	}
	if strings.Contains(got, demoMasterKey) {
		t.Error("the output carries the master key")
	}
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("left in the temporary directory: %v", left)
	}
}
