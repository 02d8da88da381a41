package checker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/notify"
	"github.com/spendchecker/spendchecker/rotation"
	"github.com/spendchecker/spendchecker/rotation/secret"
	"github.com/spendchecker/spendchecker/spend"
)

// Cycle runs one check over every pool. ctx should end when leadership
// does: no new poll or rotation starts after that.
func (c *Checker) Cycle(ctx context.Context) (Summary, error) {
	// One memo per cycle: keys of one account share its balance reading
	// (spend.Cycle).
	ctx = spend.WithCycle(ctx, spend.BeginCycle())
	start := c.cfg.Clock.Now()
	var sum Summary
	var errs []error
	for i := range c.pools {
		ps, err := c.checkPool(ctx, &c.pools[i])
		sum.Pools = append(sum.Pools, ps)
		if err != nil {
			errs = append(errs, fmt.Errorf("pool %s: %w", c.pools[i].rot.Pool().Name, err))
		}
	}
	sum.Duration = c.cfg.Clock.Since(start)
	return sum, errors.Join(errs...)
}

// observation is one key's outcome, for the bulk write-back.
type observation struct {
	id        string
	planOnly  bool // only nextCheck: a Retry-After, no spend figure
	spend     float64
	rate      float64
	avg       float64 // the sustained rate; < 0: none yet (unset)
	nextCheck time.Time
	at        time.Time
	budget    *float64
	remaining *float64 // the remaining kind: written instead of the spend
	currency  string
	checkErr  string // "" clears FieldCheckError
	// rejected: a 401/403 (only FieldRejectedAt and, when set, nextCheck are
	// written); clearRejected: a clear answer ends a run of rejections.
	rejected, clearRejected bool
	read                    fenceRead  // the key's last observation as read
	plan                    storedPlan // zero: a plan replan leaves alone
	// of: the fingerprint of the secret read (secret.Fingerprint), which
	// a reading or a rejection is stored with.
	of string
	// readingAt, for a figure that is the last spend kept (planKept) of a
	// key stored without spendReadingAt: its reading's time, written as
	// spendReadingAt, since lastSpendCheck moves.
	readingAt time.Time
	// kept: the spend is the last one kept, not read (planKept): not
	// written, so a write that lands after a newer reading (the fence
	// checked on read) does not pair an older spend with its time.
	kept bool
}

