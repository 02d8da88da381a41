// Command bench measures the spend checker and prints figures with their
// bounds: cycle throughput against the ideal N·latency/concurrency, database
// round trips per cycle, peak heap by key count, and adaptive against fixed
// polling over a simulated hour.
//
//	go run ./bench                      # everything (a few minutes)
//	go run ./bench -run throughput      # or memory, adaptive, batch
//
// The embedded store (and, for the memory figures, the upstream) run in a
// child process, so the heap measured is the checker's own.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/checker"
	"github.com/spendchecker/spendchecker/history"
	"github.com/spendchecker/spendchecker/internal/embedded"
	"github.com/spendchecker/spendchecker/internal/fakeupstream"
	"github.com/spendchecker/spendchecker/rotation"
	"github.com/spendchecker/spendchecker/spend"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type settings struct {
	serve       bool
	latency     time.Duration
	what        string
	keys        int
	fullKeys    int
	concurrency int
	memKeys     string
	simKeys     int
	seed        uint64
	variants    string
	scenarios   string
	batchKeys   int
}

func run(args []string) error {
	var s settings
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.BoolVar(&s.serve, "serve", false, "internal: serve the store and upstream for the measuring process")
	fs.DurationVar(&s.latency, "latency", 20*time.Millisecond, "upstream answer latency (throughput)")
	fs.StringVar(&s.what, "run", "throughput,memory,adaptive", "which figures")
	fs.IntVar(&s.keys, "keys", 10000, "keys in the throughput cycle")
	fs.IntVar(&s.concurrency, "concurrency", 100, "upstream concurrency in the throughput cycle")
	fs.IntVar(&s.fullKeys, "full-keys", 10000, "keys in the full (write-back) throughput cycle")
	fs.StringVar(&s.memKeys, "mem-keys", "1000,10000,100000", "key counts for the memory figures")
	fs.IntVar(&s.simKeys, "sim-keys", 200, "keys in the simulated hour")
	fs.Uint64Var(&s.seed, "seed", 1, "random seed of the simulated trajectories")
	fs.StringVar(&s.variants, "variants", "fixed,adaptive", "adaptive: include fixed polling (drop it to tune the planner quickly)")
	fs.StringVar(&s.scenarios, "scenarios", "", "adaptive: which scenarios (comma-separated; default all)")
	fs.IntVar(&s.batchKeys, "batch-keys", 1000, "batch: keys in the pool read per key and by report")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the measuring process to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cpuProfile != "" && !s.serve {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if s.serve {
		return serve(s.latency)
	}
	fmt.Printf("# spendchecker bench — %s, %d CPUs, GOMAXPROCS %d, %s/%s\n", runtime.Version(), runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH)
	ctx := context.Background()
	for _, w := range strings.Split(s.what, ",") {
		var err error
		switch strings.TrimSpace(w) {
		case "throughput":
			err = throughput(ctx, s)
		case "memory":
			err = memory(ctx, s)
		case "adaptive":
			err = adaptive(ctx, s)
		case "batch":
			err = batchCalls(ctx, s)
		default:
			err = fmt.Errorf("unknown figure %q (throughput, memory, adaptive, batch)", w)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", w, err)
		}
	}
	return nil
}

// serve is the child: the store and an upstream where every key has spent
// $1, until stdin closes. A line "index DB" on stdin gives DB's collections
// the _id index FerretDB's updates can use (embedded.Store.IndexIDs) and
// answers "ok".
func serve(latency time.Duration) error {
	dir, err := os.MkdirTemp("", "spendchecker-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	store, err := embedded.Start(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer store.Close()
	up := fakeupstream.New("openhands")
	defer up.Close()
	up.Latency = latency
	up.SetDefaultSpend(1)
	fmt.Println(store.URI(), up.URL)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		db, ok := strings.CutPrefix(in.Text(), "index ")
		if !ok {
			return fmt.Errorf("serve: unknown request %q", in.Text())
		}
		if err := store.IndexIDs(context.Background(), db); err != nil {
			return err
		}
		fmt.Println("ok")
	}
	return in.Err()
}

type child struct {
	uri, upstream string
	cmd           *exec.Cmd
	stdin         io.WriteCloser
	stdout        *bufio.Reader
	client        *mongo.Client
}

// startChild starts the serving process and connects to its store; rt, when
// not nil, counts the commands the client sends.
func startChild(latency time.Duration, rt *roundTrips) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "-serve", "-latency", latency.String())
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stdout := bufio.NewReader(out)
	line, err := stdout.ReadString('\n')
	f := strings.Fields(line)
	if err != nil || len(f) != 2 {
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("child store did not start: %q %v", line, err)
	}
	c := &child{uri: f[0], upstream: f[1], cmd: cmd, stdin: in, stdout: stdout}
	if c.client, err = connect(c.uri, rt); err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

