package main_test

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/spendchecker/spendchecker/internal/fakeupstream"
	"github.com/spendchecker/spendchecker/internal/fixture"
	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/lease"
	"github.com/spendchecker/spendchecker/rotation"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds the production binary once, static, as the Dockerfile does.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "spendchecker-e2e-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "spendchecker")
		cmd := exec.Command("go", "build", "-o", binPath, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

var openhands, _ = rotation.Preset("openhands")

func secret(id string) string { return "sk-e2e-" + id + "-abcdef0123" }

func seed(t *testing.T, db *mongo.Database, up *fakeupstream.Server, keys map[string]float64, backups int) {
	t.Helper()
	var f fixture.Pool
	for id, s := range keys {
		f.Keys = append(f.Keys, fixture.Key{ID: id, Secret: secret(id)})
		up.SetSpend(secret(id), s)
	}
	for i := range backups {
		id := fmt.Sprintf("b%02d", i)
		f.Backups = append(f.Backups, fixture.Backup{ID: id, Secret: secret(id)})
		up.SetSpend(secret(id), 0)
	}
	if err := fixture.Write(context.Background(), db, openhands, f); err != nil {
		t.Fatal(err)
	}
}

type env struct {
	mdb *mongotest.DB
	up  *fakeupstream.Server
}

func newEnv(t *testing.T, keys map[string]float64, backups int) env {
	mdb := mongotest.New(t)
	up := fakeupstream.New("openhands")
	t.Cleanup(up.Close)
	seed(t, mdb.Database, up, keys, backups)
	// A lease nobody holds, as a previous deployment leaves it: on an empty
	// leases collection the first start waits a lease duration (docs/design.md "Lease").
	if _, err := mdb.Database.Collection(lease.Collection).InsertOne(context.Background(), lease.Record{
		ID: "spendchecker/00000000000000000000", Name: "spendchecker", Holder: "seed", Released: true}); err != nil {
		t.Fatal(err)
	}
	return env{mdb, up}
}

// args are the daemon's flags (--once included).
func (e env) args(extra ...string) []string {
	return append(e.storeArgs("--listen", ""), extra...)
}

// storeArgs are the flags every command that opens the store has.
func (e env) storeArgs(extra ...string) []string {
	return append([]string{"--mongo-uri", e.mdb.URI, "--database", e.mdb.Name, "--provider-url", e.up.URL, "--log-format", "json"}, extra...)
}

func run(t *testing.T, args []string, envv ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(binary(t), args...)
	cmd.Env = append(os.Environ(), envv...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, out.String()
}

func TestOnceRotatesAndExitsZero(t *testing.T) {
	e := newEnv(t, map[string]float64{"a": 9.99, "b": 1, "c": 12}, 3)
	code, out := run(t, e.args("--once"))
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if !strings.Contains(out, "rotated 2") {
		t.Errorf("output lacks the summary:\n%s", out)
	}
	if strings.Contains(out, secret("a")) {
		t.Error("output shows a full API key")
	}
	n, _ := e.mdb.Database.Collection(openhands.HistoryCollection).CountDocuments(context.Background(), bson.M{})
	if n != 2 {
		t.Errorf("%d history records, want 2", n)
	}
	if code, out := run(t, append([]string{"verify"}, e.storeArgs()...)); code != 0 {
		t.Errorf("verify exit %d:\n%s", code, out)
	}
}

func TestOnceExitsOneWithoutBackups(t *testing.T) {
	e := newEnv(t, map[string]float64{"a": 10, "b": 11}, 1)
	code, out := run(t, e.args("--once"))
	if code != 1 || !strings.Contains(out, "no backup key is left") {
		t.Fatalf("exit %d, want 1 with a clear error:\n%s", code, out)
	}
}

func TestBadConfigurationExitsTwoAndTouchesNothing(t *testing.T) {
	mdb := mongotest.New(t)
	dir := t.TempDir()
	file := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	uri := mdb.URI
	tests := []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"missing uri", []string{"--once"}, nil, "--mongo-uri"},
		{"bad cron", []string{"--mongo-uri", uri, "--schedule", "61 * * * *"}, nil, "--schedule"},
		{"zero threshold", []string{"--mongo-uri", uri, "--threshold", "0", "--once"}, nil, "threshold"},
		{"negative threshold from env", []string{"--mongo-uri", uri, "--once"}, []string{"SPENDCHECKER_THRESHOLD=-1"}, "threshold"},
		{"unknown provider", []string{"--mongo-uri", uri, "--provider", "acme", "--once"}, nil, "unknown provider"},
		{"litellm without url", []string{"--mongo-uri", uri, "--provider", "litellm", "--once"}, nil, "needs a URL"},
		{"unknown pool", []string{"--mongo-uri", uri, "--pool", "nope", "--once"}, nil, "unknown pool preset"},
		{"unknown flag", []string{"--mongo-uri", uri, "--treshold", "5"}, nil, "treshold"},
		{"bad duration", []string{"--mongo-uri", uri, "--interval", "soon"}, nil, "interval"},
		{"unknown command", []string{"rotat", "k"}, nil, "unknown command"},
		{"rotate without key", []string{"rotate", "--mongo-uri", uri}, nil, "KEY_ID"},
		{"unknown file key", []string{"--config", file("a.json", `{"mongo-uri":"`+uri+`","tresh":1}`)}, nil, "tresh"},
		{"unknown pool key in file", []string{"--config", file("b.json", `{"mongo-uri":"`+uri+`","pools":[{"pool":"factory","tresh":1}]}`)}, nil, "tresh"},
		{"malformed file", []string{"--config", file("c.json", `{"mongo-uri":`)}, nil, "config file"},
		{"missing file", []string{"--config", filepath.Join(dir, "none.json")}, nil, "none.json"},
		{"same pool twice", []string{"--config", file("d.json", `{"mongo-uri":"`+uri+`","pools":[{"pool":"factory"},{"pool":"factory"}]}`)}, nil, "twice"},
		{"lease timings", []string{"--mongo-uri", uri, "--lease-duration", "1s", "--lease-renew-deadline", "2s"}, nil, "lease timings"},
		{"password not echoed", []string{"--mongo-uri", "mongodb://user:hunter2@127.0.0.1:1/x", "--threshold", "0"}, nil, "threshold"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out := run(t, tt.args, tt.env...)
			if code != 2 {
				t.Fatalf("exit %d, want 2:\n%s", code, out)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 1 || !strings.Contains(out, tt.want) {
				t.Errorf("want one line mentioning %q, got:\n%s", tt.want, out)
			}
			if strings.Contains(out, "hunter2") {
				t.Errorf("password printed: %s", out)
			}
		})
	}
	names, err := mdb.Client.ListDatabaseNames(context.Background(), bson.M{"name": bson.M{"$ne": mdb.Name}})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if n == "fproxy" {
			t.Errorf("bad configuration wrote database %s", n)
		}
	}
	if cs, _ := mdb.Database.ListCollectionNames(context.Background(), bson.M{}); len(cs) != 0 {
		t.Errorf("bad configuration created collections %v", cs)
	}
}

