package main_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/lease"
)

// runFor runs the binary, killing it after limit (a hang is a failure).
func runFor(t *testing.T, limit time.Duration, args []string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t), args...)
	cmd.Env = os.Environ()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("still running after %v, killed:\n%s", limit, out.String())
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, out.String()
}

// waitUntil checks cond every 20 ms until it holds or limit passes.
func waitUntil(limit time.Duration, cond func() bool) bool {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
	return true
}

// Issue 13 case 1: --once holds its lease for as long as its cycle runs.
// The first poll is held until the one-shot has renewed its lease past the
// renew deadline (six renewals a retry period of 2 s apart, past the 10 s
// deadline of the default timings); without renewals its leader context
// ends at 10 s and the cycle stops part-way.
func TestOnceRenewsItsLease(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a cycle longer than the lease in real time (renewal: package lease)")
	}
	keys := map[string]float64{}
	for i := range 5 {
		keys[fmt.Sprintf("k%d", i)] = 1
	}
	e := newEnv(t, keys, 0)
	leases := e.mdb.Database.Collection(lease.Collection)
	target, err := url.Parse(e.up.URL)
	if err != nil {
		t.Fatal(err)
	}
	// A front to the upstream that holds the first poll (the upstream's own
	// hook is set after it serves, which the race detector rightly flags).
	var once sync.Once
	fwd := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() {
			// Held at least until then (or, with no renewals, for patience).
			waitUntil(patience, func() bool {
				var rec lease.Record
				err := leases.FindOne(context.Background(), bson.M{}, options.FindOne().SetSort(bson.D{{Key: "epoch", Value: -1}})).Decode(&rec)
				return err == nil && rec.Renewals >= 6 && !rec.Released
			})
		})
		fwd.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	args := []string{"--mongo-uri", e.mdb.URI, "--database", e.mdb.Name, "--provider-url", front.URL, "--listen", "", "--log-format", "json",
		"--once", "--concurrency", "1"}
	code, out := runFor(t, 2*patience, args)
	if code != 0 || !strings.Contains(out, "checked 5, failed 0") {
		t.Fatalf("exit %d, want 0 with every key checked:\n%s", code, out)
	}
	var r lease.Record
	if err := leases.FindOne(context.Background(), bson.M{"name": "spendchecker"}, options.FindOne().SetSort(bson.D{{Key: "epoch", Value: -1}})).Decode(&r); err != nil || !r.Released {
		t.Fatalf("lease not released at the end: %+v %v", r, err)
	}
}

// Issue 13 case 2: the store goes away after start-up while --once waits
// for the lease: it gives up after --store-wait with exit 1 and one line.
func TestOnceGivesUpWhenStoreGoes(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out --store-wait in real time (cli's TestOneShotStoreWait)")
	}
	e := newEnv(t, map[string]float64{"a": 1}, 0)
	ctx := context.Background()
	proxy := e.mdb.Proxy(t)
	leases := e.mdb.Database.Collection(lease.Collection)
	// A holder that looks alive, with a lease longer than --store-wait:
	// the one-shot cannot take over before the store goes, however slowly
	// it starts.
	now := time.Now().UTC()
	if _, err := leases.InsertOne(ctx, lease.Record{ID: "spendchecker/00000000000000000001", Name: "spendchecker", Epoch: 1,
		Holder: "gone", AcquiredAt: now, RenewedAt: now, LeaseDurationMS: time.Hour.Milliseconds()}); err != nil {
		t.Fatal(err)
	}
	go func() {
		// Once the one-shot reads the lease record (start-up is done, the
		// lease wait has begun), the store goes away. Waiting only for the
		// indexes raced start-up's last index checks on a busy machine.
		waitUntil(patience, func() bool {
			for _, b := range proxy.CommandBodies() {
				if c, ok := b.Lookup("find").StringValueOK(); ok && c == lease.Collection {
					return true
				}
			}
			return false
		})
		proxy.Pause()
	}()
	args := []string{"--once", "--mongo-uri", proxy.URI(), "--database", e.mdb.Name, "--provider-url", e.up.URL,
		"--listen", "", "--log-format", "json", "--lease-duration", "3s", "--store-wait", "15s"}
	code, out := runFor(t, patience, args)
	if code != 1 || !strings.Contains(out, "could not take the lease") || !strings.Contains(out, "(--store-wait 15s), giving up") {
		t.Fatalf("exit %d, want 1 with a give-up line from the lease wait:\n%s", code, out)
	}
	if !strings.Contains(out, "cannot read the lease") {
		t.Errorf("the store never went away while the one-shot waited for the lease:\n%s", out)
	}
	if n := strings.Count(out, "giving up"); n != 1 {
		t.Errorf("%d give-up lines, want one:\n%s", n, out)
	}
}

// Issue 13 case 7: twenty one-shot commands started at once on a fresh
// database all succeed.
func TestManyOneShotsOnAFreshDatabase(t *testing.T) {
	e := newEnv(t, map[string]float64{"a": 1}, 2)
	const n = 20
	codes := make([]int, n)
	outs := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The store may be slow to answer twenty processes at once on a
			// loaded machine: that is not what this test is about.
			codes[i], outs[i] = runFor(t, 2*patience, append([]string{"recover", "--store-wait", "5m"}, e.storeArgs()...))
		}()
	}
	wg.Wait()
	for i := range n {
		if codes[i] != 0 {
			t.Errorf("process %d exit %d:\n%s", i, codes[i], outs[i])
		}
	}
}

// Issue 13 case 8: a URI with bad options is bad configuration: exit 2,
// one line, nothing touched.
func TestBadURIOptionsExitTwo(t *testing.T) {
	for _, uri := range []string{
		"mongodb://127.0.0.1:1/?connectTimeoutMS=abc",
		"mongodb://u:hunter2@127.0.0.1:1/?authMechanism=BOGUS",
		"mongodb+srv://cluster.example.invalid:27017/db",
		"mongodb://127.0.0.1:99999/",
	} {
		t.Run(uri, func(t *testing.T) {
			code, out := runFor(t, patience, []string{"--once", "--mongo-uri", uri, "--listen", ""})
			if code != 2 || len(strings.Split(strings.TrimSpace(out), "\n")) != 1 || !strings.Contains(out, "--mongo-uri") {
				t.Fatalf("exit %d, want 2 and one line naming --mongo-uri:\n%s", code, out)
			}
			if strings.Contains(out, "hunter2") {
				t.Fatalf("password printed: %s", out)
			}
		})
	}
}

// Issue 13 case 9: a key the upstream rejects, with --rotate-unauthorized
// off, shows as such in status.
func TestStatusShowsRejectedKey(t *testing.T) {
	e := newEnv(t, map[string]float64{"dead": 1, "fine": 2}, 1)
	e.up.SetStatus(secret("dead"), 401)
	if code, out := runFor(t, patience, e.args("--once", "--rotate-unauthorized=false")); code != 0 {
		t.Fatalf("--once exit %d:\n%s", code, out)
	}
	code, out := runFor(t, patience, append([]string{"status"}, e.storeArgs()...))
	if code != 0 {
		t.Fatalf("status exit %d:\n%s", code, out)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "dead ") && !strings.Contains(line, "upstream: unauthorized") {
			t.Fatalf("rejected key not reported: %q", line)
		}
		if strings.HasPrefix(line, "fine ") && strings.Contains(line, "upstream:") {
			t.Fatalf("healthy key reported as rejected: %q", line)
		}
	}
	if !strings.Contains(out, "upstream: unauthorized") {
		t.Fatalf("status:\n%s", out)
	}
}