func (c *Checker) checkPool(ctx context.Context, p *poolRun) (PoolSummary, error) {
	ps := PoolSummary{Pool: p.rot.Pool().Name}
	log := c.log.With("pool", p.rot.Pool().Name)
	if !c.cfg.DryRun {
		rep, err := p.rot.Recover(ctx)
		ps.Recovered = rep.Completed
		if err != nil {
			ps.Errors = append(ps.Errors, "recover: "+err.Error())
		}
	}
	now := c.cfg.Clock.Now().UTC()
	filter := bson.M{"$and": bson.A{servable(now)}}
	if c.cfg.Adaptive {
		// A key planned a moment after this cycle is polled now rather than a
		// whole cycle late: cycles do not start on the exact planned instant.
		dueBy := now.Add(c.cfg.MinInterval / 2)
		// Never planned — or a plan that is not a date, which no comparison
		// would ever match — means due now. So does a plan further ahead
		// than the maximum interval: no plan is made that far, so it was
		// made by a clock ahead of ours (or ours was set back).
		filter["$or"] = bson.A{
			bson.M{FieldNextCheck: bson.M{"$not": bson.M{"$type": "date"}}},
			bson.M{FieldNextCheck: bson.M{"$lte": dueBy}},
			bson.M{FieldNextCheck: bson.M{"$gt": now.Add(c.cfg.MaxInterval + c.cfg.MinInterval)}},
		}
		c.loadFastest(ctx, p)
	}
	p.cad.begin()
	cur, err := p.keys.Find(ctx, filter, options.Find().SetBatchSize(int32(c.cfg.BatchSize)))
	if err != nil {
		return ps, fmt.Errorf("stream keys: %w", err)
	}
	defer cur.Close(context.WithoutCancel(ctx))

	var (
		mu   sync.Mutex
		obs  = make(chan observation, c.cfg.BatchSize)
		wErr = make(chan error, 1)
	)
	var pending []func()   // unauthorized rotations, held until the share is known
	var held []string      // their key ids
	var later []func()     // personal-budget rotations, once every key's user is recorded
	epoch := c.cfg.Epoch() // the lease this cycle runs under
	wctx, wstop := c.writeContext(ctx)
	go func() { defer wstop(); wErr <- c.writeBack(wctx, p.keys, epoch, obs) }()
	count := func(f func(*PoolSummary)) {
		mu.Lock()
		defer mu.Unlock()
		f(&ps)
	}
	// The cursor is read ahead by its own goroutine, so fetching the next
	// batch overlaps with the polls in flight instead of stalling them.
	docs := make(chan bson.Raw, c.cfg.BatchSize)
	var streamErr error
	streamed := make(chan struct{})
	go func() {
		defer close(streamed)
		defer close(docs)
		for cur.Next(ctx) {
			doc := make(bson.Raw, len(cur.Current))
			copy(doc, cur.Current)
			select {
			case docs <- doc:
			case <-ctx.Done():
				return
			}
		}
		streamErr = cur.Err()
	}()
	pollEach(ctx, c.cfg.Concurrency, docs, func(doc bson.Raw) {
		c.checkKey(ctx, p, doc, log, count, obs, func(id string, rejected bool, f func()) {
			mu.Lock()
			defer mu.Unlock()
			if !rejected {
				later = append(later, f)
				return
			}
			pending = append(pending, f)
			held = append(held, id)
		})
	})
	// The reader stops on ctx too; its error is read once it has.
	<-streamed
	// Every key refused for its owner's budget this cycle has its user
	// recorded by now, so two keys of one user see each other and are held.
	for _, rotate := range later {
		rotate()
	}
	if ctx.Err() == nil {
		c.logFailures(log, ps)
	}
	// The observations, rejections included, are in the store before the
	// guard counts rejections there.
	close(obs)
	if err := <-wErr; err != nil {
		ps.Errors = append(ps.Errors, "write back: "+err.Error())
	}
	if c.cfg.Adaptive && !c.cfg.DryRun && ctx.Err() == nil {
		// What this cycle (or an earlier process) learned, for the plans
		// made before it was known.
		if err := c.replan(ctx, p, now); err != nil {
			ps.Errors = append(ps.Errors, "replan: "+err.Error())
		}
	}
	if len(pending) > 0 {
		if why := c.systemicRejection(context.WithoutCancel(ctx), p, held); why != "" {
			ps.Errors = append(ps.Errors, why)
			log.Error("rotating none of the rejected keys: "+why, "rejected", ps.Unauthorized)
		} else {
			for _, rotate := range pending {
				rotate()
			}
		}
	}
	if n, err := p.rot.BackupsAvailable(context.WithoutCancel(ctx)); err == nil {
		ps.BackupsLeft = n
	} else {
		// Keep the last known count (metrics) rather than report 0 and
		// raise a false low-backups alarm.
		ps.BackupsUnknown = true
		log.Warn("could not count backup keys", "err", err)
	}
	if streamErr != nil && ctx.Err() == nil {
		return ps, fmt.Errorf("stream keys: %w", streamErr)
	}
	return ps, ctx.Err()
}

