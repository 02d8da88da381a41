package checker

import (
	"context"
	"errors"
	"math"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/spend"
)

// DefaultBurstFactor is the burst factor a pool starts with: measured bursts
// ran at up to 4 times a key's usual rate; the rest is margin.
const DefaultBurstFactor = 8

// MaxBurstFactor caps what a pool can teach the planner, and a configured
// factor: a key whose rate was measured over a nearly idle stretch can show
// any ratio.
const MaxBurstFactor = 32

// cadence is what a pool's observations teach the planner: the fastest
// rate seen for any of its keys (the prior for keys with no rate of their
// own) and how bursty its keys are (the largest ratio of a key's rate over
// one interval to its sustained rate before). It lives in
// memory; the fastest rate is reloaded from the keys at start.
//
// A cycle plans every key on what was learned before it began (begin), not
// on what the keys polled before it in the same cycle taught: those are
// polled concurrently, so a plan would depend on their order, and the same
// run would plan differently twice. What a cycle teaches is applied after
// it, by pulling forward the plans it made under a lower prior (replan).
type cadence struct {
	mu      sync.Mutex
	loaded  bool
	fastest float64
	burst   float64
	// planFastest and planBurst are fastest and burst at the cycle's start:
	// what its plans use.
	planFastest, planBurst float64
	// replanned and replannedBurst are the pool prior and burst factor
	// every stored plan was last pulled forward to (0: not yet in this
	// process).
	replanned, replannedBurst float64
}

// begin fixes what the cycle's plans use.
func (cd *cadence) begin() {
	cd.mu.Lock()
	defer cd.mu.Unlock()
	cd.planFastest, cd.planBurst = cd.fastest, max(DefaultBurstFactor, cd.burst)
}

// observe learns from one key's rate seen over an interval, known its
// sustained rate before (< 0: none to measure a burst against), base the
// pool's configured prior, and returns the fastest rate and burst factor
// the key's plan uses: those of the cycle's start. A jump counts as a
// burst only when it goes past what the planner already assumed for every
// key, the larger of base and the pool's fastest rate: an idle key waking up
// at the pool's usual rate is not bursty, and its ratio over a near-zero
// rate would teach any factor (docs/design.md "Adaptive cadence").
func (cd *cadence) observe(known, seen, base float64) (fastest, burst float64) {
	cd.mu.Lock()
	defer cd.mu.Unlock()
	if seen > 0 {
		if known > 0 && seen > max(base, cd.planFastest) {
			cd.burst = max(cd.burst, min(seen/known, MaxBurstFactor))
		}
		cd.fastest = max(cd.fastest, seen)
	}
	return cd.planFastest, cd.planBurst
}

// loadFastest seeds the pool's fastest rate from the rates stored with its
// keys, once per process.
func (c *Checker) loadFastest(ctx context.Context, p *poolRun) {
	p.cad.mu.Lock()
	loaded := p.cad.loaded
	p.cad.mu.Unlock()
	if loaded {
		return
	}
	var doc bson.Raw
	err := p.keys.FindOne(ctx, bson.M{fieldRate: bson.M{"$gt": 0}},
		options.FindOne().SetSort(bson.D{{Key: fieldRate, Value: -1}}).SetProjection(bson.M{fieldRate: 1})).Decode(&doc)
	if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
		return // try again next cycle
	}
	p.cad.mu.Lock()
	defer p.cad.mu.Unlock()
	p.cad.loaded = true
	if err == nil {
		if r, ok := doc.Lookup(fieldRate).AsFloat64OK(); ok && r > 0 && !math.IsInf(r, 0) {
			p.cad.fastest = max(p.cad.fastest, r)
		}
	}
}

// idlePriorFactor multiplies the pool's fastest observed rate for a key
// never seen spending: that rate is an average over check intervals, below
// the peaks the pool's keys really spend at, and an idle key may wake at
// such a peak (TestAdv13c_IdleKeyWakingAtThePoolsPeakNotItsAverage). The
// configured or default prior is not multiplied: it is no average.
const idlePriorFactor = 2