// daemonProc is a running daemon whose JSON log lines are readable as events.
type daemonProc struct {
	cmd    *exec.Cmd
	events chan string
}

func startDaemon(t *testing.T, args []string, envv ...string) *daemonProc {
	t.Helper()
	cmd := exec.Command(binary(t), args...)
	cmd.Env = append(os.Environ(), envv...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &daemonProc{cmd: cmd, events: make(chan string, 1000)}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var line struct{ Msg string }
			if json.Unmarshal(sc.Bytes(), &line) == nil {
				select {
				case d.events <- line.Msg:
				default:
				}
			}
		}
		close(d.events)
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return d
}

// patience caps every wait on a daemon's progress: a guard against a hang,
// long enough for a loaded machine, never a measure of speed.
const patience = 3 * time.Minute

// waitFor blocks until the daemon logs msg; false if it exits first or
// patience runs out.
func (d *daemonProc) waitFor(msg string) bool {
	_, ok := d.logsUntil(msg)
	return ok
}

// logsUntil returns the messages the daemon logs up to and including msg;
// false if it exits first or patience runs out.
func (d *daemonProc) logsUntil(msg string) ([]string, bool) {
	deadline := time.After(patience)
	var seen []string
	for {
		select {
		case m, ok := <-d.events:
			if !ok {
				return seen, false
			}
			seen = append(seen, m)
			if m == msg {
				return seen, true
			}
		case <-deadline:
			return seen, false
		}
	}
}