func (c *Checker) checkKey(ctx context.Context, p *poolRun, doc bson.Raw, log *slog.Logger, count func(func(*PoolSummary)), obs chan<- observation, hold func(id string, rejected bool, f func())) {
	k, err := readKey(doc)
	if err != nil {
		count(func(s *PoolSummary) { s.Failed++; s.Due++ })
		log.Warn("skipping malformed key document", "key", doc.Lookup("_id").String(), "err", err)
		return
	}
	count(func(s *PoolSummary) { s.Due++ })
	log = log.With("key", k.id)
	account := k.account
	if account == "" && !k.rotatedIn {
		// A key rotated in from a backup is in the backup's account: its
		// spendAccount (carried by the rotator), else its own; never the
		// pool's label (docs/providers.md, "Balance providers").
		account = p.Account
	}
	// The reading's time is the request's: a plan counted from a slow
	// answer would be late by its latency (docs/design.md "Adaptive cadence").
	at := c.cfg.Clock.Now().UTC()
	// Batch providers find the key in their report by _id or upstreamKeyId,
	// and fail a figure below the one recorded (docs/providers.md, "Batch reports").
	res, err := p.Provider.Spend(ctx, spend.Key{Secret: k.secret, CreatedAt: k.createdAt, Account: account,
		Pool: p.rot.Pool().Name, ID: k.id, UpstreamID: k.upID, Recorded: k.recorded()})
	// Upstream texts may echo the key: never let it reach a log line.
	err = secret.Redact(err, k.secret)
	send := func(o observation) {
		if c.cfg.DryRun {
			return
		}
		o.read, o.of = k.fence, k.readingOf
		select {
		case obs <- o:
		case <-ctx.Done():
		}
	}
	reason := ""
	switch {
	case errors.Is(err, spend.ErrUnauthorized):
		// LiteLLM answers 401 for any failure on its auth path (its
		// database unreachable included): a key is dead only when rejected
		// again on a later check (docs/reliability.md, Reliability).
		// With rotate-unauthorized off nothing is rotated: no need to ask
		// twice before recording the rejection.
		if p.RotateUnauthorized && (k.rejAt.IsZero() || at.Sub(k.rejAt) < c.cfg.MinInterval/2) {
			count(func(s *PoolSummary) { s.fail(fmt.Errorf("%w: %w", errRejectedOnce, err)) })
			first := k.rejAt
			if first.IsZero() {
				first = at
			}
			send(observation{id: k.id, rejected: true, at: first, nextCheck: at.Add(c.cfg.MinInterval)})
			log.Debug("upstream rejects the key; asking again before calling it dead", "apiKeyMasked", secret.Mask(k.secret))
			return
		}
		count(func(s *PoolSummary) {
			s.Unauthorized++
			s.Events = append(s.Events, notify.KeyRejectedEvent(p.rot.Pool().Name, k.id, k.secret, at))
		})
		if !p.RotateUnauthorized {
			log.Warn("upstream rejects the key; not rotating (rotate-unauthorized is off)", "apiKeyMasked", secret.Mask(k.secret))
			if !c.cfg.DryRun {
				// Planned like any key, on its last known spend, and
				// recorded for status: not polled every cycle for ever.
				o := c.planKept(p, k, at)
				o.checkErr = "unauthorized"
				send(o)
			}
			return
		}
		send(observation{id: k.id, rejected: true, at: at, nextCheck: at.Add(c.cfg.MinInterval)})
		reason = "unauthorized"
		res.Spend = k.spend
	case err != nil:
		count(func(s *PoolSummary) { s.fail(err) })
		if ctx.Err() == nil {
			// One line per cycle says an upstream is failing (logFailures).
			log.Debug("spend check failed; will retry", "err", err)
		}
		var ra *spend.RetryAfterError
		if errors.As(err, &ra) {
			// Honour Retry-After in the key's plan, so no replica polls it
			// before; but never further ahead than --max-check-interval.
			send(observation{id: k.id, planOnly: true, nextCheck: minTime(ra.Until.UTC(), at.Add(c.cfg.MaxInterval)), at: at})
		}
		return
	default:
		spendStr := strconv.FormatFloat(res.Spend, 'f', 2, 64)
		// What a lagging report may not show yet counts against the
		// threshold (docs/providers.md, "Batch reports").
		hidden := c.lagSpend(k, res, at)
		switch {
		case res.Exhausted:
			// Refused like a dead key, so held for the rejection guard like
			// one (a whole pool "exhausted" at once is the upstream's
			// fault); the last spend stays, as for an unauthorized key
			// (docs/reliability.md, Reliability).
			reason = "exhausted"
			res.Spend = k.spend
			send(observation{id: k.id, rejected: true, at: at, nextCheck: at.Add(c.cfg.MinInterval)})
		case res.NoReading:
			// No figure (a one-api unlimited token): checked, and status
			// says so; the last spend stays as it was (docs/providers.md).
			count(func(s *PoolSummary) { s.Checked++; s.NoReading++ })
			if !c.cfg.DryRun {
				o := c.planKept(p, k, at)
				o.checkErr, o.clearRejected = "no_reading", k.rejectionStored()
				send(o)
			}
			return
		case res.Remaining != nil:
			count(func(s *PoolSummary) { s.remaining(*res.Remaining, res.Currency) })
			if *res.Remaining <= p.MinRemaining {
				reason = "low_remaining_" + strconv.FormatFloat(*res.Remaining, 'f', 2, 64)
			}
		case res.BudgetExceeded:
			reason = "budget_exceeded_" + spendStr
		case res.Spend+hidden >= p.Threshold:
			reason = "proactive_threshold_" + spendStr
		case p.BudgetRatio > 0 && res.Budget != nil && atLeast(budgetSpend(res)+hidden, p.BudgetRatio*(*res.Budget)):
			reason = "proactive_threshold_" + spendStr
		}
		if res.AtLeast && reason == "" {
			// Only part of the key's spend was read, and it is under the
			// threshold: no clear answer.
			count(func(s *PoolSummary) {
				s.fail(&spend.UnclearError{Reason: fmt.Sprintf("only a lower bound read ($%s): more activity pages than a check reads", spendStr)})
			})
			return
		}
		count(func(s *PoolSummary) { s.Checked++ })
	}
	if reason == "" {
		o := c.plan(p, k, res, at)
		o.clearRejected = k.rejectionStored()
		send(o)
		log.Debug("spend checked", "spend", res.Spend, "threshold", p.Threshold)
		return
	}
	if reason == "unauthorized" || reason == "exhausted" {
		// Held until the cycle knows how many keys were rejected at once.
		hold(k.id, true, func() { c.rotateKey(ctx, p, k, doc, res, reason, at, log, count, nil) })
		return
	}
	if res.BudgetUser != "" {
		// Refused for its owner's personal budget: the user is recorded now
		// and the rotation waits for the cycle's other keys, so keys that
		// share the user are held rather than rotated one by one
		// (docs/providers.md). Rotate records it again if this write fails.
		if !c.cfg.DryRun {
			if err := p.rot.RecordBudgetUser(ctx, k.id, k.secret, res.BudgetUser); err != nil {
				log.Warn("could not record the key's budget user", "budgetUser", res.BudgetUser, "err", err)
			}
		}
		hold(k.id, false, func() { c.rotateKey(ctx, p, k, doc, res, reason, at, log, count, send) })
		return
	}
	c.learn(p, k, res, at)
	c.rotateKey(ctx, p, k, doc, res, reason, at, log, count, send)
}

