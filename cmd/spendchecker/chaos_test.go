package main_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
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
	"github.com/spendchecker/spendchecker/rotation"
	"github.com/spendchecker/spendchecker/rotation/history"
)

// EnvChaos sets the least time TestChaos runs (a Go duration); unset, it
// runs until enough has happened, which CI takes.
//
//	SPENDCHECKER_CHAOS=15m go test -run TestChaos -timeout 30m ./cmd/spendchecker
const EnvChaos = "SPENDCHECKER_CHAOS"

const (
	chaosKeys      = 30
	chaosBackups   = 300
	chaosThreshold = 9.95
)

// What a chaos run must have seen before it stops, and how long it may take
// to see it: the driver paces itself on the daemons' progress, so a slow
// machine makes the run longer, never weaker.
var chaosEnough = chaosCounts{rotations: 10, kills: 5, terms: 3, pauses: 3}

const chaosCap = 12 * time.Minute

type chaosCounts struct{ rotations, kills, terms, pauses int }

func (c chaosCounts) covers(want chaosCounts) bool {
	return c.rotations >= want.rotations && c.kills >= want.kills && c.terms >= want.terms && c.pauses >= want.pauses
}

func (c chaosCounts) String() string {
	return fmt.Sprintf("%d rotations, %d SIGKILLs, %d SIGTERMs, %d store pauses", c.rotations, c.kills, c.terms, c.pauses)
}

// Three daemons against one store and an upstream whose keys cross their
// thresholds at random times, while a driver SIGKILLs and restarts them,
// SIGTERMs them, and cuts the store off for seconds at a time, each fault
// after at least one cycle completed since the last. Afterwards, and after a
// final recovery, every rotation invariant must hold.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test skipped in -short mode")
	}
	var least time.Duration
	if v := os.Getenv(EnvChaos); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%s=%q: %v", EnvChaos, v, err)
		}
		least = d
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("chaos until %v (at least %v), seed %d", chaosEnough, least, seed)
	rng := rand.New(rand.NewPCG(seed, 7))

	mdb := mongotest.New(t)
	proxy := mdb.Proxy(t)
	up := fakeupstream.New("openhands")
	t.Cleanup(up.Close)
	secrets := chaosSeed(t, mdb.Database, up, rng)

	logDir, err := os.MkdirTemp("", "spendchecker-chaos-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("daemon logs kept in %s", logDir)
			return
		}
		_ = os.RemoveAll(logDir)
	})
	uri := strings.Replace(proxy.URI(), "/?", "/"+mdb.Name+"?", 1)
	// Timings leave each lease call 4 s of real time and a leader 12 s to
	// renew, so a daemon on a loaded machine still leads between the
	// faults (the embedded store answers slowly there); a cycle in
	// flight at SIGTERM has a minute to finish, so a slow one still exits 0
	// (past its grace a cycle is cut short, and its write-back may outlast
	// the scheduler's wait: exit 1).
	c := &chaos{t: t, bin: binary(t), logDir: logDir, cycled: make(chan struct{}, 1), args: []string{
		"--mongo-uri", uri, "--provider-url", up.URL, "--listen", "", "--log-format", "json",
		"--interval", "300ms", "--min-check-interval", "1s", "--max-check-interval", "5s",
		"--lease-duration", "20s", "--lease-renew-deadline", "12s", "--lease-retry-period", "4s",
		"--request-timeout", "10s", "--shutdown-grace", "1m",
		"--concurrency", "8", "--threshold", fmt.Sprint(chaosThreshold),
	}}
	for slot := range 3 {
		c.start(slot)
	}

	// Spend grows at a per-key rate: keys cross their thresholds within
	// seconds to minutes; fresh backups start at $0 and grow slower.
	stopSpend := make(chan struct{})
	spendDone := make(chan struct{})
	rates := map[string]float64{}
	for i, s := range secrets {
		if i < chaosKeys {
			rates[s] = 0.01 + 0.2*rng.Float64()
		} else {
			rates[s] = 0.05 * rng.Float64()
		}
	}
	go func() {
		defer close(spendDone)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopSpend:
				return
			case <-tick.C:
				for s, r := range rates {
					up.AddSpend(s, r/10)
				}
			}
		}
	}()

	var n chaosCounts
	// The driver's own pace: random gaps between faults, and before each
	// one a completed cycle since the last (the daemons' progress, read
	// from their logs), so the faults never outrun the work they disturb.
	start := time.Now()
	deadline := start.Add(chaosCap + least)
	pace := func(minMs, spreadMs int) {
		<-time.After(time.Duration(minMs+rng.IntN(spreadMs)) * time.Millisecond)
	}
	for {
		n.rotations = chaosDone(t, mdb.Database)
		if n.covers(chaosEnough) && time.Since(start) >= least {
			break
		}
		pace(500, 2000)
		if !c.waitCycle(deadline) {
			n.rotations = chaosDone(t, mdb.Database)
			t.Fatalf("too little happened to prove anything in %v: %v, want %v; no daemon completed a cycle since the last fault",
				chaosCap+least, n, chaosEnough)
		}
		slot := rng.IntN(3)
		switch p := rng.Float64(); {
		case p < 0.35:
			if c.kill(slot) {
				n.kills++
				pace(0, 2000)
				c.start(slot)
			}
		case p < 0.6:
			if c.term(slot) {
				n.terms++
				c.start(slot)
			}
		case p < 0.85:
			n.pauses++
			proxy.Pause()
			pace(1000, 2000)
			proxy.Resume()
		}
	}
	close(stopSpend)
	<-spendDone
	proxy.Resume()
	for slot := range 3 {
		c.term(slot)
	}

	// A final recovery, then the invariants, by the binary and by querying.
	direct := []string{"--mongo-uri", mdb.URI, "--database", mdb.Name, "--provider-url", up.URL, "--log-format", "json"}
	if code, out := run(t, append([]string{"recover"}, direct...)); code != 0 {
		t.Fatalf("recover exit %d:\n%s", code, out)
	}
	if code, out := run(t, append([]string{"verify"}, direct...)); code != 0 {
		t.Errorf("verify exit %d:\n%s", code, out)
	}
	rotations := chaosInvariants(t, mdb.Database, up)
	t.Logf("%d rotations after recovery; %v during the run of %v; %d daemon processes", rotations, n, time.Since(start).Round(time.Second), c.started)
}