func TestOnceExitsThreeWhileLeaseHeld(t *testing.T) {
	e := newEnv(t, map[string]float64{"a": 1}, 1)
	// The holder renews every 4 s with 4 s for each renewal, so a loaded
	// machine does not make it miss its 20 s renew deadline and lose the
	// lease to the one-shot.
	d := startDaemon(t, e.args("--interval", "1s", "--lease-duration", "30s", "--instance", "holder"))
	if !d.waitFor("lease acquired") {
		t.Fatal("daemon never took the lease")
	}
	code, out := run(t, e.args("--once", "--lease-duration", "30s", "--instance", "once"))
	if code != 3 || !strings.Contains(out, "held by holder") {
		t.Fatalf("exit %d, want 3:\n%s", code, out)
	}
}

// Two daemons side by side: only the leader polls; SIGTERM hands the lease
// over by releasing it, SIGKILL only after the lease duration. Which of the
// two happened is read from the logs, not from how long it took, so a slow
// machine cannot turn one into the other.
func TestTwoDaemonsFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("two daemons hand the lease over in real time (hand-overs: package lease)")
	}
	// Renew deadline 6.7 s, retry period 1.3 s: long enough that a loaded
	// machine's leader does not lose the lease before the signal.
	const leaseDur = 10 * time.Second
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			e := newEnv(t, map[string]float64{"a": 1, "b": 2}, 1)
			// Each daemon polls its own upstream, so polls count per process.
			up2 := fakeupstream.New("openhands")
			defer up2.Close()
			for _, id := range []string{"a", "b", "b00"} {
				up2.SetSpend(secret(id), e.up.Spend(secret(id)))
			}
			common := []string{"--interval", "200ms", "--adaptive=false", "--lease-duration", leaseDur.String()}
			first := startDaemon(t, append(e.args(common...), "--instance", "first"))
			if !first.waitFor("lease acquired") {
				t.Fatal("first daemon never led")
			}
			args2 := append(e.args(common...), "--instance", "second")
			for i, a := range args2 {
				if a == e.up.URL {
					args2[i] = up2.URL
				}
			}
			second := startDaemon(t, args2)
			if !second.waitFor("spendchecker started") || !first.waitFor("cycle done") || !first.waitFor("cycle done") {
				t.Fatal("daemons did not run")
			}
			if up2.TotalCalls() != 0 || e.up.TotalCalls() == 0 {
				t.Fatalf("follower polled %d times, leader %d", up2.TotalCalls(), e.up.TotalCalls())
			}
			if err := first.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			from := time.Now()
			before, ok := second.logsUntil("lease acquired")
			if !ok {
				t.Fatal("standby never took over")
			}
			took := time.Since(from)
			expired := slices.Contains(before, "lease expired; taking over")
			t.Logf("%v: standby led after %v", sig, took)
			switch sig {
			case syscall.SIGTERM:
				if expired {
					t.Errorf("after SIGTERM the standby waited the lease out (%v) instead of taking the released lease", took)
				}
				if !first.waitFor("lease released") {
					t.Error("the leader did not log its release")
				}
				if err := first.cmd.Wait(); err != nil {
					t.Errorf("leader exit after SIGTERM: %v", err)
				}
			case syscall.SIGKILL:
				// Its last renewal was at most one retry period before the
				// kill; the standby waits the duration from then, or later.
				if !expired || took < leaseDur-leaseDur*2/15 {
					t.Errorf("standby took over after %v (expiry logged %v), before the lease duration %v", took, expired, leaseDur)
				}
			}
			if !second.waitFor("cycle done") {
				t.Fatal("new leader does not poll")
			}
		})
	}
}