type keyInfo struct {
	id     string
	secret string
	spend  float64
	readAt time.Time // the last reading (spendReadingAt, else lastSpendCheck): rates count from it
	// readAtStored: readAt is the stored spendReadingAt.
	readAtStored bool
	rate         float64
	hasRate      bool // planned by us before (a migrated key has none)
	avg          float64
	hasAvg       bool
	createdAt    time.Time
	rejAt        time.Time
	account      string
	upID         string   // upstreamKeyId: the key's id in a batch report
	rotatedIn    bool     // inserted by a rotation (replacedKey)
	remaining    *float64 // the last balance reading, for the remaining kind
	fence        fenceRead
	readingOf    string // the secret's fingerprint, stored with a reading of it
	// othersReading: the stored reading (spend) is another secret's.
	othersReading bool
	// othersRejection: the stored rejection is another secret's (rejAt is
	// then zero), cleared like one of this secret.
	othersRejection bool
}

// rejectionStored says whether a rejection is stored for the key, this
// secret's or another's: a clear answer clears it.
func (k keyInfo) rejectionStored() bool {
	return !k.rejAt.IsZero() || k.othersRejection
}

// recorded is the spend recorded for this secret, 0 when none: another
// secret's says nothing of what a batch report shows for this one.
func (k keyInfo) recorded() float64 {
	if k.othersReading {
		return 0
	}
	return k.spend
}