// indexIDs asks the child to index db's collections by _id as FerretDB
// looks them up (see embedded.Store.IndexIDs).
func (c *child) indexIDs(db string) error {
	if _, err := fmt.Fprintf(c.stdin, "index %s\n", db); err != nil {
		return err
	}
	line, err := c.stdout.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ok" {
		return fmt.Errorf("child could not index %s: %q %v", db, line, err)
	}
	return nil
}

func (c *child) stop() {
	if c.client != nil {
		_ = c.client.Disconnect(context.Background())
	}
	_ = c.stdin.Close()
	_ = c.cmd.Wait()
}

// roundTrips counts the commands a client sends.
type roundTrips struct{ n atomic.Int64 }

func (r *roundTrips) monitor() *event.CommandMonitor {
	return &event.CommandMonitor{Started: func(context.Context, *event.CommandStartedEvent) { r.n.Add(1) }}
}

func connect(uri string, rt *roundTrips) (*mongo.Client, error) {
	o := options.Client().ApplyURI(uri)
	if rt != nil {
		o.SetMonitor(rt.monitor())
	}
	return mongo.Connect(o)
}

var pool, _ = rotation.Preset("openhands")

func secretOf(i int) string { return fmt.Sprintf("sk-bench-%07d-0123456789abcdef", i) }

// seedKeys writes n healthy keys in batches, as the proxy would have.
func seedKeys(ctx context.Context, db *mongo.Database, n int) error {
	now := time.Now().UTC()
	for lo := 0; lo < n; lo += 1000 {
		var docs []any
		for i := lo; i < min(n, lo+1000); i++ {
			docs = append(docs, bson.D{{Key: "_id", Value: fmt.Sprintf("key-%07d", i)}, {Key: "apiKey", Value: secretOf(i)},
				{Key: "status", Value: "healthy"}, {Key: "tokensUsed", Value: int64(0)}, {Key: "createdAt", Value: now}})
		}
		if _, err := db.Collection(pool.KeysCollection).InsertMany(ctx, docs, options.InsertMany().SetOrdered(false)); err != nil {
			return fmt.Errorf("seed: %w", err)
		}
	}
	return nil
}

func newChecker(db *mongo.Database, upstream string, conc, batch int, adaptive, dryRun bool, clock clockwork.Clock) (*checker.Checker, error) {
	hc := &http.Client{Transport: &http.Transport{MaxIdleConns: conc, MaxIdleConnsPerHost: conc}}
	prov, err := spend.New("openhands", upstream, &spend.Client{HTTP: hc})
	if err != nil {
		return nil, err
	}
	chk, err := checker.New(db, checker.Config{
		Pools:       []checker.Pool{{Pool: pool, Provider: prov, Threshold: 9.95, RotateUnauthorized: true}},
		Concurrency: conc, Adaptive: adaptive, BatchSize: batch, Instance: "bench", Clock: clock, DryRun: dryRun,
	})
	if err != nil {
		return nil, err
	}
	return chk, chk.EnsureIndexes(context.Background())
}

// newSimChecker is the cadence simulation's checker: its write-back is
// unfenced, because FerretDB v1 scans the whole table for an update whose
// filter is more than _id; the fence changes nothing about what is polled.
func newSimChecker(db *mongo.Database, upstream string, adaptive bool, clock clockwork.Clock) (*checker.Checker, error) {
	prov, err := spend.New("openhands", upstream, &spend.Client{})
	if err != nil {
		return nil, err
	}
	chk, err := checker.New(db, checker.Config{
		Pools:       []checker.Pool{{Pool: pool, Provider: prov, Threshold: 9.95, RotateUnauthorized: true}},
		Concurrency: 16, Adaptive: adaptive, BatchSize: 500, Instance: "bench", Clock: clock, Unfenced: true,
	})
	if err != nil {
		return nil, err
	}
	return chk, chk.EnsureIndexes(context.Background())
}

