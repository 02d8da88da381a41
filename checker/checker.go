// Package checker runs check cycles: for each pool it finishes unfinished
// rotations, streams the keys the proxy may serve that are due, asks the upstream what
// each has spent with bounded concurrency, rotates the ones over threshold
// through the shared rotator, and writes the observations back in bulk.
package checker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/history"
	"github.com/spendchecker/spendchecker/internal/mongoidx"
	"github.com/spendchecker/spendchecker/rotation"
	"github.com/spendchecker/spendchecker/spend"
)

// Fields the checker keeps on key documents. totalSpend and lastSpendCheck
// are read by the proxy's admin pages; the other two are the cadence plan,
// kept with the key so it survives restarts and replica changes.
const (
	fieldSpend     = "totalSpend"
	fieldLastCheck = "lastSpendCheck"
	fieldNextCheck = "nextSpendCheck"
	fieldRate      = "spendRate" // fastest spend seen, USD per second
	fieldBudget    = "spendBudget"
	// fieldEpoch is the lease epoch of the observation's writer: the
	// write-back's fence (README "Lease").
	fieldEpoch = "spendEpoch"
	// fieldCheckError says why the last check gave no spend the checker
	// acts on (today: "unauthorized" with rotate-unauthorized off), for status.
	fieldCheckError = "spendCheckError"
	// fieldRejected is when the upstream last rejected the key (401/403),
	// cleared by its next clear answer: a key is dead only when rejected on
	// two checks in a row, and the rejection guard counts the keys rejected
	// lately from the store, so its window survives --once runs, restarts
	// and leader changes (README, Reliability).
	fieldRejected = "spendRejectedAt"
	// fieldRejectHeld is when the guard last held the key's rotation: while
	// a hold is recent the guard keeps holding as long as the rejected share
	// stays high, however few keys a cycle polls.
	fieldRejectHeld = "spendRejectHeldAt"
	// fieldRemaining and fieldCurrency hold a balance provider's reading
	// (what remains of the account's balance) instead of totalSpend;
	// fieldAccount (set by the operator) names the key's account, whose
	// balance is asked once per cycle (README, Providers).
	fieldRemaining = "spendRemaining"
	fieldCurrency  = "spendCurrency"
	fieldAccount   = "spendAccount"
)

// Pool is one pool to check, with its own provider and thresholds.
type Pool struct {
	Pool               rotation.Pool
	Provider           spend.Provider
	Threshold          float64 // USD; rotate at or above
	BudgetRatio        float64 // 0: off; else also rotate at ratio × a known budget
	RotateUnauthorized bool
	// RatePrior (USD/s) is the spend rate assumed for a key that shows none
	// of its own; the pool's fastest observed rate raises it. 0 means the
	// threshold per hour (README "Adaptive cadence").
	RatePrior float64
	// BurstFactor is how many times its fastest observed rate a key is
	// assumed able to spend in a burst. 0 means learn it from the pool's
	// observations, starting at DefaultBurstFactor.
	BurstFactor float64
	// MinRemaining: with a balance provider (the remaining kind), a key
	// rotates when what remains is at or below it (README, Providers).
	MinRemaining float64
	// Account names the upstream account of every key of the pool that
	// names none itself (spendAccount): one balance request per cycle.
	Account string
}

// Config configures a Checker.
type Config struct {
	Pools       []Pool
	Concurrency int // simultaneous upstream requests per cycle; default 16
	Adaptive    bool
	MinInterval time.Duration // default 10 s
	MaxInterval time.Duration // default 30 min
	DryRun      bool
	Instance    string
	BatchSize   int // cursor batch and bulk-write size; default 500
	// WriteBatch caps the statements of one write-back command; default
	// BatchSize, or FerretWriteBatch on FerretDB.
	WriteBatch int
	Clock      clockwork.Clock
	Logger     *slog.Logger
	// Epoch returns the lease epoch to record with rotations (0 without one).
	Epoch func() int64
	// RejectShare and RejectMin guard against systemic rejections: when, over
	// the last RejectWindow, at least RejectMin keys of a pool and at least
	// RejectShare of its answered keys were rejected (401/403), the cycle
	// rotates none of its rejected keys and fails (README, Reliability).
	// Defaults 0.5 and 3; a negative RejectShare turns the guard off.
	RejectShare float64
	RejectMin   int
	// Unfenced drops the write-back's fence (README "Lease"). Only for the
	// cadence simulation on FerretDB v1, which uses its _id index only for a
	// filter on _id alone and scans the whole table for a fenced update.
	Unfenced bool
}

// RejectWindow is how far back the rejection guard counts: with adaptive
// cadence a cycle may poll only a few keys, so an outage is judged over
// the recent cycles, not one.
const RejectWindow = 10 * time.Minute