func TestSdNotify(t *testing.T) {
	e := newEnv(t, map[string]float64{"a": 1}, 1)
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	got := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				close(got)
				return
			}
			for _, l := range strings.Split(string(buf[:n]), "\n") {
				got <- l
			}
		}
	}()
	d := startDaemon(t, e.args("--interval", "200ms"), "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=200000")
	want := func(prefix string) {
		t.Helper()
		deadline := time.After(patience)
		for {
			select {
			case l := <-got:
				if strings.HasPrefix(l, prefix) {
					return
				}
			case <-deadline:
				t.Fatalf("no %s notification", prefix)
			}
		}
	}
	want("READY=1")
	want("WATCHDOG=1")
	want("STATUS=checked")
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	want("STOPPING=1")
	if err := d.cmd.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
}

func TestBinaryIsStaticWithoutFerretDB(t *testing.T) {
	f, err := elf.Open(binary(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("binary is dynamically linked")
		}
	}
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "FerretDB") || strings.Contains(string(out), "internal/embedded") {
		t.Error("the production binary imports the embedded store")
	}
}

func TestDemoRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the demo")
	}
	cmd := exec.Command("go", "run", "../spendchecker-demo")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "verify clean") || !strings.Contains(string(out), "proactive_threshold_") {
		t.Fatalf("demo output lacks a rotation or a clean verify:\n%s", out)
	}
}

// rotate honours --pool among a config file's pools: the same key id in two
// pools rotates only in the one named, and without a name it is refused.
func TestRotateHonoursPool(t *testing.T) {
	mdb := mongotest.New(t)
	ctx := context.Background()
	factory, _ := rotation.Preset("factory")
	for _, p := range []rotation.Pool{openhands, factory} {
		if _, err := mdb.Database.Collection(p.KeysCollection).InsertOne(ctx, bson.M{"_id": "k1", "apiKey": secret(p.Name + "-k1"), "status": "healthy"}); err != nil {
			t.Fatal(err)
		}
		if _, err := mdb.Database.Collection(p.BackupsCollection).InsertOne(ctx, bson.M{"_id": p.Name + "-b1", "apiKey": secret(p.Name + "-b1"), "isUsed": false}); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(t.TempDir(), "config.json")
	body := `{"pools": [{"pool": "openhands"}, {"pool": "factory", "provider": "litellm", "provider-url": "http://127.0.0.1:1"}]}`
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"--mongo-uri", mdb.URI, "--database", mdb.Name, "--config", file, "--log-format", "json"}
	has := func(p rotation.Pool) bool {
		n, err := mdb.Database.Collection(p.KeysCollection).CountDocuments(ctx, bson.M{"_id": "k1"})
		if err != nil {
			t.Fatal(err)
		}
		return n == 1
	}
	if code, out := run(t, append([]string{"rotate", "k1"}, base...)); code != 2 || !strings.Contains(out, "--pool") || !has(openhands) || !has(factory) {
		t.Fatalf("rotate of a key id in two pools without --pool: exit %d, want 2 naming --pool and nothing rotated:\n%s", code, out)
	}
	code, out := run(t, append([]string{"rotate", "k1", "--pool", "factory"}, base...))
	if code != 0 || !strings.Contains(out, "pool factory: rotated k1") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if has(factory) || !has(openhands) {
		t.Errorf("after rotate k1 --pool factory: factory k1 present %v, openhands k1 present %v", has(factory), has(openhands))
	}
}