func cycleOnce(ctx context.Context, chk *checker.Checker, n int) (time.Duration, error) {
	start := time.Now()
	sum, err := chk.Cycle(ctx)
	d := time.Since(start)
	if err != nil {
		return d, err
	}
	if t := sum.Total(); t.Checked != n || t.Failed != 0 {
		return d, fmt.Errorf("cycle checked %d, failed %d; want %d, 0", t.Checked, t.Failed, n)
	}
	return d, nil
}

// throughput: one cycle over N keys, upstream latency L, concurrency C,
// against the ideal N·L/C and against per-key reads (cursor batches of 1).
// The polling path (a dry run: stream, poll, decide; no writes) isolates
// the checker; the full cycle adds the write-back of every key. The store
// gets the _id index its updates can use (embedded.Store.IndexIDs): without
// it FerretDB scans the table for each updated document and the full cycle
// measures that, not the checker.
func throughput(ctx context.Context, s settings) error {
	var rt roundTrips
	ch, err := startChild(s.latency, &rt)
	if err != nil {
		return err
	}
	defer ch.stop()
	client := ch.client
	fmt.Printf("\n## cycle throughput: upstream latency %v, concurrency %d; ideal = N·L/C\n", s.latency, s.concurrency)
	var full time.Duration
	fmt.Printf("%-44s %7s %9s %9s %9s %12s %10s\n", "variant", "keys", "ideal", "wall", "vs ideal", "round trips", "vs N/250")
	for _, v := range []struct {
		name   string
		keys   int
		batch  int
		dryRun bool
	}{
		{"ours: polling path (dry run), batches of 500", s.keys, 500, true},
		{"baseline: polling path, per-key reads", s.keys, 1, true},
		{"ours: full cycle with write-back", s.fullKeys, 500, false},
	} {
		db := client.Database(fmt.Sprintf("throughput_%d", v.keys))
		if n, _ := db.Collection(pool.KeysCollection).EstimatedDocumentCount(ctx); n == 0 {
			if err := seedKeys(ctx, db, v.keys); err != nil {
				return err
			}
			if err := ch.indexIDs(db.Name()); err != nil {
				return err
			}
		}
		chk, err := newChecker(db, ch.upstream, s.concurrency, v.batch, false, v.dryRun, nil)
		if err != nil {
			return err
		}
		ideal := time.Duration(float64(v.keys) * float64(s.latency) / float64(s.concurrency))
		rt.n.Store(0)
		d, err := cycleOnce(ctx, chk, v.keys)
		if err != nil {
			return err
		}
		n := rt.n.Load()
		fmt.Printf("%-44s %7d %9v %9v %8.3fx %12d %9.2fx\n", v.name, v.keys, ideal, d.Round(time.Millisecond), float64(d)/float64(ideal), n, float64(n)/(float64(v.keys)/250))
		if !v.dryRun {
			full = d
		}
	}
	// The full cycle cannot beat the store: the same write-back alone, with
	// no polling, is its other bound.
	db := client.Database(fmt.Sprintf("throughput_%d", s.fullKeys))
	rt.n.Store(0)
	alone, err := writeBackAlone(ctx, db, s.fullKeys)
	if err != nil {
		return err
	}
	ideal := time.Duration(float64(s.fullKeys) * float64(s.latency) / float64(s.concurrency))
	fmt.Printf("%-44s %7d %9s %9v %8.3fx %12d %9.2fx\n", "store alone: the same write-back, no polling", s.fullKeys, "", alone.Round(time.Millisecond),
		float64(alone)/float64(ideal), rt.n.Load(), float64(rt.n.Load())/(float64(s.fullKeys)/250))
	bound := max(ideal, alone)
	fmt.Printf("full cycle vs its bound max(ideal, store alone) = %v: %.3fx\n", bound.Round(time.Millisecond), float64(full)/float64(bound))
	return nil
}