// sustainWindow is the time constant of a key's sustained rate: a
// time-weighted average of its rates over its intervals, so one quiet
// interval (a pause, a cooldown, a batching upstream) does not drop the
// burst cover, nor one burst raise it for ever (docs/design.md "Adaptive cadence").
const sustainWindow = 10 * time.Minute

// fieldRateSustained keeps a key's sustained rate (USD/s) beside spendRate,
// its fastest (docs/design.md "Adaptive cadence").
const fieldRateSustained = "spendRateSustained"

// FieldReadingOf names, beside a key's reading (totalSpend, lastSpendCheck,
// its rates), the secret it was read for: secret.Fingerprint of the apiKey.
// A secret replaced in place under the key's _id is then not measured
// against the old one's reading, nor shown with it (status). A reading
// stored without it (by a version before it) is taken to be the current
// secret's.
const FieldReadingOf = "spendReadingOf"

// fieldReadingAt is when that reading was made. A write that carries no
// reading of the key's secret (a rejection with rotate-unauthorized off, a
// key held for its user's budget, no_reading) moves lastSpendCheck but
// keeps the last spend: a rate measured from lastSpendCheck would divide
// the spend of the whole stretch since the reading by the few seconds
// since that write. Rates are measured from here; a key stored without it
// (by a version before it) from lastSpendCheck.
const fieldReadingAt = "spendReadingAt"

// plan decides the key's next check (docs/design.md "Adaptive cadence"). at is the
// time of the reading (when the request was made): a slow answer does not
// move the plan later.
func (c *Checker) plan(p *poolRun, k keyInfo, res spend.Result, at time.Time) observation {
	fastestKey := k.rate // the key's fastest rate seen, kept for ever
	avg := k.avg         // its sustained rate
	seen, known, unknown := c.measure(k, res, at)
	if seen >= 0 {
		fastestKey = max(fastestKey, seen)
		if k.hasAvg {
			w := math.Exp(-at.Sub(k.readAt).Seconds() / sustainWindow.Seconds())
			avg = w*avg + (1-w)*seen
		} else {
			avg = seen // stored before the sustained rate was kept
		}
	} else if !k.hasAvg {
		avg = k.rate
	}
	prior := p.basePrior()
	fastest, burst := p.cad.observe(known, seen, prior)
	poolPrior := max(prior, fastest) // what replan compares
	if p.BurstFactor > 0 {
		burst = p.BurstFactor
	}
	if !k.hasRate {
		// Never planned by us (migrated, or first check): its rate over a
		// long, unknown stretch says little — a migrated key planned on it
		// overshot up to 15 times more than fixed polling (BENCHMARKS.md) —
		// and is no base to learn a burst from. Check again at the minimum
		// to measure one; until the key is seen spending it is idle, and
		// its sustained rate starts from its next interval's (stored as
		// none: 0 would read as a lull any rate is a burst over).
		fastestKey, avg = 0, -1
	}
	if fastestKey <= 0 {
		fastest *= idlePriorFactor
	}
	// Any key may start spending as fast as any key of its pool has: a key
	// with no rate of its own (idle, just rotated in, migrated) above all.
	// And a key may spend again at its own fastest, after any pause.
	prior = max(prior, fastest, fastestKey)
	hidden := c.lagSpend(k, res, at) // issue 16, batch reports: what a lagging report may not show yet
	headroom := p.Threshold - res.Spend - hidden
	if p.BudgetRatio > 0 && res.Budget != nil {
		headroom = min(headroom, p.BudgetRatio*(*res.Budget)-budgetSpend(res)-hidden) // issue 16: -hidden
	}
	if res.Remaining != nil {
		// Issue 16, the remaining kind: the headroom is what remains above
		// the minimum (docs/providers.md).
		headroom = *res.Remaining - p.MinRemaining
	}
	planRate := max(avg, seen, 0)
	if unknown {
		planRate = -1
	}
	var pl storedPlan
	if headroom > 0 && planRate >= 0 {
		// What replan needs to plan the key again from this reading under a
		// higher pool prior, without polling it.
		pl = storedPlan{prior: poolPrior, burst: burst, headroom: headroom, own: max(planRate*burst, fastestKey), rate: planRate}
		// Due half a minimum interval after the key could cross at the
		// rate assumed: a cycle polls a key up to half an interval past
		// its plan, so it is at most one interval late, which is what
		// polling every key at the minimum interval allows (docs/design.md
		// "Adaptive cadence").
		headroom = padded(headroom, max(planRate*burst, prior), c.cfg.MinInterval)
	}
	next := NextInterval(headroom, planRate, prior, burst, c.cfg.MinInterval, c.cfg.MaxInterval)
	return observation{id: k.id, spend: res.Spend, rate: max(fastestKey, 0), avg: avg, nextCheck: at.Add(next), at: at, budget: res.Budget,
		remaining: res.Remaining, currency: res.Currency, plan: pl} // issue 16: the balance read
}