// SIGHUP (a closed terminal, a stray `kill -HUP`, `systemctl reload`) used
// to kill the daemon without releasing the lease, and systemd's
// Restart=on-failure counts a death by SIGHUP as clean. It is ignored (and
// said so); SIGTERM still stops it cleanly afterwards.
func TestSIGHUPIsIgnored(t *testing.T) {
	e := newEnv(t, map[string]float64{"a": 1}, 1)
	d := startDaemon(t, e.args("--interval", "200ms", "--adaptive=false", "--instance", "hup"))
	if !d.waitFor("spendchecker started") {
		t.Fatal("daemon did not start")
	}
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !d.waitFor("SIGHUP ignored") {
		t.Fatalf("the daemon did not survive SIGHUP: %v", d.cmd.Wait())
	}
	if !d.waitFor("cycle done") {
		t.Fatal("no cycle after SIGHUP")
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !d.waitFor("lease released") {
		t.Error("SIGTERM after SIGHUP did not release the lease")
	}
	if err := d.cmd.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
}

// A second SIGTERM or Ctrl-C during the shutdown grace exits at once, even
// while the cycle in flight is wedged.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	for _, second := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(second.String(), func(t *testing.T) {
			e := newEnv(t, map[string]float64{"a": 1}, 1)
			// An upstream that never answers wedges the cycle.
			polled := make(chan struct{}, 1)
			release := make(chan struct{})
			wedged := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
				select {
				case polled <- struct{}{}:
				default:
				}
				select {
				case <-release:
				case <-r.Context().Done():
				}
			}))
			t.Cleanup(wedged.Close)
			t.Cleanup(func() { close(release) })
			args := e.args("--interval", "200ms", "--shutdown-grace", "1h", "--request-timeout", "1h")
			for i, a := range args {
				if a == e.up.URL {
					args[i] = wedged.URL
				}
			}
			d := startDaemon(t, args)
			select {
			case <-polled:
			case <-time.After(patience):
				t.Fatal("the daemon never polled")
			}
			if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if !d.waitFor("shutting down; letting the cycle in flight finish") {
				t.Fatal("no graceful shutdown began")
			}
			if err := d.cmd.Process.Signal(second); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- d.cmd.Wait() }()
			select {
			case err := <-exited:
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() != 1 {
					t.Errorf("exit after the second signal: %v, want exit status 1", err)
				}
			case <-time.After(patience): // the grace period is an hour
				t.Fatal("a second signal did not end the daemon; it waits for the grace period")
			}
		})
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Liveness must not depend on the store: /healthz answers from the start,
// while the store is unreachable, and /readyz says what is missing.
func TestHealthzWhileStoreUnreachable(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out a daemon's store timeouts in real time (the status page with the store down: cli's TestStatusPageWithTheStoreDown)")
	}
	listen := "127.0.0.1:" + freePort(t)
	d := startDaemon(t, []string{"--mongo-uri", "mongodb://127.0.0.1:1/fproxy", "--listen", listen, "--log-format", "json", "--lease-duration", "3s"})
	if !d.waitFor("store not ready; retrying") {
		t.Fatal("the daemon did not report the unreachable store")
	}
	if code, body := get(t, "http://"+listen+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz while the store is unreachable: %d %s", code, body)
	}
	if code, body := get(t, "http://"+listen+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "store unreachable") {
		t.Errorf("/readyz while the store is unreachable: %d %s", code, body)
	}
	if code, out := run(t, []string{"healthcheck", "--listen", listen}); code != 0 {
		t.Errorf("healthcheck while the store is unreachable: exit %d: %s", code, out)
	}
}

