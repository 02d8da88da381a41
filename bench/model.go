package main

import (
	"math"
	"time"
)

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
	traj, _ := population(s, sc)
	next := make([]int, len(traj)) // tick of the next check; 0: at the next cycle
	res.checks = make([]int, len(traj))
	backup := s.simKeys
	var sum float64
	for n := 1; n <= s.ticks(); n++ {
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
			res.checks[i]++
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

// poolPeak is the fastest any of the first n keys can spend: the keys in
// service at the start and the backups brought in, in order, by the hour's
// rotations. A backup that never goes live spends nothing the schedulers
// must cover.
func poolPeak(s settings, sc scenario, n int) float64 {
	traj, _ := population(s, sc)
	var p float64
	for i := range traj[:min(n, len(traj))] {
		p = max(p, traj[i].peak())
	}
	return p
}