// writeBackAlone updates every key's spend fields as the checker's
// write-back does on FerretDB (checker.FerretWriteBatch statements per
// command), one command at a time, and times it.
func writeBackAlone(ctx context.Context, db *mongo.Database, n int) (time.Duration, error) {
	keys := db.Collection(pool.KeysCollection)
	at := time.Now().UTC()
	start := time.Now()
	batch := make([]mongo.WriteModel, 0, checker.FerretWriteBatch)
	for i := range n {
		set := bson.M{"totalSpend": 1.0, "lastSpendCheck": at, "nextSpendCheck": at.Add(time.Minute), "spendRate": 0.0}
		batch = append(batch, mongo.NewUpdateOneModel().SetFilter(bson.M{"_id": fmt.Sprintf("key-%07d", i)}).SetUpdate(bson.M{"$set": set}))
		if len(batch) == cap(batch) || i == n-1 {
			if _, err := keys.BulkWrite(ctx, batch, options.BulkWrite().SetOrdered(false)); err != nil {
				return 0, err
			}
			batch = batch[:0]
		}
	}
	return time.Since(start), nil
}

// memory: peak heap during one cycle, by key count, against reading the
// whole collection into memory (what a naive checker does).
func memory(ctx context.Context, s settings) error {
	ch, err := startChild(0, nil)
	if err != nil {
		return err
	}
	defer ch.stop()
	client := ch.client
	// What holds memory is the stream, the polls in flight and, in the full
	// cycle, the write-back's one batch: a dry run shows the first two alone.
	fmt.Printf("\n## peak heap during one cycle (concurrency 100, batches of 500; budget 64 MiB at 100k keys)\n")
	fmt.Printf("%8s %14s %10s %16s %10s %22s %10s\n", "keys", "ours dry run", "per key", "ours full cycle", "per key", "whole collection peak", "per key")
	for _, f := range strings.Split(s.memKeys, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return fmt.Errorf("bad -mem-keys entry %q", f)
		}
		db := client.Database(fmt.Sprintf("mem_%d", n))
		if err := seedKeys(ctx, db, n); err != nil {
			return err
		}
		if err := ch.indexIDs(db.Name()); err != nil {
			return err
		}
		chk, err := newChecker(db, ch.upstream, 100, 500, false, true, nil)
		if err != nil {
			return err
		}
		ours, err := peakHeap(func() error { _, err := cycleOnce(ctx, chk, n); return err })
		if err != nil {
			return err
		}
		full, err := newChecker(db, ch.upstream, 100, 500, false, false, nil)
		if err != nil {
			return err
		}
		oursFull, err := peakHeap(func() error { _, err := cycleOnce(ctx, full, n); return err })
		if err != nil {
			return err
		}
		naive, err := peakHeap(func() error {
			cur, err := db.Collection(pool.KeysCollection).Find(ctx, bson.M{"status": "healthy"})
			if err != nil {
				return err
			}
			var all []bson.M
			if err := cur.All(ctx, &all); err != nil {
				return err
			}
			runtime.KeepAlive(all)
			return nil
		})
		if err != nil {
			return err
		}
		fmt.Printf("%8d %10.1f MiB %8.0f B %12.1f MiB %8.0f B %18.1f MiB %8.0f B\n", n, mib(ours), float64(ours)/float64(n),
			mib(oursFull), float64(oursFull)/float64(n), mib(naive), float64(naive)/float64(n))
		_ = db.Drop(ctx)
	}
	return nil
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// peakHeap runs f and returns the highest heap in use above what was live
// before, sampled every millisecond.
func peakHeap(f func() error) (uint64, error) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			if m.HeapAlloc > peak.Load() {
				peak.Store(m.HeapAlloc)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	err := f()
	close(stop)
	<-done
	if p := peak.Load(); p > base {
		return p - base, err
	}
	return 0, err
}

