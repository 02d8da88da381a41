package checker_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/checker"
	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/spend"
)

// A crossing teaches the pool its rate (learn) from a reading the plan path
// never sees: one above the threshold, so unbounded. A hostile or broken
// upstream answering one absurd figure for one key must not teach the pool
// a rate that pins every other key at the minimum interval for the rest of
// the process ("Rates are learned only from sane measurements"). Below the
// threshold a reading teaches at most threshold/interval, so before the
// crossing learned, no single answer could do this.
func TestAdvCheck_AbsurdCrossingPinsPoolAtMinimum(t *testing.T) {
	tests := []struct {
		name  string
		spend float64 // hot's answer, its threshold 9.95
	}{
		{"1e300", 1e300},
		{"a million dollars", 1e6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			clock := clockwork.NewFakeClockAt(t0)
			s := hotAndSteady(t, clock, map[string]float64{"hot": 9.0, "steady": 1.0})
			s.up.SetSpend(secret("hot"), tt.spend)
			if _, err := s.chk.Cycle(ctx); err != nil {
				t.Fatal(err)
			}
			if n := s.up.Calls(secret("steady")); n != 0 {
				t.Fatalf("steady polled %d times in the first cycle; the test needs it planned later", n)
			}
			// steady: headroom 8.81 at 0.002 $/s, 8× burst cover: ~550 s.
			// A pool that had seen a key burst at the largest factor (32×)
			// over the default prior (0.00276 $/s) still plans it ~105 s
			// ahead.
			if got := steadyPlan(t, s, clock, 70); got < time.Minute {
				t.Errorf("steady (headroom $8.8 at $0.002/s) planned %v ahead after one key answered $%g: one answer pinned the pool at the minimum interval", got, tt.spend)
			}
		})
	}
}

// advBlocking holds every poll until released (not on ctx: a slow upstream
// that answers after the lease is lost), counting starts and returns.
type advBlocking struct {
	spend.Provider
	mu               sync.Mutex
	started, retired int
	polled           map[string]bool
	starts           chan struct{}
	release          chan struct{}
}

func (p *advBlocking) Spend(ctx context.Context, k spend.Key) (spend.Result, error) {
	p.mu.Lock()
	p.started++
	p.polled[k.ID] = true
	p.mu.Unlock()
	p.starts <- struct{}{}
	<-p.release
	defer func() {
		p.mu.Lock()
		p.retired++
		p.mu.Unlock()
	}()
	return spend.Result{Spend: 1}, nil
}

// The lease lost mid-cycle (ctx cancelled) with Concurrency polls in
// flight: no poll starts after the cancel, Cycle returns only once every
// poll started has returned and every goroutine it started has stopped,
// and the keys whose poll was dropped are not marked checked (due again
// next cycle).
func TestAdvCheck_CancelMidCycleWithWorkers(t *testing.T) {
	for _, conc := range []int{1, 3} {
		t.Run(fmt.Sprintf("concurrency %d", conc), func(t *testing.T) {
			keys := map[string]float64{}
			for i := range 12 {
				keys[fmt.Sprintf("k%02d", i)] = 1
			}
			prov := &advBlocking{polled: map[string]bool{}, starts: make(chan struct{}), release: make(chan struct{})}
			s := newSetup(t, keys, 0, func(c *checker.Config) {
				c.Concurrency, c.BatchSize = conc, 4
				c.Pools[0].Provider = prov
			})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { _, err := s.chk.Cycle(ctx); done <- err }()
			for range conc {
				<-prov.starts
			}
			cancel()
			// Release the polls in flight; any poll started after the
			// cancel would block on starts and be counted.
			close(prov.release)
			var err error
		wait:
			for {
				select {
				case <-prov.starts:
				case err = <-done:
					break wait
				}
			}
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Cycle after a cancel: %v, want context.Canceled", err)
			}
			prov.mu.Lock()
			started, retired, polled := prov.started, prov.retired, len(prov.polled)
			prov.mu.Unlock()
			if started != conc {
				t.Errorf("%d polls started, want the %d in flight at the cancel and none after", started, conc)
			}
			if retired != started {
				t.Errorf("Cycle returned with %d of %d polls still running", started-retired, started)
			}
			if n := countDocs(t, s.db.Collection(openhands.KeysCollection), bson.M{"lastSpendCheck": bson.M{"$exists": true}, "_id": bson.M{"$regex": "^k"}}); n > int64(polled) {
				t.Errorf("%d keys marked checked, %d polled", n, polled)
			}
			// Goroutines the cycle started have stopped: none runs in the
			// checker's code (the driver's pool and the test server's keep
			// theirs). context.AfterFunc may still be finishing its call.
			deadline := time.Now().Add(10 * time.Second)
			for checkerGoroutines() != "" && time.Now().Before(deadline) {
				runtime.Gosched()
			}
			if g := checkerGoroutines(); g != "" {
				t.Errorf("goroutines of the cycle still running after Cycle returned:\n%s", g)
			}
		})
	}
}

