package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/jonboulle/clockwork"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/spendchecker/spendchecker/internal/fakeupstream"
	"github.com/spendchecker/spendchecker/internal/fixture"
	"github.com/spendchecker/spendchecker/rotation/history"
)

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
	// nightTicks > 0: every key in service is idle for this many ticks (a
	// night), then every key spends at wakeMin to wakeMax times the default
	// prior (the threshold per hour), the backups too.
	nightTicks       int
	wakeMin, wakeMax float64
}

var scenarios = []scenario{
	{name: "mixed", what: "bursts 2-4x", burstMin: 2, burstMax: 4},
	{name: "burst10", what: "bursts 10x", burstMin: 10, burstMax: 10},
	{name: "burst20", what: "bursts 20x", burstMin: 20, burstMax: 20},
	{name: "idle-burst", what: "idle near threshold, then spending", burstMin: 2, burstMax: 4, idleThenBurst: true},
	{name: "migrated", what: "migrated without a rate", burstMin: 2, burstMax: 4, migrated: true},
	{name: "lag", what: "upstream lags 10-15 s", burstMin: 2, burstMax: 4, lagMin: 10 * time.Second, lagMax: 15 * time.Second},
	{name: "idle-night", what: "idle 50 min, then the pool wakes at 3-6x the default prior", burstMin: 1, burstMax: 1,
		nightTicks: 300, wakeMin: 3, wakeMax: 6},
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
	if s.burstFactor > 0 || s.ratePrior > 0 {
		fmt.Printf("configured: burst factor %g (0: learned), rate prior %g $/s (0: the threshold per hour)\n", s.burstFactor, s.ratePrior)
	}
	fmt.Printf("%-11s %12s %12s %7s %11s %22s %10s %10s %9s %9s  %s\n", "scenario", "fixed calls", "adapt calls", "fewer", "rotations", "worst overshoot f / a",
		"pool-peak", "ideal", "a / pp", "a / ideal", "targets: worst a <= f, a / pp <= 1.05")
	var fixedAll, adaptiveAll, peakAll, idealAll int64
	worse := []string{}
	for _, sc := range scenarios {
		if s.scenarios != "" && !strings.Contains(","+s.scenarios+",", ","+sc.name+",") {
			continue
		}
		// Fixed polling on the model: no store, so it runs in milliseconds.
		// It is deterministic (every key every cycle), so its figures are
		// the checker's (TestModelFixedPollingIsTheCheckers); they stand in
		// for them (marked *) unless -variants names fixed, which runs the
		// real checker too: 72,000 polls and write-backs a scenario.
		fm := model(s, sc, fixedPolicy)
		f, mark := fm, "*"
		if strings.Contains(s.variants, "fixed") {
			if f, err = simulateIn(ctx, ch, s, false, sc); err != nil {
				return fmt.Errorf("%s fixed: %w", sc.name, err)
			}
			mark = ""
			if f.calls != fm.calls || f.rotations != fm.rotations || f.worst != fm.worst {
				fmt.Printf("%s: the model's fixed polling differs from the checker's: %d calls, %d rotations, worst $%.4f against %d, %d, $%.4f\n",
					sc.name, fm.calls, fm.rotations, fm.worst, f.calls, f.rotations, f.worst)
			}
		}
		var a simResult
		if strings.Contains(s.variants, "adaptive") {
			if a, err = simulateIn(ctx, ch, s, true, sc); err != nil {
				return fmt.Errorf("%s adaptive: %w", sc.name, err)
			}
		}
		// The two bounds (BENCHMARKS.md): the fewest calls of a scheduler
		// on the 10 s grid that never checks a key after the moment it could
		// have reached threshold + w (w: fixed polling's worst overshoot
		// here) spending from its last reading at the fastest any key in
		// service this hour can spend (pool-peak), or at its own fastest
		// (ideal). The keys in service: those at the start and the backups
		// fixed polling's rotations bring in.
		w := f.worst
		peak := poolPeak(s, sc, s.simKeys+int(fm.rotations))
		pp := model(s, sc, boundPolicy(w, func(*trajectory) float64 { return peak }))
		id := model(s, sc, boundPolicy(w, (*trajectory).peak))
		fixedAll += f.calls
		adaptiveAll += a.calls
		peakAll += pp.calls
		idealAll += id.calls
		met := []string{}
		if a.worst > f.worst+1e-9 {
			met = append(met, "worst overshoot NOT met")
		}
		if float64(a.calls) > 1.05*float64(pp.calls) {
			met = append(met, "calls NOT met")
		}
		if len(met) == 0 {
			met = append(met, "met")
		}
		fmt.Printf("%-11s %11d%1s %12d %6.1fx %4d/%-4d%1s %10.4f$ / %.4f$ %10d %10d %8.3fx %8.2fx  %s\n", sc.name, f.calls, mark, a.calls,
			float64(f.calls)/float64(max(a.calls, 1)), f.rotations, a.rotations, mark, f.worst, a.worst,
			pp.calls, id.calls, float64(a.calls)/float64(max(pp.calls, 1)), float64(a.calls)/float64(max(id.calls, 1)), strings.Join(met, ", "))
		if os.Getenv("BENCH_DEBUG") != "" {
			fmt.Fprintf(os.Stderr, "%s: model fixed %d calls %d rotations worst %.4f; pool peak %.6f $/s: %d rotations worst %.4f; ideal %d rotations worst %.4f\n",
				sc.name, fm.calls, fm.rotations, fm.worst, peak, pp.rotations, pp.worst, id.rotations, id.worst)
		}
		if a.worst > f.worst+1e-9 {
			worse = append(worse, sc.name)
		}
	}
	fmt.Printf("overall: adaptive makes %.1fx fewer calls than fixed polling, the pool-peak bound %.1fx, the ideal %.1fx; adaptive's calls are %.3fx the pool-peak bound's (target <= 1.05x), %.2fx the ideal's; scenarios where adaptive's worst overshoot is larger than fixed's: %v (target: none)\n",
		float64(fixedAll)/float64(max(adaptiveAll, 1)), float64(fixedAll)/float64(max(peakAll, 1)), float64(fixedAll)/float64(max(idealAll, 1)),
		float64(adaptiveAll)/float64(max(peakAll, 1)), float64(adaptiveAll)/float64(max(idealAll, 1)), worse)
	if !strings.Contains(s.variants, "fixed") {
		fmt.Println("* fixed polling's figures from the model (-variants fixed,adaptive runs the real checker for them too)")
	}
	return nil
}