// scenario is one population of spend trajectories for the adaptive
// figures.
type scenario struct {
	name string
	what string
	// burstMin, burstMax: bursts run at this multiple of a key's base rate.
	burstMin, burstMax float64
	// idleThenBurst: half the keys sit idle between $9.00 and $9.90 for 5 to
	// 50 minutes, then spend at a rate from the pool's range.
	idleThenBurst bool
	// migrated: the keys carry totalSpend and lastSpendCheck (equal to the
	// upstream's reading: they look idle) but no spendRate.
	migrated bool
	// lagMin, lagMax: the upstream reports the spend of this long ago.
	lagMin, lagMax time.Duration
}

var scenarios = []scenario{
	{name: "mixed", what: "bursts 2-4x", burstMin: 2, burstMax: 4},
	{name: "burst10", what: "bursts 10x", burstMin: 10, burstMax: 10},
	{name: "burst20", what: "bursts 20x", burstMin: 20, burstMax: 20},
	{name: "idle-burst", what: "idle near threshold, then spending", burstMin: 2, burstMax: 4, idleThenBurst: true},
	{name: "migrated", what: "migrated without a rate", burstMin: 2, burstMax: 4, migrated: true},
	{name: "lag", what: "upstream lags 10-15 s", burstMin: 2, burstMax: 4, lagMin: 10 * time.Second, lagMax: 15 * time.Second},
}

// adaptive: per scenario, one simulated hour (a cycle every 10 s on a fake
// clock) of keys with varied, bursty spend, polled adaptively and at the
// fixed minimum interval. Both runs of a scenario see the same trajectories.
// Overshoot is the key's true spend when it was rotated minus the threshold.
func adaptive(ctx context.Context, s settings) error {
	ch, err := startChild(0, nil)
	if err != nil {
		return err
	}
	defer ch.stop()
	fmt.Printf("\n## adaptive vs fixed polling: %d keys, one simulated hour, cycle and min interval 10 s, max 30 min, threshold $9.95, seed %d\n", s.simKeys, s.seed)
	fmt.Printf("%-11s %12s %12s %7s %11s %22s %11s %11s %9s %9s\n", "scenario", "fixed calls", "adapt calls", "fewer", "rotations", "worst overshoot f / a",
		"pool-peak", "ideal", "fewer pp", "fewer id")
	var fixedAll, adaptiveAll, peakAll, idealAll int64
	worse := []string{}
	for _, sc := range scenarios {
		if s.scenarios != "" && !strings.Contains(","+s.scenarios+",", ","+sc.name+",") {
			continue
		}
		// Fixed polling on the model: no store, so it runs in milliseconds;
		// its figures stand in for the checker's when -variants leaves the
		// fixed run out (marked *), and are printed beside them otherwise.
		fm := model(s, sc, fixedPolicy)
		f, mark := fm, "*"
		if strings.Contains(s.variants, "fixed") {
			if f, err = simulate(ctx, ch, s, false, sc); err != nil {
				return fmt.Errorf("%s fixed: %w", sc.name, err)
			}
			mark = ""
		}
		var a simResult
		if strings.Contains(s.variants, "adaptive") {
			if a, err = simulate(ctx, ch, s, true, sc); err != nil {
				return fmt.Errorf("%s adaptive: %w", sc.name, err)
			}
		}
		// The two bounds (BENCHMARKS.md): schedulers that rotate every key
		// with an overshoot no larger than fixed polling's worst here, w,
		// whatever the key does within its limit — the scenario's fastest
		// rate for every key (pool-peak), or each key's own fastest (ideal).
		w := f.worst
		peak := poolPeak(s, sc)
		pp := model(s, sc, boundPolicy(w, func(*trajectory) float64 { return peak }))
		id := model(s, sc, boundPolicy(w, (*trajectory).peak))
		fixedAll += f.calls
		adaptiveAll += a.calls
		peakAll += pp.calls
		idealAll += id.calls
		fmt.Printf("%-11s %11d%1s %12d %6.1fx %4d/%-4d%1s %10.4f$ / %.4f$ %11d %11d %8.1fx %8.1fx\n", sc.name, f.calls, mark, a.calls,
			float64(f.calls)/float64(max(a.calls, 1)), f.rotations, a.rotations, mark, f.worst, a.worst,
			pp.calls, id.calls, float64(f.calls)/float64(max(pp.calls, 1)), float64(f.calls)/float64(max(id.calls, 1)))
		if os.Getenv("BENCH_DEBUG") != "" {
			fmt.Fprintf(os.Stderr, "%s: model fixed %d calls %d rotations worst %.4f; pool peak %.6f $/s: %d rotations worst %.4f; ideal %d rotations worst %.4f\n",
				sc.name, fm.calls, fm.rotations, fm.worst, peak, pp.rotations, pp.worst, id.rotations, id.worst)
		}
		if a.worst > f.worst+1e-9 {
			worse = append(worse, sc.name)
		}
	}
	fmt.Printf("overall: adaptive makes %.1fx fewer calls (target >= 20x), the pool-peak bound %.1fx, the ideal %.1fx; scenarios where adaptive's worst overshoot is larger than fixed's: %v (target: none)\n",
		float64(fixedAll)/float64(max(adaptiveAll, 1)), float64(fixedAll)/float64(max(peakAll, 1)), float64(fixedAll)/float64(max(idealAll, 1)), worse)
	if !strings.Contains(s.variants, "fixed") {
		fmt.Println("* fixed polling's figures from the model (-variants without fixed)")
	}
	return nil
}