// chaosDone counts the completed rotations, read directly (not through the
// proxy the driver pauses).
func chaosDone(t *testing.T, db *mongo.Database) int {
	t.Helper()
	n, err := db.Collection(rotation.JournalCollection).CountDocuments(context.Background(), bson.M{"state": "done"})
	if err != nil {
		t.Fatal(err)
	}
	return int(n)
}

// chaosSeed writes the keys (with a binding each) and backups, and returns
// every secret, keys first.
func chaosSeed(t *testing.T, db *mongo.Database, up *fakeupstream.Server, rng *rand.Rand) []string {
	t.Helper()
	var secrets []string
	f := fixture.Pool{Bindings: 2, CreatedAt: time.Now().UTC()}
	for i := range chaosKeys {
		id := fmt.Sprintf("k%02d", i)
		f.Keys = append(f.Keys, fixture.Key{ID: id, Secret: secret(id)})
		up.SetSpend(secret(id), 5+4.9*rng.Float64())
		secrets = append(secrets, secret(id))
	}
	for i := range chaosBackups {
		id := fmt.Sprintf("b%03d", i)
		f.Backups = append(f.Backups, fixture.Backup{ID: id, Secret: secret(id)})
		up.SetSpend(secret(id), 0)
		secrets = append(secrets, secret(id))
	}
	if err := fixture.Write(context.Background(), db, openhands, f); err != nil {
		t.Fatal(err)
	}
	return secrets
}

// chaos runs the daemons, one per slot.
type chaos struct {
	t      *testing.T
	bin    string
	logDir string
	args   []string

	// cycled gets a signal whenever a daemon logs a completed cycle.
	cycled chan struct{}

	mu      sync.Mutex
	procs   [3]*chaosProc
	started int
	cycles  int // completed cycles logged by any daemon
	seen    int // cycles when the driver last waited
}

type chaosProc struct {
	cmd      *exec.Cmd
	expected bool // a signal the driver sent
	done     chan struct{}
	log      string
}