// The Kubernetes example must not take the proxy out of its Service when
// the store hiccups: no container of the proxy's pod is gated on /readyz,
// and the sidecar's liveness probe is /healthz.
func TestKubernetesExampleProbes(t *testing.T) {
	b, err := os.ReadFile("../../deploy/kubernetes.yaml")
	if err != nil {
		t.Fatal(err)
	}
	docs := strings.Split(string(b), "\n---")
	var deployment string
	for _, d := range docs {
		if strings.Contains(d, "kind: Deployment") {
			deployment = d
		}
	}
	if deployment == "" {
		t.Fatal("no Deployment in deploy/kubernetes.yaml")
	}
	for _, line := range strings.Split(deployment, "\n") {
		code, _, _ := strings.Cut(line, "#")
		if strings.Contains(code, "/readyz") {
			t.Errorf("the proxy's pod probes /readyz (a store hiccup takes every proxy replica out of service): %q", strings.TrimSpace(line))
		}
	}
	if !strings.Contains(deployment, "livenessProbe:") || !strings.Contains(deployment, "path: /healthz") {
		t.Error("the sidecar has no /healthz liveness probe")
	}
}

// Under systemd's DynamicUser= the daemon cannot read a private file in
// /etc; the units hand it the MongoDB URI and the config file as
// credentials, read from $CREDENTIALS_DIRECTORY.
func TestSystemdCredentials(t *testing.T) {
	e := newEnv(t, map[string]float64{"a": 12, "b": 1}, 1)
	creds := t.TempDir()
	if err := os.WriteFile(filepath.Join(creds, "mongo-uri"), []byte(e.mdb.URI+"\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	cfg := `{"database": "` + e.mdb.Name + `", "pools": [{"pool": "openhands", "provider-url": "` + e.up.URL + `"}]}`
	if err := os.WriteFile(filepath.Join(creds, "config.json"), []byte(cfg), 0o400); err != nil {
		t.Fatal(err)
	}
	code, out := run(t, []string{"--once", "--listen", "", "--log-format", "json"}, "CREDENTIALS_DIRECTORY="+creds)
	if code != 0 || !strings.Contains(out, "rotated 1") {
		t.Fatalf("--once with the URI and config as credentials: exit %d:\n%s", code, out)
	}
}

// A config file holding the MongoDB password that other users can read is
// warned about at start; a private one is not.
func TestWarnsOnReadableSecretFile(t *testing.T) {
	dir := t.TempDir()
	// healthcheck reads --listen from the same file (and skips the other
	// commands' keys): a daemon's /healthz answers it.
	daemon := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") }))
	defer daemon.Close()
	for _, tt := range []struct {
		mode os.FileMode
		warn bool
	}{{0o644, true}, {0o640, true}, {0o600, false}} {
		t.Run(tt.mode.String(), func(t *testing.T) {
			file := filepath.Join(dir, fmt.Sprintf("config-%o.json", tt.mode))
			body := `{"mongo-uri": "mongodb://u:hunter2@127.0.0.1:1/fproxy", "log-format": "json", "listen": "` + daemon.Listener.Addr().String() + `"}`
			if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(file, tt.mode); err != nil {
				t.Fatal(err)
			}
			code, out := run(t, []string{"healthcheck", "--config", file})
			if code != 0 {
				t.Fatalf("exit %d:\n%s", code, out)
			}
			if got := strings.Contains(out, "readable by other users") && strings.Contains(out, file); got != tt.warn {
				t.Errorf("mode %v: warned %v, want %v:\n%s", tt.mode, got, tt.warn, out)
			}
			if strings.Contains(out, "hunter2") {
				t.Error("password printed")
			}
		})
	}
}

// A person's first command prints the usage and exits 0 (docs/operating.md,
// "Operations"): the binary, as a shell runs it.
func TestHelpExitsZero(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}, {"help", "status"}, {"status", "--help"}, {"rotate", "-h"}} {
		code, out := run(t, args)
		if code != 0 || !strings.Contains(out, "USAGE") || !strings.Contains(out, "SPENDCHECKER_MONGO_URI") {
			t.Errorf("spendchecker %s: exit %d, want 0 and the usage:\n%s", strings.Join(args, " "), code, out)
		}
	}
}