type simResult struct {
	calls, rotations int64
	worst, mean      float64
}

// trajectory is one key's spend process: a base rate, and bursts at a
// multiple of it. Its bursts are drawn from its own generator, one draw per
// tick in service, so a key spends the same whoever polls it and whenever
// its predecessor was rotated: fixed polling, the adaptive planner and the
// models below see the same trajectories.
type trajectory struct {
	base, burst float64 // USD per second
	burstLeft   int     // ticks of the current burst
	idleTicks   int     // ticks before it starts spending at all
	live        bool    // a key in service (a backup spends nothing until it is brought in)
	lag         time.Duration
	truth       float64   // spend so far
	past        []float64 // truth at the last few ticks, newest last
	rng         *rand.Rand
}

// peak is the fastest the key ever spends.
func (t *trajectory) peak() float64 { return max(t.base, t.burst) }

// step advances the key by one tick.
func (t *trajectory) step(tick time.Duration) {
	r := 0.0
	switch {
	case !t.live:
	case t.idleTicks > 0:
		t.idleTicks--
	default:
		if t.burstLeft == 0 && t.rng.Float64() < 0.01 { // a burst every ~17 min on average
			t.burstLeft = 1 + t.rng.IntN(30) // up to 5 minutes
		}
		r = t.base
		if t.burstLeft > 0 {
			r, t.burstLeft = t.burst, t.burstLeft-1
		}
	}
	t.truth += r * tick.Seconds()
	t.past = append(t.past, t.truth)
	if len(t.past) > 4 {
		t.past = t.past[1:]
	}
}

// reported is what a lagging upstream answers: the spend of lag ago,
// interpolated between ticks of tick length.
func (t *trajectory) reported(tick time.Duration) float64 {
	if t.lag <= 0 {
		return t.truth
	}
	back := t.lag.Seconds() / tick.Seconds() // ticks ago
	i := len(t.past) - 1 - int(back)
	if i < 1 {
		return t.past[0]
	}
	frac := back - math.Floor(back)
	return t.past[i] - frac*(t.past[i]-t.past[i-1])
}

const (
	simTick      = 10 * time.Second
	simTicks     = 360
	simThreshold = 9.95
	simMaxI      = 30 * time.Minute
)

var simStart = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)