func (c *chaos) start(slot int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.started++
	name := fmt.Sprintf("d%d-%d", slot, c.started)
	logPath := filepath.Join(c.logDir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(c.bin, append(c.args, "--instance", name)...)
	w := io.MultiWriter(f, &lineWriter{line: c.logLine})
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	p := &chaosProc{cmd: cmd, done: make(chan struct{}), log: logPath}
	c.procs[slot] = p
	go func() {
		err := cmd.Wait()
		_ = f.Close()
		c.mu.Lock()
		expected := p.expected
		c.mu.Unlock()
		if !expected {
			c.t.Errorf("daemon %s exited by itself (%v); log %s:\n%s", name, err, logPath, tail(logPath))
		}
		close(p.done)
	}()
	c.t.Cleanup(func() {
		c.mu.Lock()
		p.expected = true
		c.mu.Unlock()
		_ = cmd.Process.Kill()
		<-p.done
	})
}

// logLine counts a daemon's completed cycles.
func (c *chaos) logLine(b []byte) {
	if !bytes.Contains(b, []byte(`"msg":"cycle done"`)) {
		return
	}
	c.mu.Lock()
	c.cycles++
	c.mu.Unlock()
	select {
	case c.cycled <- struct{}{}:
	default:
	}
}

// waitCycle returns true once a daemon has completed a cycle since the last
// call, false if none has by deadline.
func (c *chaos) waitCycle(deadline time.Time) bool {
	timeout := time.After(time.Until(deadline))
	for {
		c.mu.Lock()
		progressed := c.cycles > c.seen
		if progressed {
			c.seen = c.cycles
		}
		c.mu.Unlock()
		if progressed {
			return true
		}
		select {
		case <-c.cycled:
		case <-timeout:
			return false
		}
	}
}

// lineWriter hands each complete line written to it to line.
type lineWriter struct {
	buf  []byte
	line func([]byte)
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.line(w.buf[:i])
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}

// kill SIGKILLs the slot's daemon; false if it is not running.
func (c *chaos) kill(slot int) bool {
	p := c.expect(slot)
	if p == nil {
		return false
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	return true
}

// term SIGTERMs the slot's daemon, which must exit 0 within its grace.
func (c *chaos) term(slot int) bool {
	p := c.expect(slot)
	if p == nil {
		return false
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(3 * time.Minute): // a guard against a hang, not a wait
		c.t.Errorf("daemon did not stop within 3 minutes of SIGTERM; log %s:\n%s", p.log, tail(p.log))
		_ = p.cmd.Process.Kill()
		<-p.done
		return true
	}
	// Exit 0; or killed by the signal itself, which happens only when it
	// arrives before main installs its handler (a daemon just restarted).
	st := p.cmd.ProcessState
	ws, _ := st.Sys().(syscall.WaitStatus)
	if !st.Success() && !(ws.Signaled() && ws.Signal() == syscall.SIGTERM) {
		c.t.Errorf("daemon exited %v after SIGTERM; log %s:\n%s", st, p.log, tail(p.log))
	}
	return true
}

func (c *chaos) expect(slot int) *chaosProc {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.procs[slot]
	if p == nil {
		return nil
	}
	select {
	case <-p.done:
		return nil
	default:
	}
	p.expected = true
	c.procs[slot] = nil
	return p
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-15):], "\n")
}

// chaosInvariants checks the README's rotation guarantees by querying the store, and
// returns the number of rotations.
func chaosInvariants(t *testing.T, db *mongo.Database, up *fakeupstream.Server) int {
	t.Helper()
	ctx := context.Background()
	all := func(coll string, filter any) []bson.M {
		cur, err := db.Collection(coll).Find(ctx, filter)
		if err != nil {
			t.Fatal(err)
		}
		var out []bson.M
		if err := cur.All(ctx, &out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	keys := map[any]bool{}
	for _, k := range all(openhands.KeysCollection, bson.M{}) {
		keys[k["_id"]] = true
	}
	if len(keys) != chaosKeys {
		t.Errorf("pool holds %d keys, want %d", len(keys), chaosKeys)
	}
	journal := all(rotation.JournalCollection, bson.M{})
	done := map[any]bson.M{}
	rotatedAgain := map[any]bool{}
	byBackup := map[any]int{}
	for _, e := range journal {
		if e["state"] != "done" {
			t.Errorf("journal entry %v left %v", e["_id"], e["state"])
		}
		done[e["_id"]] = e
		rotatedAgain[e["oldKeyId"]] = true
		byBackup[e["backupId"]]++
	}
	for b, n := range byBackup {
		if n > 1 {
			t.Errorf("backup %v used by %d rotations", b, n)
		}
	}
	for _, b := range all(openhands.BackupsCollection, bson.M{"isUsed": true}) {
		if !keys[b["_id"]] && !rotatedAgain[b["_id"]] {
			t.Errorf("used backup %v is neither a live key nor rotated again", b["_id"])
		}
		if byBackup[b["_id"]] != 1 {
			t.Errorf("used backup %v has %d journal entries", b["_id"], byBackup[b["_id"]])
		}
	}
	for _, b := range all(openhands.BindingsCollection, bson.M{}) {
		if !keys[b[openhands.BindingKeyField]] {
			t.Errorf("binding %v points at missing key %v", b["_id"], b[openhands.BindingKeyField])
		}
	}
	if n := len(all(openhands.BindingsCollection, bson.M{})); n != 2*chaosKeys {
		t.Errorf("%d bindings, want %d", n, 2*chaosKeys)
	}
	hist := all(openhands.HistoryCollection, bson.M{})
	if len(hist) != len(done) {
		t.Errorf("%d history records for %d completed rotations", len(hist), len(done))
	}
	for _, h := range hist {
		var r history.Record
		raw, _ := bson.Marshal(h)
		if err := bson.Unmarshal(raw, &r); err != nil {
			t.Fatal(err)
		}
		if done[r.ID] == nil {
			t.Errorf("history %s has no completed rotation", r.ID)
		}
		if !strings.HasPrefix(r.RotationReason, "proactive_threshold_") && !strings.HasPrefix(r.RotationReason, "budget_exceeded_") {
			t.Errorf("key %s rotated for %q", r.KeyID, r.RotationReason)
		}
		if r.Spend < chaosThreshold || r.Spend > up.MaxServed(secret(r.KeyID))+1e-9 {
			t.Errorf("key %s rotated at $%v: under the threshold or above anything the upstream answered ($%v)", r.KeyID, r.Spend, up.MaxServed(secret(r.KeyID)))
		}
	}
	return len(done)
}