// readKey reads a key: the proxy's fields as rotation decodes them (only a
// string _id and apiKey are required), then the checker's own, leniently:
// wrongly typed optional fields are ignored.
func readKey(doc bson.Raw) (keyInfo, error) {
	kd, err := rotation.DecodeKey(doc)
	if err != nil {
		return keyInfo{}, err
	}
	lastCheck := doc.Lookup(FieldLastCheck)
	k := keyInfo{id: kd.ID, secret: kd.APIKey, spend: kd.TotalSpend, createdAt: kd.CreatedAt, upID: kd.UpstreamKeyID,
		rotatedIn: kd.ReplacedKey != "", fence: fenceOf(lastCheck, kd.APIKey, doc)}
	if v, err := doc.LookupErr(fieldRate); err == nil {
		k.rate, k.hasRate = v.AsFloat64OK()
		if math.IsNaN(k.rate) || math.IsInf(k.rate, 0) || k.rate < 0 {
			// Not a rate: unknown, relearned and overwritten (docs/design.md
			// "Adaptive cadence").
			k.rate, k.hasRate = 0, false
		}
	}
	if v, err := doc.LookupErr(fieldRateSustained); err == nil {
		k.avg, k.hasAvg = v.AsFloat64OK()
		if math.IsNaN(k.avg) || math.IsInf(k.avg, 0) || k.avg < 0 {
			k.avg, k.hasAvg = 0, false
		}
	}
	if t, ok := lastCheck.TimeOK(); ok {
		k.readAt = t
	}
	if t, ok := doc.Lookup(fieldReadingAt).TimeOK(); ok {
		k.readAt, k.readAtStored = t, true // the reading's own time (fieldReadingAt)
	}
	if v, err := doc.LookupErr(FieldRejectedAt); err == nil {
		if t, ok := v.TimeOK(); ok {
			k.rejAt = t
		}
	}
	k.account, _ = doc.Lookup(FieldAccount).StringValueOK()
	if v, err := doc.LookupErr(FieldRemaining); err == nil {
		if f, ok := v.AsFloat64OK(); ok && !math.IsNaN(f) && !math.IsInf(f, 0) {
			k.remaining = &f
		}
	}
	k.readingOf = secret.Fingerprint(k.secret)
	// Not a string: no fingerprint, taken as the current secret's, as a
	// reading stored without one (StringValue would panic the worker).
	if of, ok := doc.Lookup(FieldReadingOf).StringValueOK(); ok && of != k.readingOf {
		// The last reading is another secret's (the key re-keyed in place,
		// or a write-back of the old secret's reading that landed after
		// it): no rate spans two secrets. The key is measured afresh, as a
		// key never planned before; its spend and rejection stay as
		// recorded (docs/design.md "Adaptive cadence").
		k.readAt, k.rate, k.hasRate, k.avg, k.hasAvg, k.remaining = time.Time{}, 0, false, 0, false, nil
		k.othersReading = true
	}
	if of, ok := doc.Lookup(FieldRejectedOf).StringValueOK(); ok && of != k.readingOf && !k.rejAt.IsZero() {
		// Another secret's rejection: this secret's first 401 is a first
		// rejection, asked again before the key is called dead.
		k.rejAt, k.othersRejection = time.Time{}, true
	}
	return k, nil
}

// atLeast is a >= b up to floating-point noise: 0.1 × 3 is
// 0.30000000000000004, and a spend of 0.3 has reached it.
func atLeast(a, b float64) bool {
	return a >= b || b-a <= 1e-9*max(1, math.Abs(b))
}

// budgetSpend is the spend that counts against the reported budget.
func budgetSpend(r spend.Result) float64 {
	if r.BudgetSpend != nil {
		return *r.BudgetSpend
	}
	return r.Spend
}

// errRejectedOnce marks a key's first rejection: asked again before it
// counts as dead.
var errRejectedOnce = errors.New("rejected once (401/403); asking again before calling the key dead")

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