// population draws a scenario's keys (the first simKeys, in service) and
// backups (brought in oldest first, as the rotator does), with the documents
// the store starts with.
func population(s settings, sc scenario) (traj []trajectory, keys, backups []any) {
	rng := rand.New(rand.NewPCG(s.seed, 42))
	start := simStart
	// Every key and every backup (which becomes a key) has its own process.
	total := s.simKeys * 2
	traj = make([]trajectory, total)
	logRate := func() float64 { return math.Exp(math.Log(1e-6) + rng.Float64()*(math.Log(2e-3)-math.Log(1e-6))) }
	for i := range total {
		// Base rates from idle to $10 in ~1.4 h, log-uniform.
		base := 0.0
		if rng.Float64() > 0.1 {
			base = logRate()
		}
		t := trajectory{base: base, burst: base * (sc.burstMin + (sc.burstMax-sc.burstMin)*rng.Float64()), rng: rand.New(rand.NewPCG(s.seed, 1000+uint64(i)))}
		if sc.lagMax > 0 {
			t.lag = sc.lagMin + time.Duration(rng.Float64()*float64(sc.lagMax-sc.lagMin))
		}
		doc := bson.D{{Key: "_id", Value: fmt.Sprintf("sim-%04d", i)}, {Key: "apiKey", Value: secretOf(i)}, {Key: "status", Value: "healthy"}, {Key: "createdAt", Value: start}}
		if i < s.simKeys {
			t.live = true
			t.truth = rng.Float64() * 9
			if sc.idleThenBurst && i%2 == 0 {
				t.truth = 9 + 0.9*rng.Float64()
				t.idleTicks = 30 + rng.IntN(270)                               // 5 to 50 minutes
				t.base = math.Exp(math.Log(2e-4) + rng.Float64()*math.Log(10)) // 0.0002 to 0.002 $/s
				t.burst = t.base * (sc.burstMin + (sc.burstMax-sc.burstMin)*rng.Float64())
			}
			if sc.migrated {
				t.truth = 9.9 * math.Sqrt(rng.Float64()) // more of them near the top
				doc = append(doc, bson.E{Key: "totalSpend", Value: t.truth}, bson.E{Key: "lastSpendCheck", Value: start.Add(-10 * time.Minute)})
			}
			keys = append(keys, doc)
		} else {
			backups = append(backups, append(doc[:2:2], bson.E{Key: "isUsed", Value: false}, bson.E{Key: "createdAt", Value: start.Add(time.Duration(i) * time.Millisecond)}))
		}
		t.past = []float64{t.truth}
		traj[i] = t
	}
	return traj, keys, backups
}

func simulate(ctx context.Context, ch *child, s settings, adaptiveOn bool, sc scenario) (simResult, error) {
	var res simResult
	name := "sim_fixed_" + strings.ReplaceAll(sc.name, "-", "_")
	if adaptiveOn {
		name = "sim_adaptive_" + strings.ReplaceAll(sc.name, "-", "_")
	}
	db := ch.client.Database(name)
	_ = db.Drop(ctx)
	up := fakeupstream.New("openhands")
	defer up.Close()
	start := simStart
	clock := clockwork.NewFakeClockAt(start)
	const tick = simTick
	traj, keys, backups := population(s, sc)
	for i := range traj {
		up.SetSpend(secretOf(i), traj[i].truth)
	}
	if _, err := db.Collection(pool.KeysCollection).InsertMany(ctx, keys); err != nil {
		return res, err
	}
	if _, err := db.Collection(pool.BackupsCollection).InsertMany(ctx, backups); err != nil {
		return res, err
	}
	chk, err := newSimChecker(db, up.URL, adaptiveOn, clock)
	if err != nil {
		return res, err
	}
	if err := ch.indexIDs(name); err != nil {
		return res, err
	}
	hist := db.Collection(pool.HistoryCollection)
	seen := map[string]bool{}
	var sum float64
	for range simTicks {
		clock.Advance(tick)
		for i := range traj {
			traj[i].step(tick)
			up.SetSpend(secretOf(i), traj[i].reported(tick))
		}
		if _, err := chk.Cycle(ctx); err != nil {
			return res, err
		}
		cur, err := hist.Find(ctx, bson.M{"rotatedAt": bson.M{"$gte": clock.Now().Add(-time.Second)}})
		if err != nil {
			return res, err
		}
		var recs []history.Record
		if err := cur.All(ctx, &recs); err != nil {
			return res, err
		}
		for _, r := range recs {
			if seen[r.KeyID] {
				continue
			}
			seen[r.KeyID] = true
			var i int
			if _, err := fmt.Sscanf(r.KeyID, "sim-%d", &i); err != nil {
				return res, err
			}
			over := traj[i].truth - r.Threshold
			if over < 0 {
				return res, fmt.Errorf("key %s rotated under its threshold (%.4f)", r.KeyID, traj[i].truth)
			}
			traj[i].live = false
			var j int
			if _, err := fmt.Sscanf(r.NewKeyID, "sim-%d", &j); err != nil {
				return res, fmt.Errorf("new key %q: %w", r.NewKeyID, err)
			}
			traj[j].live = true
			if over > res.worst && os.Getenv("BENCH_DEBUG") != "" {
				fmt.Fprintf(os.Stderr, "worst so far %s: over %.4f at %v, base %.6f burst %.6f idle-left %d\n", r.KeyID, over, clock.Since(start), traj[i].base, traj[i].burst, traj[i].idleTicks)
			}
			res.worst = max(res.worst, over)
			sum += over
		}
	}
	res.calls = up.TotalCalls()
	n, err := hist.CountDocuments(ctx, bson.M{})
	if err != nil {
		return res, err
	}
	if n != int64(len(seen)) {
		return res, fmt.Errorf("%d rotations, %d measured", n, len(seen))
	}
	res.rotations = n
	if n > 0 {
		res.mean = sum / float64(n)
	}
	return res, db.Drop(ctx)
}