type simResult struct {
	calls, rotations int64
	worst, mean      float64
	checks           []int // upstream calls by key (the checker's runs only)
}

// simulateIn runs simulate in a database of the child's store.
func simulateIn(ctx context.Context, ch *child, s settings, adaptiveOn bool, sc scenario) (simResult, error) {
	name := "sim_fixed_" + strings.ReplaceAll(sc.name, "-", "_")
	if adaptiveOn {
		name = "sim_adaptive_" + strings.ReplaceAll(sc.name, "-", "_")
	}
	db := ch.client.Database(name)
	_ = db.Drop(ctx)
	res, err := simulate(ctx, db, func() error { return ch.indexIDs(name) }, s, adaptiveOn, sc)
	if err != nil {
		return res, err
	}
	return res, db.Drop(ctx)
}

// simulate runs a scenario's hour in db, an empty database; indexIDs gives
// its collections the _id index FerretDB's updates use, once they exist.
func simulate(ctx context.Context, db *mongo.Database, indexIDs func() error, s settings, adaptiveOn bool, sc scenario) (simResult, error) {
	var res simResult
	up := fakeupstream.New("openhands")
	defer up.Close()
	start := simStart
	clock := clockwork.NewFakeClockAt(start)
	const tick = simTick
	traj, seed := population(s, sc)
	for i := range traj {
		up.SetSpend(secretOf(i), traj[i].truth)
	}
	if err := fixture.Write(ctx, db, pool, seed); err != nil {
		return res, err
	}
	chk, err := newSimChecker(db, up.URL, adaptiveOn, clock, s)
	if err != nil {
		return res, err
	}
	if err := indexIDs(); err != nil {
		return res, err
	}
	hist := db.Collection(pool.HistoryCollection)
	seen := map[string]bool{}
	var sum float64
	debug := os.Getenv("BENCH_DEBUG") != ""
	checked := make([][]int, len(traj)) // BENCH_DEBUG: ticks each key was checked at
	checkedAt := make([][]float64, len(traj))
	for n := range s.ticks() {
		clock.Advance(tick)
		for i := range traj {
			traj[i].step(tick)
			up.SetSpend(secretOf(i), traj[i].reported(tick))
		}
		if _, err := chk.Cycle(ctx); err != nil {
			return res, err
		}
		if debug {
			for i := range traj {
				if c := up.Calls(secretOf(i)); c > len(checked[i]) {
					checked[i] = append(checked[i], n+1)
					checkedAt[i] = append(checkedAt[i], traj[i].reported(tick))
				}
			}
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
			if debug && over > 0.1 {
				c := checked[i]
				from := max(0, len(c)-4)
				fmt.Fprintf(os.Stderr, "%s %s: over %.4f at tick %d, base %.6f burst %.6f (burst from step %d) lag %v idle-left %d; last checks at ticks %v reading %.4f\n",
					sc.name, r.KeyID, over, n+1, traj[i].base, traj[i].burst, traj[i].burstFrom, traj[i].lag, traj[i].idleTicks, c[from:], checkedAt[i][from:])
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
	res.checks = make([]int, len(traj))
	for i := range traj {
		res.checks[i] = up.Calls(secretOf(i))
	}
	return res, nil
}