// planKept plans a key on its last spend, kept by a check that read no
// figure of it (a rejection with rotate-unauthorized off, a key held for
// its user's budget, no_reading). Nothing was read, so nothing is measured:
// a rate of zero since the reading would decay the sustained rate, which
// the next reading decays again over the same stretch. A key stored without
// spendReadingAt (by a version before it) gets its reading's time written,
// since this write moves lastSpendCheck.
//
// The headroom is the reading's, so the first such check since the reading
// plans from the reading's time: a key due by its plan, and so maybe near
// its threshold after a burst the plan allowed, is not deferred by a whole
// plan for one transient answer. Later ones plan from now, so a key that
// keeps answering so is not polled at the minimum for ever.
func (c *Checker) planKept(p *poolRun, k keyInfo, at time.Time) observation {
	readAt := k.readAt
	// The last write was the reading (lastSpendCheck is its time).
	first := k.fence.checkDate && !readAt.IsZero() && k.fence.check == readAt.UnixMilli()
	if !readAt.IsZero() {
		k.readAt = at // measure: checked moments ago, no rate
	}
	o := c.plan(p, k, spend.Result{Spend: k.spend}, at)
	o.kept = true
	if first && readAt.Before(at) {
		if due := readAt.Add(o.nextCheck.Sub(at)); due.Before(o.nextCheck) {
			o.nextCheck = at.Add(c.cfg.MinInterval)
			if due.After(o.nextCheck) {
				o.nextCheck = due
			}
		}
	}
	if !k.readAtStored {
		o.readingAt = readAt
	}
	return o
}

// measure is the key's rate over the interval since its last check (seen;
// < 0: none), the sustained rate a burst is measured against (known; < 0:
// none), and whether the key's rate is still unknown.
func (c *Checker) measure(k keyInfo, res spend.Result, at time.Time) (seen, known float64, unknown bool) {
	seen, known, unknown = -1, -1, !k.hasRate
	// Issue 16, the remaining kind (docs/providers.md): a balance falls as
	// its keys spend, so the fall is the spend; no earlier balance reading,
	// no rate yet.
	now, before := res.Spend, k.spend
	if res.Remaining != nil {
		now, before = -*res.Remaining, math.Inf(1)
		if k.remaining != nil {
			before = -*k.remaining
		}
	}
	// End of the remaining kind's inputs.
	switch {
	case !k.readAt.IsZero() && at.Sub(k.readAt) < c.cfg.MinInterval/2:
		// Checked moments ago (by another writer, or a clock ahead of
		// ours): a rate over so short an interval is noise, and the
		// fastest rates never decay, so it is not learned (docs/design.md
		// "Adaptive cadence").
	case !k.readAt.IsZero() && at.After(k.readAt) && now >= before: // issue 16: was res.Spend >= k.spend
		seen = (now - before) / at.Sub(k.readAt).Seconds() // issue 16: was res.Spend - k.spend
	case k.readAt.IsZero() && k.rate <= 0:
		unknown = true // first check: no rate yet
	}
	if k.hasAvg {
		known = k.avg
	}
	return seen, known, unknown
}