// checkerGoroutines is the stacks of the goroutines other than this one
// running in package checker's non-test code.
func checkerGoroutines() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for i, g := range strings.Split(string(buf), "\n\n") {
		if i > 0 && strings.Contains(g, "spendchecker/checker.") && !strings.Contains(g, "checker_test.") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

// The store dies mid-stream (a getMore cut): the cycle reports the cursor's
// error ("stream keys"), not success, and polls only the keys it received.
// DryRun keeps the cycle's commands in a fixed order (no write-back, no
// recovery), so the n-th command is the one the test means.
func TestAdvCheck_StreamErrorMidCycleIsReported(t *testing.T) {
	for _, when := range []mongotest.Fault{mongotest.Before, mongotest.After} {
		t.Run(when.String(), func(t *testing.T) {
			ctx := context.Background()
			keys := map[string]float64{}
			for i := range 9 {
				keys[fmt.Sprintf("k%02d", i)] = 1
			}
			s, proxy := proxiedSetup(t, keys, 0, func(c *checker.Config) {
				c.Instance, c.DryRun, c.BatchSize, c.Concurrency = "stream", true, 2, 2
			})
			chk := s.chk
			proxy.ResetCommands()
			if _, err := chk.Cycle(ctx); err != nil {
				t.Fatalf("clean cycle: %v", err)
			}
			cmds := proxy.Commands()
			getMore := slices.IndexFunc(cmds, func(c string) bool { return strings.HasPrefix(c, "getMore") })
			if getMore < 0 {
				t.Fatalf("no getMore in a clean cycle: %v", cmds)
			}
			proxy.FailCommand(getMore+1, when)
			_, err := chk.Cycle(ctx)
			if got := proxy.Commands(); len(got) <= getMore || !strings.HasPrefix(got[getMore], "getMore") {
				t.Fatalf("the cut command is not the getMore: %v", got)
			}
			if err == nil || !strings.Contains(err.Error(), "stream keys") {
				t.Fatalf("Cycle with its cursor cut mid-stream: %v, want a stream keys error", err)
			}
		})
	}
}

// An existing deployment upgraded: its keys collection has every index but
// the new spendPlanBurst_1, and several replicas start at once. Each one's
// EnsureIndexes succeeds and the index is there once.
func TestAdvCheck_NewIndexBySeveralReplicasAtOnce(t *testing.T) {
	ctx := context.Background()
	s := newSetup(t, map[string]float64{"a": 1, "b": 2}, 0, nil)
	keys := s.db.Collection(openhands.KeysCollection)
	if err := keys.Indexes().DropOne(ctx, "spendPlanBurst_1"); err != nil {
		t.Fatal(err)
	}
	const replicas = 4
	errs := make(chan error, replicas)
	start := make(chan struct{})
	for i := range replicas {
		chk, err := checker.New(s.db, checker.Config{
			Pools:    []checker.Pool{{Pool: openhands, Provider: advNoSpend{}, Threshold: 9.95}},
			Instance: fmt.Sprintf("replica-%d", i), Adaptive: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		go func() { <-start; errs <- chk.EnsureIndexes(ctx) }()
	}
	close(start)
	for range replicas {
		if err := <-errs; err != nil {
			t.Errorf("EnsureIndexes beside other replicas: %v", err)
		}
	}
	specs, err := keys.Indexes().ListSpecifications(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, sp := range specs {
		if sp.Name == "spendPlanBurst_1" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d spendPlanBurst_1 indexes, want 1: %v", n, specs)
	}
}

type advNoSpend struct{ spend.Provider }

// A pool with no key, and one whose keys are all planned later: the cycle
// ends cleanly, polls nothing, and writes nothing, at any concurrency.
func TestAdvCheck_EmptyAndZeroDueCycles(t *testing.T) {
	tests := []struct {
		name string
		keys map[string]float64
		conc int
	}{
		{"no key", map[string]float64{}, 1},
		{"no key, many workers", map[string]float64{}, 64},
		{"none due", map[string]float64{"a": 1, "b": 2}, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := clockwork.NewFakeClockAt(t0)
			s := adaptiveSetup(t, tt.keys, clock, func(c *checker.Config) { c.Concurrency = tt.conc })
			for id := range tt.keys {
				setFields(t, s, id, bson.M{"lastSpendCheck": t0.Add(-time.Minute), "nextSpendCheck": t0.Add(10 * time.Minute), "spendRate": 0.0, "spendEpoch": int64(3)})
			}
			sum, err := s.chk.Cycle(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if got := sum.Total(); got.Due != 0 || got.Checked != 0 || got.Failed != 0 || len(got.Errors) != 0 {
				t.Errorf("summary %+v, want nothing due, checked or failed", got)
			}
			for id := range tt.keys {
				if n := s.up.Calls(secret(id)); n != 0 {
					t.Errorf("%s polled %d times, planned 10 minutes ahead", id, n)
				}
			}
		})
	}
}

// A pool whose fastest key speeds up by 1% a cycle (a growing workload)
// raises the pool's prior every cycle. Each rise pulls forward every plan
// made under the previous prior, by about 1%: every cycle reads and
// rewrites every key planned ahead, the O(keys) work per cycle the planner
// exists to avoid ("a cycle in which the prior did not rise reads nothing
// more" holds, but the prior rises every cycle).
func TestAdvCheck_CreepingPriorRewritesEveryPlanEachCycle(t *testing.T) {
	ctx := context.Background()
	clock := clockwork.NewFakeClockAt(t0)
	keys := map[string]float64{"creeper": 1}
	const parked = 30
	for i := range parked {
		keys[fmt.Sprintf("p%02d", i)] = 1
	}
	s := adaptiveSetup(t, keys, clock, nil)
	for i := range parked {
		setFields(t, s, fmt.Sprintf("p%02d", i), bson.M{"spendRate": 0.001, "spendRateSustained": 0.001, "spendEpoch": int64(3),
			"lastSpendCheck": t0.Add(-time.Minute), "nextSpendCheck": t0.Add(20 * time.Minute),
			"spendPlanPrior": 9.95 / 3600, "spendPlanBurst": 8.0, "spendPlanHeadroom": 8.95, "spendPlanOwnRate": 0.008, "spendPlanRate": 0.001})
	}
	setFields(t, s, "creeper", bson.M{"totalSpend": 1.0, "spendRate": 0.01, "spendRateSustained": 0.01, "spendEpoch": int64(3), "lastSpendCheck": t0.Add(-10 * time.Second)})
	rate := 0.01
	rewritten := 0
	priors := map[string]float64{}
	for cycle := range 6 {
		rate *= 1.01
		s.up.AddSpend(secret("creeper"), rate*10)
		setFields(t, s, "creeper", bson.M{"nextSpendCheck": clock.Now()})
		if _, err := s.chk.Cycle(ctx); err != nil {
			t.Fatal(err)
		}
		var d bson.M
		if err := s.db.Collection(openhands.KeysCollection).FindOne(ctx, bson.M{"_id": "creeper"}).Decode(&d); err != nil {
			t.Fatal(err)
		}
		// A rewrite stores the prior it was made under: count the parked
		// plans whose stored prior changed in this cycle.
		n := 0
		cur, err := s.db.Collection(openhands.KeysCollection).Find(ctx, bson.M{"_id": bson.M{"$regex": "^p"}})
		if err != nil {
			t.Fatal(err)
		}
		var docs []bson.M
		if err := cur.All(ctx, &docs); err != nil {
			t.Fatal(err)
		}
		for _, d := range docs {
			id, prior := d["_id"].(string), d["spendPlanPrior"].(float64)
			if old, ok := priors[id]; !ok || old != prior {
				n++
			}
			priors[id] = prior
		}
		t.Logf("cycle %d: creeper at %.5f $/s, %d of %d parked plans rewritten", cycle, rate, n, parked)
		if cycle > 0 {
			rewritten += int(n)
		}
		clock.Advance(10 * time.Second)
	}
	if rewritten > parked {
		t.Errorf("%d plan rewrites of %d parked keys over 5 cycles in which the prior rose by 1%% each", rewritten, parked)
	}
}
