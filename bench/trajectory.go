package main

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/checker"
	"github.com/spendchecker/spendchecker/internal/fixture"
	"github.com/spendchecker/spendchecker/rotation"
)

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
	// For BENCH_DEBUG: ticks stepped in service, and the tick the current
	// (or last) burst began.
	steps, burstFrom int
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
			t.burstFrom = t.steps
		}
		r = t.base
		if t.burstLeft > 0 {
			r, t.burstLeft = t.burst, t.burstLeft-1
		}
	}
	t.steps++
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
	simTicks     = 360 // an hour
	simThreshold = 9.95
	simMaxI      = 30 * time.Minute
)

// ticks is the simulated run's length in cycles: an hour unless a test
// shortens it.
func (s settings) ticks() int {
	if s.simTicks > 0 {
		return s.simTicks
	}
	return simTicks
}

var simStart = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)

// population draws a scenario's keys (the first simKeys, in service) and
// backups (brought in oldest first, as the rotator does), with the pool the
// store starts with.
func population(s settings, sc scenario) (traj []trajectory, seed fixture.Pool) {
	rng := rand.New(rand.NewPCG(s.seed, 42))
	start := simStart
	seed.CreatedAt = start // backups one second apart, oldest first
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
		if sc.nightTicks > 0 {
			t.base = simThreshold / 3600 * (sc.wakeMin + (sc.wakeMax-sc.wakeMin)*rng.Float64())
			t.burst = t.base
		}
		if sc.lagMax > 0 {
			t.lag = sc.lagMin + time.Duration(rng.Float64()*float64(sc.lagMax-sc.lagMin))
		}
		id := fmt.Sprintf("sim-%04d", i)
		if i < s.simKeys {
			t.live = true
			t.truth = rng.Float64() * 9
			if sc.idleThenBurst && i%2 == 0 {
				t.truth = 9 + 0.9*rng.Float64()
				t.idleTicks = 30 + rng.IntN(270)                               // 5 to 50 minutes
				t.base = math.Exp(math.Log(2e-4) + rng.Float64()*math.Log(10)) // 0.0002 to 0.002 $/s
				t.burst = t.base * (sc.burstMin + (sc.burstMax-sc.burstMin)*rng.Float64())
			}
			if sc.nightTicks > 0 {
				t.idleTicks = sc.nightTicks
			}
			k := fixture.Key{ID: id, Secret: secretOf(i)}
			if sc.migrated {
				t.truth = 9.9 * math.Sqrt(rng.Float64()) // more of them near the top
				k.Fields = bson.M{rotation.FieldTotalSpend: t.truth, checker.FieldLastCheck: start.Add(-10 * time.Minute)}
			}
			seed.Keys = append(seed.Keys, k)
		} else {
			seed.Backups = append(seed.Backups, fixture.Backup{ID: id, Secret: secretOf(i)})
		}
		t.past = []float64{t.truth}
		traj[i] = t
	}
	return traj, seed
}