// Checker runs cycles over its pools.
type Checker struct {
	db    *mongo.Database
	cfg   Config
	log   *slog.Logger
	pools []poolRun

	writeBatchMu sync.Mutex
	writeBatch   int // 0 until the server is known

}

// FerretWriteBatch caps write-back commands on FerretDB v1, which keeps a
// SQLite connection open for every statement of an update command until the
// command ends (handler/msg_update.go defers each statement's close), out of
// a pool of 100: one update of about 100 statements waits forever for a
// connection. 32 leaves room for a couple of such commands at once.
const FerretWriteBatch = 32

// writeTimeout bounds one write-back command.
const writeTimeout = 30 * time.Second

// writeBatchSize is the number of statements per write-back command: the
// configured or batch size, or FerretWriteBatch when the server says it is
// FerretDB (its buildInfo carries ferretdbVersion).
func (c *Checker) writeBatchSize(ctx context.Context) int {
	if c.cfg.WriteBatch > 0 {
		return c.cfg.WriteBatch
	}
	c.writeBatchMu.Lock()
	defer c.writeBatchMu.Unlock()
	if c.writeBatch > 0 {
		return c.writeBatch
	}
	var info bson.Raw
	if err := c.db.RunCommand(ctx, bson.D{{Key: "buildInfo", Value: 1}}).Decode(&info); err != nil {
		// Unknown server: the small size is safe everywhere; ask again next time.
		return min(c.cfg.BatchSize, FerretWriteBatch)
	}
	c.writeBatch = c.cfg.BatchSize
	if _, err := info.LookupErr("ferretdbVersion"); err == nil {
		c.writeBatch = min(c.cfg.BatchSize, FerretWriteBatch)
	}
	return c.writeBatch
}

type poolRun struct {
	Pool
	rot  *rotation.Rotator
	keys *mongo.Collection
	cad  *cadence
}

