package cli

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// closedPort is a loopback address nothing listens on: connections to it
// are refused at once.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// Every one-shot command against an unreachable store retries until
// --store-wait, even when one server selection gives up sooner (here after
// 100 ms, from the URI), then exits 1 with one line that states the real
// wait and the address, without the password or the driver's topology
// dump, and prints nothing it did not read.
func TestOneShotStoreWait(t *testing.T) {
	addr := closedPort(t)
	uri := fmt.Sprintf("mongodb://admin:s3cret-pw@%s/x?serverSelectionTimeoutMS=100", addr)
	const wait = 1200 * time.Millisecond
	for _, args := range [][]string{
		{"--once"}, {"--once", "--dry-run"}, {"status"}, {"status", "--output", "json"}, {"history"}, {"verify"},
		{"rotate", "k1"}, {"rotate", "k1", "--dry-run"}, {"recover"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			code, stdout, stderr := runCLI(t, append(args, "--mongo-uri", uri, "--store-wait", wait.String(), "--log-level", "error")...)
			took := time.Since(start)
			switch {
			case code != ExitPartial:
				t.Errorf("exit %d, want 1", code)
			case stdout != "":
				t.Errorf("stdout %q: nothing was read", stdout)
			case strings.Count(stderr, "\n") != 1:
				t.Errorf("stderr is not one line: %q", stderr)
			case !strings.Contains(stderr, addr) || !strings.Contains(stderr, "--store-wait 1.2s"):
				t.Errorf("stderr %q does not name the address %s and --store-wait 1.2s", stderr, addr)
			case strings.Contains(stderr, "s3cret") || strings.Contains(stderr, "topology") || strings.Contains(stderr, "Servers:"):
				t.Errorf("stderr %q carries the password or the driver's topology", stderr)
			case !strings.Contains(stderr, "connection refused"):
				t.Errorf("stderr %q does not say why", stderr)
			case took < wait:
				t.Errorf("gave up after %s, before --store-wait %s", took, wait)
			case took > wait+30*time.Second:
				// Far past it, as with the default minute: a loaded machine
				// may take seconds to end the command, never that.
				t.Errorf("took %s, well past --store-wait %s", took, wait)
			}
			// The line states the real wait (at least --store-wait).
			i := strings.Index(stderr, "after ")
			if i < 0 {
				t.Fatalf("stderr %q does not state the wait", stderr)
			}
			waited, err := time.ParseDuration(strings.TrimRight(strings.Fields(stderr[i+len("after "):])[0], ",:"))
			if err != nil || waited < wait || waited > took+100*time.Millisecond {
				t.Errorf("stderr %q states a wait of %v (%v); it took %s", stderr, waited, err, took)
			}
		})
	}
}

// The daemon's status page with the store down from the start: the store
// is unknown since the driver first failed to reach it, in one line, and
// no pool reads as empty.
func TestStatusPageWithTheStoreDown(t *testing.T) {
	addr := closedPort(t)
	started := time.Now().UTC().Truncate(time.Second)
	events := newLogEvents()
	dctx, stop := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		defer events.w.Close()
		done <- Run(dctx, []string{"--mongo-uri", "mongodb://admin:s3cret-pw@" + addr + "/x?serverSelectionTimeoutMS=100",
			"--listen", "127.0.0.1:0", "--log-format", "json"}, Env{Stdout: io.Discard, Stderr: events.w})
	}()
	defer func() {
		stop()
		if code := <-done; code != ExitOK {
			t.Errorf("daemon exit %d", code)
		}
	}()
	listen, _ := events.waitFor(t, "listening", time.Minute)["addr"].(string)
	events.waitFor(t, "store not ready; retrying", time.Minute)
	resp, err := http.Get("http://" + listen + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	page := string(body)
	m := regexp.MustCompile(`unknown: store unreachable since (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC`).FindStringSubmatch(page)
	if resp.StatusCode != http.StatusOK || m == nil {
		t.Fatalf("%d, no store line:\n%s", resp.StatusCode, page)
	}
	since, _ := time.Parse(time.DateTime, m[1])
	if since.Before(started) || since.After(time.Now()) {
		t.Errorf("unreachable since %s; the daemon started at %s", since, started)
	}
	for _, bad := range []string{"0 keys", "no keys", "none recorded", "topology", "s3cret"} {
		if strings.Contains(page, bad) {
			t.Errorf("page shows %q:\n%s", bad, page)
		}
	}
	if n := strings.Count(page, "connection refused"); n != 1 {
		t.Errorf("the reason shows %d times, want once:\n%s", n, page)
	}
}
