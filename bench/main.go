// Command bench measures the spend checker and prints figures with their
// bounds: cycle throughput against the ideal N·latency/concurrency, database
// round trips per cycle, peak heap by key count, and adaptive against fixed
// polling over a simulated hour.
//
//	go run ./bench                      # everything (minutes)
//	go run ./bench -run throughput      # or memory, adaptive, batch, page
//
// The embedded store (and, for the memory figures, the upstream) run in a
// child process, so the heap measured is the checker's own.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/jonboulle/clockwork"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/spendchecker/spendchecker/checker"
	"github.com/spendchecker/spendchecker/internal/fixture"
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
	pollingOnly bool
	concurrency int
	memKeys     string
	simKeys     int
	simTicks    int // 0: an hour (simTicks)
	seed        uint64
	variants    string
	scenarios   string
	burstFactor float64 // adaptive: checker.Pool.BurstFactor (0: learned)
	ratePrior   float64 // adaptive: checker.Pool.RatePrior, USD/s (0: learned)
	batchKeys   int
	pageKeys    int
	pageCycle   int
	pageLive    bool
	pageOnly    string
	pageCommand string
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
	fs.BoolVar(&s.pollingOnly, "polling-only", false, "throughput: only the polling path (dry run, batches of 500)")
	fs.StringVar(&s.memKeys, "mem-keys", "1000,10000,100000", "key counts for the memory figures")
	fs.IntVar(&s.simKeys, "sim-keys", 200, "keys in the simulated hour")
	fs.Uint64Var(&s.seed, "seed", 1, "random seed of the simulated trajectories")
	fs.StringVar(&s.variants, "variants", "adaptive", "adaptive: which schedulers run on the real checker; fixed polling's figures come from the model unless this names fixed (about 4 minutes a scenario on the store)")
	fs.StringVar(&s.scenarios, "scenarios", "", "adaptive: which scenarios (comma-separated; default all)")
	fs.Float64Var(&s.burstFactor, "burst-factor", 0, "adaptive: the pool's burst factor, fixed (0: learned from 8 up, as by default)")
	fs.Float64Var(&s.ratePrior, "rate-prior", 0, "adaptive: the pool's rate prior in USD/s (0: the threshold per hour, as by default)")
	fs.IntVar(&s.batchKeys, "batch-keys", 1000, "batch: keys in the pool read per key and by report")
	fs.IntVar(&s.pageKeys, "page-keys", 100000, "page: keys in the pool the status surfaces read")
	fs.IntVar(&s.pageCycle, "page-cycle-keys", 5000, "page: keys in the cycle timed with and without 10 clients on the page")
	fs.BoolVar(&s.pageLive, "page-live", true, "page: also time a GET that reads every key (minutes on the embedded store)")
	fs.StringVar(&s.pageOnly, "page-only", "", "page: \"commands\" runs only the binary's commands, \"page\" only the page")
	fs.StringVar(&s.pageCommand, "page-command", "", "page: only this command (status, verify, history)")
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
		case "page":
			err = pageBench(ctx, s)
		default:
			err = fmt.Errorf("unknown figure %q (throughput, memory, adaptive, batch)", w)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", w, err)
		}
	}
	return nil
}

var pool, _ = rotation.Preset("openhands")

func secretOf(i int) string { return fmt.Sprintf("sk-bench-%07d-0123456789abcdef", i) }

// seedKeys writes n healthy keys in batches, as the proxy would have.
func seedKeys(ctx context.Context, db *mongo.Database, n int) error {
	now := time.Now().UTC()
	for lo := 0; lo < n; lo += 1000 {
		f := fixture.Pool{CreatedAt: now}
		for i := lo; i < min(n, lo+1000); i++ {
			f.Keys = append(f.Keys, fixture.Key{ID: fmt.Sprintf("key-%07d", i), Secret: secretOf(i),
				Fields: bson.M{rotation.FieldTokensUsed: int64(0)}})
		}
		if err := fixture.Write(ctx, db, pool, f); err != nil {
			return fmt.Errorf("seed: %w", err)
		}
	}
	return nil
}

func newChecker(db *mongo.Database, upstream string, conc, batch int, adaptive, dryRun bool, clock clockwork.Clock) (*checker.Checker, error) {
	return newTimedChecker(db, upstream, conc, batch, adaptive, dryRun, clock, nil)
}

// newTimedChecker is newChecker whose upstream calls calls times, when not nil.
func newTimedChecker(db *mongo.Database, upstream string, conc, batch int, adaptive, dryRun bool, clock clockwork.Clock, calls *callTimes) (*checker.Checker, error) {
	var tr http.RoundTripper = &http.Transport{MaxIdleConns: conc, MaxIdleConnsPerHost: conc}
	if calls != nil {
		calls.next = tr
		tr = calls
	}
	hc := &http.Client{Transport: tr}
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

// newSimChecker is the cadence simulation's checker.
func newSimChecker(db *mongo.Database, upstream string, adaptive bool, clock clockwork.Clock, s settings) (*checker.Checker, error) {
	prov, err := spend.New("openhands", upstream, &spend.Client{})
	if err != nil {
		return nil, err
	}
	chk, err := checker.New(db, checker.Config{
		Pools: []checker.Pool{{Pool: pool, Provider: prov, Threshold: 9.95, RotateUnauthorized: true,
			BurstFactor: s.burstFactor, RatePrior: s.ratePrior}},
		Concurrency: 16, Adaptive: adaptive, BatchSize: 500, Instance: "bench", Clock: clock,
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