// New returns a Checker over db.
func New(db *mongo.Database, cfg Config) (*Checker, error) {
	if len(cfg.Pools) == 0 {
		return nil, errors.New("checker: no pools")
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 16
	}
	if cfg.MinInterval <= 0 {
		cfg.MinInterval = 10 * time.Second
	}
	if cfg.MaxInterval < cfg.MinInterval {
		cfg.MaxInterval = max(30*time.Minute, cfg.MinInterval)
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 500
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.Epoch == nil {
		cfg.Epoch = func() int64 { return 0 }
	}
	if cfg.RejectShare == 0 {
		cfg.RejectShare = 0.5
	}
	if cfg.RejectMin <= 0 {
		cfg.RejectMin = 3
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Checker{db: db, cfg: cfg, log: log}
	seen := map[string]bool{}
	for _, p := range cfg.Pools {
		if seen[p.Pool.Name] {
			return nil, fmt.Errorf("checker: pool %q configured twice", p.Pool.Name)
		}
		seen[p.Pool.Name] = true
		if p.Threshold <= 0 || p.BudgetRatio < 0 {
			return nil, fmt.Errorf("checker: pool %q: threshold must be > 0 and budget ratio >= 0", p.Pool.Name)
		}
		rot, err := rotation.New(db, p.Pool, rotation.Options{Owner: cfg.Instance, Now: cfg.Clock.Now, Logger: log})
		if err != nil {
			return nil, err
		}
		c.pools = append(c.pools, poolRun{Pool: p, rot: rot, keys: db.Collection(p.Pool.KeysCollection), cad: &cadence{}})
	}
	return c, nil
}

// Rotators returns each pool's rotator, for recover, rotate and verify.
func (c *Checker) Rotators() []*rotation.Rotator {
	out := make([]*rotation.Rotator, len(c.pools))
	for i, p := range c.pools {
		out[i] = p.rot
	}
	return out
}

// EnsureIndexes creates every index the pools rely on; idempotent.
func (c *Checker) EnsureIndexes(ctx context.Context) error {
	for _, p := range c.pools {
		if err := p.rot.EnsureIndexes(ctx); err != nil {
			return err
		}
		if err := mongoidx.Ensure(ctx, p.keys, mongoidx.Index{Name: "status_1_nextSpendCheck_1",
			Keys: bson.D{{Key: "status", Value: 1}, {Key: fieldNextCheck, Value: 1}}}); err != nil {
			return err
		}
	}
	return nil
}

// PoolSummary counts one pool's cycle.
type PoolSummary struct {
	Pool           string
	Due            int // keys polled this cycle
	Checked        int // clear answers
	Failed         int // unclear answers or transport errors
	Unauthorized   int
	Over           int // over threshold (or rejected) and so to rotate
	Rotated        int
	AlreadyRotated int
	NoBackup       int
	RotateErrors   int
	Recovered      int
	BackupsLeft    int64
	// BackupsUnknown: counting the backups failed; BackupsLeft means nothing.
	BackupsUnknown bool
	Errors         []string // one line each, for the summary
	// NoReading counts clear answers without a figure (one-api unlimited
	// tokens); LowestRemaining is the lowest balance read this cycle (the
	// remaining kind), in LowestCurrency.
	NoReading       int
	LowestRemaining *float64
	LowestCurrency  string
	// FailedBy counts the failed checks by cause, for the one outage line
	// per cycle; FailedExample is one of their errors.
	FailedBy      map[string]int
	FailedExample string
}

// Summary is a whole cycle.
type Summary struct {
	Pools    []PoolSummary
	Duration time.Duration
}

// Total adds the pools up.
func (s Summary) Total() PoolSummary {
	var t PoolSummary
	for _, p := range s.Pools {
		t.Due += p.Due
		t.Checked += p.Checked
		t.Failed += p.Failed
		t.Unauthorized += p.Unauthorized
		t.Over += p.Over
		t.Rotated += p.Rotated
		t.AlreadyRotated += p.AlreadyRotated
		t.NoBackup += p.NoBackup
		t.RotateErrors += p.RotateErrors
		t.Recovered += p.Recovered
		t.BackupsLeft += p.BackupsLeft
		t.Errors = append(t.Errors, p.Errors...)
	}
	return t
}

// Clean reports a cycle where every due key was checked and every rotation
// that was needed happened.
func (s Summary) Clean() bool {
	t := s.Total()
	return t.Failed == 0 && t.NoBackup == 0 && t.RotateErrors == 0 && len(t.Errors) == 0
}

// String is the one-line summary for logs and systemd's STATUS=.
func (s Summary) String() string {
	t := s.Total()
	return fmt.Sprintf("checked %d, failed %d, over threshold %d, rotated %d, already rotated %d, no backup %d, backups left %d, in %s",
		t.Checked, t.Failed, t.Over, t.Rotated, t.AlreadyRotated, t.NoBackup, t.BackupsLeft, s.Duration.Round(time.Millisecond))
}

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
	nextCheck time.Time
	at        time.Time
	budget    *float64
	remaining *float64 // the remaining kind: written instead of the spend
	currency  string
	checkErr  string // "" clears fieldCheckError
	// rejected: a 401/403 (only fieldRejected and, when set, nextCheck are
	// written); clearRejected: a clear answer ends a run of rejections.
	rejected, clearRejected bool
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
			bson.M{fieldNextCheck: bson.M{"$not": bson.M{"$type": "date"}}},
			bson.M{fieldNextCheck: bson.M{"$lte": dueBy}},
			bson.M{fieldNextCheck: bson.M{"$gt": now.Add(c.cfg.MaxInterval + c.cfg.MinInterval)}},
		}
		c.loadFastest(ctx, p)
	}
	cur, err := p.keys.Find(ctx, filter, options.Find().SetBatchSize(int32(c.cfg.BatchSize)))
	if err != nil {
		return ps, fmt.Errorf("stream keys: %w", err)
	}
	defer cur.Close(context.WithoutCancel(ctx))

	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		sem  = make(chan struct{}, c.cfg.Concurrency)
		obs  = make(chan observation, c.cfg.BatchSize)
		wErr = make(chan error, 1)
	)
	var pending []func()   // unauthorized rotations, held until the share is known
	var held []string      // their key ids
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
	go func() {
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
	for doc := range docs {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c.checkKey(ctx, p, doc, log, count, obs, func(id string, f func()) {
				mu.Lock()
				defer mu.Unlock()
				pending = append(pending, f)
				held = append(held, id)
			})
		}()
	}
	for range docs {
		// Drain after a cancellation, so the reader can finish.
	}
	wg.Wait()
	if ctx.Err() == nil {
		c.logFailures(log, ps)
	}
	// The observations, rejections included, are in the store before the
	// guard counts rejections there.
	close(obs)
	if err := <-wErr; err != nil {
		ps.Errors = append(ps.Errors, "write back: "+err.Error())
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

func (c *Checker) checkKey(ctx context.Context, p *poolRun, doc bson.Raw, log *slog.Logger, count func(func(*PoolSummary)), obs chan<- observation, hold func(string, func())) {
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
		// pool's label (README, Providers: "Balance providers").
		account = p.Account
	}
	res, err := p.Provider.Spend(ctx, spend.Key{Secret: k.secret, CreatedAt: k.createdAt, Account: account, Pool: p.rot.Pool().Name})
	// Upstream texts may echo the key: never let it reach a log line.
	err = maskSecret(err, k.secret)
	at := c.cfg.Clock.Now().UTC()
	send := func(o observation) {
		if c.cfg.DryRun {
			return
		}
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
		// again on a later check (README, Reliability).
		// With rotate-unauthorized off nothing is rotated: no need to ask
		// twice before recording the rejection.
		if p.RotateUnauthorized && (k.rejAt.IsZero() || at.Sub(k.rejAt) < c.cfg.MinInterval/2) {
			count(func(s *PoolSummary) { s.fail(fmt.Errorf("%w: %w", errRejectedOnce, err)) })
			first := k.rejAt
			if first.IsZero() {
				first = at
			}
			send(observation{id: k.id, rejected: true, at: first, nextCheck: at.Add(c.cfg.MinInterval)})
			log.Debug("upstream rejects the key; asking again before calling it dead", "apiKeyMasked", history.Mask(k.secret))
			return
		}
		count(func(s *PoolSummary) { s.Unauthorized++ })
		if !p.RotateUnauthorized {
			log.Warn("upstream rejects the key; not rotating (rotate-unauthorized is off)", "apiKeyMasked", history.Mask(k.secret))
			if !c.cfg.DryRun {
				// Planned like any key, on its last known spend, and
				// recorded for status: not polled every cycle for ever.
				o := c.plan(p, k, spend.Result{Spend: k.spend}, at)
				o.checkErr = "unauthorized"
				select {
				case obs <- o:
				case <-ctx.Done():
				}
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
		switch {
		case res.Exhausted:
			// Refused like a dead key, so held for the rejection guard like
			// one (a whole pool "exhausted" at once is the upstream's
			// fault); the last spend stays, as for an unauthorized key
			// (README, Reliability).
			reason = "exhausted"
			res.Spend = k.spend
			send(observation{id: k.id, rejected: true, at: at, nextCheck: at.Add(c.cfg.MinInterval)})
		case res.NoReading:
			// No figure (a one-api unlimited token): checked, and status
			// says so; the last spend stays as it was (README, Providers).
			count(func(s *PoolSummary) { s.Checked++; s.NoReading++ })
			if !c.cfg.DryRun {
				o := c.plan(p, k, spend.Result{Spend: k.spend}, at)
				o.checkErr, o.clearRejected = "no_reading", !k.rejAt.IsZero()
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
		case res.Spend >= p.Threshold:
			reason = "proactive_threshold_" + spendStr
		case p.BudgetRatio > 0 && res.Budget != nil && atLeast(budgetSpend(res), p.BudgetRatio*(*res.Budget)):
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
		o.clearRejected = !k.rejAt.IsZero()
		send(o)
		log.Debug("spend checked", "spend", res.Spend, "threshold", p.Threshold)
		return
	}
	if reason == "unauthorized" || reason == "exhausted" {
		// Held until the cycle knows how many keys were rejected at once.
		hold(k.id, func() { c.rotateKey(ctx, p, k, doc, res, reason, at, log, count, nil) })
		return
	}
	c.rotateKey(ctx, p, k, doc, res, reason, at, log, count, send)
}

// rotateKey rotates the key. send, when not nil, writes back the
// observation of a key that stays in service for want of a backup.
func (c *Checker) rotateKey(ctx context.Context, p *poolRun, k keyInfo, doc bson.Raw, res spend.Result, reason string, at time.Time, log *slog.Logger, count func(func(*PoolSummary)), send func(observation)) {
	count(func(s *PoolSummary) { s.Over++ })
	if c.cfg.DryRun {
		log.Info("would rotate (dry run)", "spend", res.Spend, "threshold", p.Threshold, "reason", reason)
		return
	}
	if ctx.Err() != nil {
		return
	}
	r, err := p.rot.Rotate(ctx, k.id, reason, rotation.WithKeyDocument(doc), rotation.WithObservation(history.Observation{
		Spend: res.Spend, Threshold: p.Threshold, Budget: res.Budget, CheckedAt: at, Remaining: res.Remaining, Currency: res.Currency,
		Provider: p.Provider.Name(), Instance: c.cfg.Instance, LeaseEpoch: c.cfg.Epoch(),
	}))
	switch {
	case err != nil:
		count(func(s *PoolSummary) { s.RotateErrors++ })
		log.Error("rotation failed; recovery will finish it", "err", err)
	case r.Outcome == rotation.Rotated:
		// The rotator logs the rotation, with the spend and threshold.
		count(func(s *PoolSummary) { s.Rotated++ })
	case r.Outcome == rotation.NoBackup:
		count(func(s *PoolSummary) {
			s.NoBackup++
			s.Errors = append(s.Errors, fmt.Sprintf("key %s is over threshold (%s) but no backup key is left", k.id, reason))
		})
		log.Error("no backup key left; key stays in service over threshold", "spend", res.Spend, "threshold", p.Threshold)
		if send != nil {
			// The key stays in service: what it spent is still worth showing.
			o := c.plan(p, k, res, at)
			o.clearRejected = !k.rejAt.IsZero()
			send(o)
		}
	default:
		count(func(s *PoolSummary) { s.AlreadyRotated++ })
		log.Info("already rotated elsewhere", "outcome", r.Outcome.String())
	}
}

type keyInfo struct {
	id        string
	secret    string
	spend     float64
	lastCheck time.Time
	rate      float64
	hasRate   bool // planned by us before (a migrated key has none)
	createdAt time.Time
	rejAt     time.Time
	account   string
	rotatedIn bool     // inserted by a rotation (replacedKey)
	remaining *float64 // the last balance reading, for the remaining kind
}

// readKey reads a key leniently: only a string _id and apiKey are required;
// wrongly typed optional fields are ignored.
func readKey(doc bson.Raw) (keyInfo, error) {
	var k keyInfo
	var ok bool
	if k.id, ok = doc.Lookup("_id").StringValueOK(); !ok {
		return k, errors.New("_id is not a string")
	}
	if k.secret, ok = doc.Lookup("apiKey").StringValueOK(); !ok || k.secret == "" {
		return k, errors.New("apiKey missing or not a string")
	}
	if v, err := doc.LookupErr(fieldSpend); err == nil {
		k.spend, _ = v.AsFloat64OK()
	}
	if v, err := doc.LookupErr(fieldRate); err == nil {
		k.rate, k.hasRate = v.AsFloat64OK()
		if math.IsNaN(k.rate) || math.IsInf(k.rate, 0) || k.rate < 0 {
			// Not a rate: unknown, relearned and overwritten (README
			// "Adaptive cadence").
			k.rate, k.hasRate = 0, false
		}
	}
	if v, err := doc.LookupErr(fieldLastCheck); err == nil {
		if t, ok := v.TimeOK(); ok {
			k.lastCheck = t
		}
	}
	if v, err := doc.LookupErr("createdAt"); err == nil {
		if t, ok := v.TimeOK(); ok {
			k.createdAt = t
		}
	}
	if v, err := doc.LookupErr(fieldRejected); err == nil {
		if t, ok := v.TimeOK(); ok {
			k.rejAt = t
		}
	}
	k.account, _ = doc.Lookup(fieldAccount).StringValueOK()
	_, err := doc.LookupErr("replacedKey")
	k.rotatedIn = err == nil
	if v, err := doc.LookupErr(fieldRemaining); err == nil {
		if f, ok := v.AsFloat64OK(); ok && !math.IsNaN(f) && !math.IsInf(f, 0) {
			k.remaining = &f
		}
	}
	return k, nil
}

// atLeast is a >= b up to floating-point noise: 0.1 × 3 is
// 0.30000000000000004, and a spend of 0.3 has reached it.
func atLeast(a, b float64) bool {
	return a >= b || b-a <= 1e-9*max(1, math.Abs(b))
}

// DefaultBurstFactor is the burst factor a pool starts with: measured bursts
// ran at up to 4 times a key's usual rate; the rest is margin.
const DefaultBurstFactor = 8

// idlePriorFactor multiplies the pool's prior for a key seen spending
// nothing (measured: with 1 an idle key near its threshold that starts
// spending overshoots 11 times more than under fixed polling, with 2 no
// more; BENCHMARKS.md).
const idlePriorFactor = 2

// maxBurstFactor caps what a pool can teach the planner: a key whose rate
// was measured over a nearly idle stretch can show any ratio.
const maxBurstFactor = 32

// cadence is what a pool's observations teach the planner: the fastest
// rate seen for any of its keys (the prior for keys with no rate of their
// own) and how bursty its keys are (the largest ratio of a key's rate over
// one interval to the fastest rate known for it before). It lives in
// memory; the fastest rate is reloaded from the keys at start.
type cadence struct {
	mu      sync.Mutex
	loaded  bool
	fastest float64
	burst   float64
}

// observe learns from one key's rate seen over an interval, known its
// fastest rate before, base the pool's configured prior. A jump counts as a
// burst only when it goes past what the planner already assumed for every
// key, the larger of base and the pool's fastest rate: an idle key waking up
// at the pool's usual rate is not bursty, and its ratio over a near-zero
// rate would teach any factor (README "Adaptive cadence").
func (cd *cadence) observe(known, seen, base float64) (fastest, burst float64) {
	cd.mu.Lock()
	defer cd.mu.Unlock()
	if seen > 0 {
		if known > 0 && seen > max(base, cd.fastest) {
			cd.burst = max(cd.burst, min(seen/known, maxBurstFactor))
		}
		cd.fastest = max(cd.fastest, seen)
	}
	return cd.fastest, max(DefaultBurstFactor, cd.burst)
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

// plan decides the key's next check (README "Adaptive cadence").
func (c *Checker) plan(p *poolRun, k keyInfo, res spend.Result, at time.Time) observation {
	rate := k.rate
	seen := -1.0 // the rate over the interval since the last check
	now, before := res.Spend, k.spend
	if res.Remaining != nil {
		// A balance falls as its keys spend: the fall is the spend. No
		// earlier balance reading: no rate yet.
		now, before = -*res.Remaining, math.Inf(1)
		if k.remaining != nil {
			before = -*k.remaining
		}
	}
	switch {
	case !k.lastCheck.IsZero() && at.Sub(k.lastCheck) < c.cfg.MinInterval/2:
		// Checked moments ago (by another writer, or a clock ahead of
		// ours): a rate over so short an interval is noise, and a stored
		// rate never decays, so it is not learned (README "Adaptive
		// cadence").
	case !k.lastCheck.IsZero() && at.After(k.lastCheck) && now >= before:
		seen = (now - before) / at.Sub(k.lastCheck).Seconds()
		rate = max(rate, seen)
	case k.lastCheck.IsZero() && rate <= 0:
		rate = -1 // first check: no rate yet
	}
	prior := p.RatePrior
	if prior <= 0 {
		prior = p.Threshold / 3600
	}
	fastest, burst := p.cad.observe(k.rate, seen, prior)
	if p.BurstFactor > 0 {
		burst = p.BurstFactor
	}
	// Any key may start spending as fast as any key of its pool has: a key
	// with no rate of its own (idle, just rotated in, migrated) above all.
	prior = max(prior, fastest)
	if rate == 0 {
		// A key that has shown no spend of its own may start at any rate:
		// the pool's fastest is an average over check intervals, which
		// understates the peaks of bursts.
		prior *= idlePriorFactor
	}
	headroom := p.Threshold - res.Spend
	if p.BudgetRatio > 0 && res.Budget != nil {
		headroom = min(headroom, p.BudgetRatio*(*res.Budget)-budgetSpend(res))
	}
	if res.Remaining != nil {
		headroom = *res.Remaining - p.MinRemaining
	}
	planRate := rate
	if !k.hasRate {
		// Never planned by us (migrated, or first check): its rate over a
		// long, unknown stretch says little; check again at the minimum
		// to measure one.
		planRate = -1
	}
	next := NextInterval(headroom, planRate, prior, burst, c.cfg.MinInterval, c.cfg.MaxInterval)
	return observation{id: k.id, spend: res.Spend, rate: max(rate, 0), nextCheck: at.Add(next), at: at, budget: res.Budget,
		remaining: res.Remaining, currency: res.Currency}
}

// NextInterval plans the wait before a key's next check: the time the key
// needs to cross its threshold at the faster of burst × its own fastest
// rate and the pool's prior, clamped to [min, max]. So a key is back at the
// minimum interval before a burst of up to burst × its rate can carry it
// over, and a key with no rate of its own (idle, new, migrated) is never
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

// writeGrace is how long the write-back may go on after the cycle's context
// ended (shutdown, or the lease lost): observations made are worth keeping,
// but a deposed leader must stop writing within a bound (README "Lease").
const writeGrace = 5 * time.Second

// writeContext outlives ctx by at most writeGrace; stop releases it.
func (c *Checker) writeContext(ctx context.Context) (wctx context.Context, stop func()) {
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var mu sync.Mutex
	var timer clockwork.Timer
	stopAfter := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		timer = c.cfg.Clock.AfterFunc(writeGrace, cancel)
	})
	return wctx, func() {
		stopAfter()
		mu.Lock()
		if timer != nil {
			timer.Stop()
		}
		mu.Unlock()
		cancel()
	}
}

// writeBack stores observations in bulk, one unordered write per batch. An
// update of a key rotated meanwhile matches nothing, which is right. Each
// update is fenced: it applies only over an observation of an older lease
// epoch, or of the same epoch and an earlier check, so a deposed leader's
// late write never replaces a newer observation (README "Lease").
func (c *Checker) writeBack(ctx context.Context, keys *mongo.Collection, epoch int64, obs <-chan observation) error {
	var errs []error
	batch := make([]mongo.WriteModel, 0, c.writeBatchSize(ctx))
	flush := func() {
		if len(batch) == 0 {
			return
		}
		// Each write gets its own bound: a stalled store must not hang the
		// cycle, or shutdown behind it.
		wctx, cancel := context.WithTimeout(ctx, writeTimeout)
		defer cancel()
		if _, err := keys.BulkWrite(wctx, batch, options.BulkWrite().SetOrdered(false)); err != nil {
			errs = append(errs, err)
		}
		batch = batch[:0]
	}
	for o := range obs {
		if ctx.Err() != nil {
			continue // drain: the write grace is over
		}
		set := bson.M{fieldSpend: o.spend, fieldLastCheck: o.at, fieldNextCheck: o.nextCheck, fieldRate: o.rate, fieldEpoch: epoch}
		if o.planOnly {
			set = bson.M{fieldNextCheck: o.nextCheck}
		}
		if o.rejected {
			set = bson.M{fieldRejected: o.at, fieldNextCheck: o.nextCheck}
		}
		if o.budget != nil {
			set[fieldBudget] = *o.budget
		}
		if o.checkErr == "no_reading" {
			// No figure: the last spend stays, not replaced by a reading.
			delete(set, fieldSpend)
		}
		if o.remaining != nil && !o.planOnly && !o.rejected {
			// The remaining kind: the balance, not a spend of 0.
			delete(set, fieldSpend)
			set[fieldRemaining], set[fieldCurrency] = *o.remaining, o.currency
		}
		update := bson.M{"$set": set}
		unset := bson.M{}
		switch {
		case o.planOnly, o.rejected:
		case o.checkErr != "":
			set[fieldCheckError] = o.checkErr
		default:
			unset[fieldCheckError] = ""
		}
		if o.clearRejected {
			unset[fieldRejected], unset[fieldRejectHeld] = "", ""
		}
		if len(unset) > 0 {
			update["$unset"] = unset
		}
		filter := bson.M{"_id": o.id}
		if !c.cfg.Unfenced {
			filter["$or"] = fence(epoch, o.at)
		}
		batch = append(batch, mongo.NewUpdateOneModel().SetFilter(filter).SetUpdate(update))
		if len(batch) == cap(batch) {
			flush()
		}
	}
	flush()
	if ctx.Err() != nil {
		errs = append(errs, fmt.Errorf("write-back stopped %s after the cycle ended: %w", writeGrace, ctx.Err()))
	}
	return errors.Join(errs...)
}

// maxEpochLead is how far above the writer's epoch a stored spendEpoch can
// be and still be taken for a newer leader's: elections take one epoch at a
// time, so a write in flight never sees thousands of them. Anything beyond
// was written by hand and must not fence the key for ever (README "Lease").
const maxEpochLead = 1000

// fence is the write-back filter (README "Lease"): the write applies over an
// observation of a lower epoch, or of the same epoch and an older time. A
// spendEpoch that is missing, not a number, or beyond maxEpochLead (another
// writer, or edited by hand) says nothing about the writer's epoch: then the
// observation time alone decides, so a late write never replaces a newer
// observation, and a key is never fenced for ever.
func fence(epoch int64, at time.Time) bson.A {
	noEpoch := bson.A{
		bson.M{fieldEpoch: bson.M{"$not": bson.M{"$type": "number"}}},
		bson.M{fieldEpoch: bson.M{"$gt": epoch + maxEpochLead}},
	}
	if epoch > math.MaxInt64-maxEpochLead {
		noEpoch = noEpoch[:1]
	}
	older := bson.A{
		bson.M{fieldLastCheck: bson.M{"$lt": at}},
		bson.M{fieldLastCheck: bson.M{"$not": bson.M{"$type": "date"}}},
	}
	return bson.A{
		bson.M{fieldEpoch: bson.M{"$lt": epoch}},
		bson.M{"$and": bson.A{bson.M{"$or": append(bson.A{bson.M{fieldEpoch: epoch}}, noEpoch...)}, bson.M{"$or": older}}},
	}
}

// budgetSpend is the spend that counts against the reported budget.
func budgetSpend(r spend.Result) float64 {
	if r.BudgetSpend != nil {
		return *r.BudgetSpend
	}
	return r.Spend
}

// remaining notes a balance reading.
func (s *PoolSummary) remaining(v float64, currency string) {
	if s.LowestRemaining == nil || v < *s.LowestRemaining {
		s.LowestRemaining, s.LowestCurrency = &v, currency
	}
}

// fail counts a failed check by its cause.
func (s *PoolSummary) fail(err error) {
	s.Failed++
	var (
		ra *spend.RetryAfterError
		hb *spend.HostBackoffError
		uc *spend.UnclearError
	)
	cause := "transport"
	switch {
	case errors.Is(err, errRejectedOnce):
		cause = "rejected_once"
	case errors.As(err, &hb):
		cause = "host_backing_off"
	case errors.As(err, &ra):
		cause = "retry_after"
	case errors.As(err, &uc):
		cause = "unclear_answer"
	}
	if s.FailedBy == nil {
		s.FailedBy = map[string]int{}
	}
	s.FailedBy[cause]++
	// The example is the first failure that is not the backoff's own.
	if s.FailedExample == "" || cause != "host_backing_off" && s.FailedBy["host_backing_off"] == s.Failed-1 {
		s.FailedExample = err.Error()
	}
}

// logFailures says once per pool and cycle that checks failed, by cause,
// instead of a line per key: an outage at 10,000 keys is one line.
func (c *Checker) logFailures(log *slog.Logger, ps PoolSummary) {
	if len(ps.FailedBy) == 0 {
		return
	}
	args := []any{"failed", ps.Failed, "due", ps.Due, "example", ps.FailedExample}
	for _, cause := range []string{"transport", "host_backing_off", "retry_after", "unclear_answer", "rejected_once"} {
		if n := ps.FailedBy[cause]; n > 0 {
			args = append(args, cause, n)
		}
	}
	log.Warn("spend checks failed; those keys are retried when due", args...)
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

// maskedError is err with every occurrence of a secret masked in its text;
// errors.Is and As still see the original.
type maskedError struct {
	err error
	msg string
}

func (e *maskedError) Error() string { return e.msg }
func (e *maskedError) Unwrap() error { return e.err }

// maskSecret masks the key in err's text (first 5 and last 4 characters):
// an upstream or a gateway may echo the token it was given.
func maskSecret(err error, secret string) error {
	if err == nil || secret == "" {
		return err
	}
	// The encoded forms too (percent-encoded in a URL, escaped in a quoted
	// body): spend.RedactString knows them.
	msg := spend.RedactString(strings.ReplaceAll(err.Error(), secret, history.Mask(secret)), secret)
	if msg == err.Error() {
		return err
	}
	return &maskedError{err: err, msg: msg}
}

// systemicRejection returns why the rejected keys in held must not be
// rotated, or "" when they may be: a share of a pool's answered keys
// rejected at once is an outage, a block or a wrong URL, not that many dead
// keys (README, Reliability). It counts distinct keys over the last
// RejectWindow from the store (keys rejected lately, and keys rotated as
// rejected, from the history), so the window survives --once runs,
// restarts and leader changes. Once the guard has held within the window
// it keeps holding while the rejected share stays high, even when fewer
// than RejectMin keys are polled.
func (c *Checker) systemicRejection(ctx context.Context, p *poolRun, held []string) string {
	if c.cfg.RejectShare < 0 {
		return ""
	}
	now := c.cfg.Clock.Now().UTC()
	since := now.Add(-RejectWindow)
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	hist := c.db.Collection(p.rot.Pool().HistoryCollection)
	rejected, err1 := p.keys.CountDocuments(ctx, bson.M{fieldRejected: bson.M{"$gte": since}})
	answered, err2 := p.keys.CountDocuments(ctx, bson.M{"$or": bson.A{
		bson.M{fieldRejected: bson.M{"$gte": since}}, bson.M{fieldLastCheck: bson.M{"$gte": since}}}})
	gone, err3 := hist.CountDocuments(ctx, bson.M{"rotationReason": bson.M{"$in": bson.A{"unauthorized", "exhausted"}}, "rotatedAt": bson.M{"$gte": since}})
	recent, err4 := p.keys.CountDocuments(ctx, bson.M{fieldRejectHeld: bson.M{"$gte": since}})
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		// Unknown: rotating on a guess could burn the pool.
		return "cannot count recent rejections in the store: " + err.Error()
	}
	rejected += gone
	answered += gone
	if float64(rejected) < c.cfg.RejectShare*float64(answered) || (rejected < int64(c.cfg.RejectMin) && recent == 0) {
		return ""
	}
	if c.cfg.DryRun {
		// Writes nothing.
	} else if _, err := p.keys.UpdateMany(ctx, bson.M{"_id": bson.M{"$in": held}}, bson.M{"$set": bson.M{fieldRejectHeld: now}}); err != nil {
		c.log.Warn("could not record the rejection hold", "pool", p.rot.Pool().Name, "err", err)
	}
	return fmt.Sprintf("%d of %d keys answered in the last %s were rejected (401/403): that looks like an upstream outage, a block or a wrong --provider-url, not dead keys; check the upstream, then rotate dead keys by hand (spendchecker rotate) or raise --reject-share",
		rejected, answered, RejectWindow)
}

// MaxEpoch returns the highest lease epoch stored with any pool's
// observations: the lease's floor, so epochs never go backwards even when
// the lease records are deleted by hand (README "Lease").
func (c *Checker) MaxEpoch(ctx context.Context) (int64, error) {
	var top int64
	for _, p := range c.pools {
		var doc bson.Raw
		err := p.keys.FindOne(ctx, bson.M{fieldEpoch: bson.M{"$gt": 0}},
			options.FindOne().SetSort(bson.D{{Key: fieldEpoch, Value: -1}}).SetProjection(bson.M{fieldEpoch: 1})).Decode(&doc)
		if errors.Is(err, mongo.ErrNoDocuments) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("pool %s: highest epoch: %w", p.rot.Pool().Name, err)
		}
		if e, ok := doc.Lookup(fieldEpoch).AsInt64OK(); ok {
			top = max(top, e)
		}
	}
	return top, nil
}
