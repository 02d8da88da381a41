// Package headless loads pages in a real headless Chromium for tests: it
// returns the DOM after load and every console message the page logged,
// and takes screenshots. Tests that need it call ForTest, which skips when
// no Chromium is installed unless SPENDCHECKER_REQUIRE_CHROMIUM=1 (CI).
package headless

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"syscall"
	"testing"
	"time"
)

// EnvRequire makes ForTest fail instead of skip when Chromium is missing.
const EnvRequire = "SPENDCHECKER_REQUIRE_CHROMIUM"

// ErrNotFound: no Chromium on PATH.
var ErrNotFound = errors.New("no chromium on PATH (apt-get install chromium)")

// Names are the executables looked for, in order (Debian's first).
var Names = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"}

// Chromium is a browser executable.
type Chromium struct {
	Path string
}

// Find looks for Chromium on PATH.
func Find() (*Chromium, error) {
	for _, n := range Names {
		if p, err := exec.LookPath(n); err == nil {
			return &Chromium{Path: p}, nil
		}
	}
	return nil, ErrNotFound
}

// ForTest returns Chromium, or skips tb with the reason when there is none;
// with SPENDCHECKER_REQUIRE_CHROMIUM=1 a missing Chromium fails tb.
func ForTest(tb testing.TB) *Chromium {
	tb.Helper()
	if testing.Short() {
		tb.Skip("browser test skipped in -short mode")
	}
	c, err := Find()
	if err == nil {
		return c
	}
	if os.Getenv(EnvRequire) == "1" {
		tb.Fatalf("%v, and %s=1", err, EnvRequire)
	}
	tb.Skipf("browser test skipped: %v (set %s=1 to make this a failure)", err, EnvRequire)
	return nil
}

// Load is what a page showed.
type Load struct {
	// DOM is the document serialised after the load event.
	DOM string
	// Console lists every console message the page produced: uncaught
	// errors, Content-Security-Policy violations, failed loads and
	// console.* calls, each as `"message", source: URL (line)`.
	Console []string
	// Log is Chromium's whole stderr, for failure messages.
	Log string
}

// DumpDOM loads url and returns its DOM and console messages.
func (c *Chromium) DumpDOM(ctx context.Context, url string) (*Load, error) {
	return c.run(ctx, "--dump-dom", url)
}

// Screenshot loads url in a window of w×h pixels and writes a PNG of it to
// path.
func (c *Chromium) Screenshot(ctx context.Context, url, path string, w, h int) (*Load, error) {
	return c.run(ctx, "--screenshot="+path, fmt.Sprintf("--window-size=%d,%d", w, h), "--hide-scrollbars", url)
}

// console matches Chromium's log line for a console message, in its old
// ("CONSOLE(12)]") and current ("CONSOLE:12]") forms.
var console = regexp.MustCompile(`:CONSOLE(?:\(\d+\)|:\d+)\] (.*)`)

func (c *Chromium) run(ctx context.Context, args ...string) (*Load, error) {
	profile, err := os.MkdirTemp("", "headless-profile-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(profile)
	base := []string{
		"--headless", "--no-sandbox", "--disable-gpu",
		// Console messages go to stderr at INFO level.
		"--enable-logging=stderr", "--v=0",
		// A profile of its own, so parallel runs never share a lock, and
		// no calls home: tests reach loopback only.
		"--user-data-dir=" + profile, "--no-first-run", "--no-default-browser-check",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-extensions", "--disable-dev-shm-usage",
	}
	cmd := exec.CommandContext(ctx, c.Path, append(base, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// Chromium forks helpers: on a deadline, kill the whole group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	cmd.Env = append(os.Environ(), "HOME="+profile)
	err = cmd.Run()
	l := &Load{DOM: stdout.String(), Log: stderr.String()}
	for _, line := range bytes.Split(stderr.Bytes(), []byte("\n")) {
		if m := console.FindSubmatch(line); m != nil {
			l.Console = append(l.Console, string(m[1]))
		}
	}
	if err != nil {
		return l, fmt.Errorf("%s: %w\n%s", c.Path, err, tail(l.Log, 2000))
	}
	return l, nil
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