// A policy plans a model scheduler's next check of key k, which it has just
// seen report spend seen: the wait, before clamping to [tick, max interval]
// and flooring to the tick grid.
type policy func(k *trajectory, seen float64) time.Duration

// model runs a scenario's population (the same trajectories the checker
// sees) under a scheduler that polls key k only when plan says, on the same
// 10 s grid: a key is first checked at the first cycle it is in service,
// rotated at the first check whose reported spend reaches the threshold,
// and replaced by the oldest backup, first checked at the next cycle (as the
// checker does). It counts upstream calls, rotations and overshoot as
// simulate does, without the store: fixed polling is the policy "one tick"
// (and the model's figures can be compared with the real checker's).
func model(s settings, sc scenario, plan policy) simResult {
	var res simResult
	traj, _, _ := population(s, sc)
	next := make([]int, len(traj)) // tick of the next check; 0: at the next cycle
	backup := s.simKeys
	var sum float64
	for n := 1; n <= simTicks; n++ {
		for i := range traj {
			traj[i].step(simTick)
		}
		var in []int // brought in this cycle, first checked at the next
		for i := range traj {
			t := &traj[i]
			if !t.live || next[i] > n {
				continue
			}
			res.calls++
			seen := t.reported(simTick)
			if atLeast(seen, simThreshold) && backup < len(traj) {
				over := t.truth - simThreshold
				res.worst = max(res.worst, over)
				sum += over
				res.rotations++
				t.live = false
				in = append(in, backup)
				backup++
				continue
			}
			wait := min(max(plan(t, seen), simTick), simMaxI)
			next[i] = n + int(wait/simTick)
		}
		for _, j := range in {
			traj[j].live = true
			next[j] = n + 1
		}
	}
	if res.rotations > 0 {
		res.mean = sum / float64(res.rotations)
	}
	return res
}

func atLeast(a, b float64) bool { return a >= b || b-a <= 1e-9*max(1, math.Abs(b)) }

// fixedPolicy checks every key every cycle.
func fixedPolicy(*trajectory, float64) time.Duration { return simTick }

// boundPolicy is the latest check that still rotates a key spending at up to
// rate(k) with an overshoot of at most w, knowing the key's upstream lag:
// from reported spend s (the true spend of lag ago), the true spend can reach
// threshold + w no sooner than (threshold − s + w)/rate − lag from now. Any
// scheduler that checks a key later than that, and does not know when the
// key will spend, is beaten by a trajectory that spends at rate(k) from now
// on; since that deadline only moves later as time passes (the key spends at
// most rate(k)), checking at each deadline is the fewest checks that keep
// the promise.
func boundPolicy(w float64, rate func(*trajectory) float64) policy {
	return func(k *trajectory, seen float64) time.Duration {
		r := rate(k)
		if r <= 0 {
			return simMaxI
		}
		secs := (simThreshold-seen+w)/r - k.lag.Seconds()
		if secs >= simMaxI.Seconds() {
			return simMaxI
		}
		return time.Duration(secs * float64(time.Second))
	}
}

// poolPeak is the fastest any key of the scenario ever spends.
func poolPeak(s settings, sc scenario) float64 {
	traj, _, _ := population(s, sc)
	var p float64
	for i := range traj {
		p = max(p, traj[i].peak())
	}
	return p
}