// learn teaches the pool the rate of a check that crossed the threshold,
// which plan never sees: the interval that carried a key over is the
// likeliest to show a rate faster than the pool has seen, and the prior it
// raises bounds every key (docs/design.md "Adaptive cadence"). Not its
// ratio to the key's sustained rate: a key that just woke crosses on a
// sustained rate still built from its idle stretch, and would teach a burst
// factor no key of the pool shows.
//
// A figure over the threshold is bounded by nothing the planner measured:
// one absurd answer would teach a rate that pins every key of the pool at
// the minimum interval for the rest of the process. So a crossing teaches
// at most MaxBurstFactor times the larger of the configured prior and the
// key's own stored rates, the most a burst is ever taken to be; from those
// and not the pool's learned fastest, so crossings cannot compound.
func (c *Checker) learn(p *poolRun, k keyInfo, res spend.Result, at time.Time) {
	seen, _, _ := c.measure(k, res, at)
	p.cad.observe(-1, min(seen, MaxBurstFactor*max(p.basePrior(), k.rate, k.avg)), p.basePrior())
}

// basePrior is the pool's configured prior, or the threshold per hour.
func (p *poolRun) basePrior() float64 {
	if p.RatePrior > 0 {
		return p.RatePrior
	}
	return p.Threshold / 3600
}

// padded is the headroom plus half a minimum interval's spend at rate eff.
// A configured prior may be any finite number (--rate-prior 1e308): the sum
// is capped at the largest float, not +Inf, which NextInterval would read
// as no risk at all and park the key for the maximum interval. Capped, the
// wait is at most what the cap allows, so the key is due no later.
func padded(headroom, eff float64, minI time.Duration) float64 {
	return min(headroom+eff*minI.Seconds()/2, math.MaxFloat64)
}

// NextInterval plans the wait before a key's next check: the time the key
// needs to cross its threshold at the faster of burst × rate (the key's
// sustained rate) and prior (the pool's prior, or the key's own fastest rate
// if faster), clamped to [min, max]. So a key is back at the minimum
// interval before a burst of up to burst × its rate can carry it over, and a key with no rate of its own (idle, new, migrated) is never
// parked longer than the prior allows: near its threshold it is checked
// near the minimum. A key whose rate is still unknown (rate < 0) is checked
// again at the minimum, to learn one.
func NextInterval(headroom, rate, prior, burst float64, minI, maxI time.Duration) time.Duration {
	if headroom <= 0 || rate < 0 {
		return minI
	}
	eff := max(rate*burst, prior)
	if eff <= 0 {
		return maxI
	}
	secs := headroom / eff
	if secs >= maxI.Seconds() {
		return maxI
	}
	return max(minI, time.Duration(secs*float64(time.Second)))
}

// lagSpend is the spend a lagging report may not show yet (docs/providers.md, "Batch
// reports"): the lag times the rate the report itself proves the key
// sustains. A rise seen dt after the last check may hold spend made up to
// lag before that check (a lagging report moves in steps: daily buckets,
// whole hours), so it proves at most rise/(dt+lag), never rise/dt. Not the
// stored spendRate: that is the fastest rate over one check interval (a
// peak of seconds that never decays), and a peak × an hour's lag would
// rotate keys at a fraction of their budget. Not the pool's either: a key
// with no rise of its own hides nothing. A figure that does not lag hides
// nothing.
func (c *Checker) lagSpend(k keyInfo, res spend.Result, at time.Time) float64 {
	if res.Lag <= 0 || k.readAt.IsZero() || !at.After(k.readAt) || res.Spend <= k.spend {
		return 0
	}
	dt := at.Sub(k.readAt)
	rate := (res.Spend - k.spend) / (dt + res.Lag).Seconds()
	return res.Lag.Seconds() * rate
}
