// Package lease is a MongoDB lease that makes one replica the leader, after
// Kubernetes client-go's leader election: the holder renews every retry
// period and steps down by itself if it could not renew within the renew
// deadline; a candidate takes over only after it has itself seen the record
// unchanged for the lease duration, timed on its own monotonic clock, so the
// wall clocks of different machines are never compared.
//
// Each acquisition is its own document, _id = name/epoch, won by a unique
// insert: two candidates can never hold the same epoch, even on a store whose
// filtered updates are not atomic. The epoch is a fencing token.
//
// The lease stops replicas polling the same keys; it is never what makes a
// rotation correct.
package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readconcern"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"
)

// Collection is the default lease collection.
const Collection = "leases"

var (
	// ErrNotLeader is what IsLeader returns on a non-leader.
	ErrNotLeader = errors.New("not the lease holder")
	// ErrHeld means another live instance holds the lease.
	ErrHeld = errors.New("lease held by another live instance")
)

// Config sets up a Lease. Zero durations take DefaultLeaseDuration,
// DefaultRenewDeadline and DefaultRetryPeriod.
type Config struct {
	Name          string
	Instance      string
	LeaseDuration time.Duration
	RenewDeadline time.Duration
	RetryPeriod   time.Duration
	// Clock is the monotonic clock decisions are timed on; real when nil.
	Clock clockwork.Clock
	// Logger gets acquire, renew failure, step-down and release lines.
	Logger *slog.Logger
	// OnChange is called (from the lease's goroutine) when leadership changes.
	OnChange func(leader bool, epoch int64)
	// Floor, when set, returns the highest epoch known to have been used
	// outside the lease records (the epochs stored with observations), so a
	// fresh candidate never takes a lower one after the records were deleted.
	Floor func(context.Context) (int64, error)
}

// Validate reports durations that break the lease's safety argument.
func (c Config) Validate() error {
	switch {
	case c.Name == "" || c.Instance == "":
		return errors.New("lease: name and instance must be set")
	case c.RetryPeriod <= 0 || c.RenewDeadline <= 0 || c.LeaseDuration <= 0:
		return errors.New("lease: durations must be positive")
	case c.RenewDeadline >= c.LeaseDuration:
		return fmt.Errorf("lease: renew deadline %s must be shorter than the lease duration %s", c.RenewDeadline, c.LeaseDuration)
	case c.RetryPeriod >= c.RenewDeadline:
		return fmt.Errorf("lease: retry period %s must be shorter than the renew deadline %s", c.RetryPeriod, c.RenewDeadline)
	}
	return nil
}

// Lease is one candidate's view of the lease.
type Lease struct {
	coll  *mongo.Collection
	cfg   Config
	clock clockwork.Clock
	log   *slog.Logger
	// storeTimeout, when set (tests on a fake clock), replaces
	// attemptTimeout's bound, which is real time and would otherwise be
	// taken from the fake timings.
	storeTimeout time.Duration

	mu        sync.Mutex
	held      bool
	epoch     int64
	lastRenew time.Time // start of the last successful renewal, own clock
	leaderCtx context.Context
	cancel    context.CancelFunc
	deadline  clockwork.Timer
	// what this candidate last saw of another holder's record, and when
	observed   string
	observedAt time.Time
	// other is the newest record's key when another candidate holds it
	// (not released, not this candidate's own unrenewed attempt at epoch
	// tried, whose reply may have been lost): Acquire's evidence of a live
	// holder.
	other string
	tried int64
	// maxSeen is the highest epoch this candidate has seen: records deleted
	// by hand never make it take a lower one.
	maxSeen int64
	// longest is the longest lease duration seen on any record of this
	// name (capped, see holderWait): a holder whose record vanished may
	// lead that long after its last renewal.
	longest time.Duration
	// warned is the last record key a warning was logged for, so an odd
	// record is logged once, not every retry period.
	warned string
	// failing is set while the store does not answer: the outage is logged
	// at warn once, and its end at info.
	failing bool
}

// Defaults of Config's timings, taken together when all three are unset
// (docs/design.md, "Lease"): the renew deadline is 2/3 and the retry period 2/15 of
// the lease duration.
const (
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = DefaultLeaseDuration * 2 / 3
	DefaultRetryPeriod   = DefaultLeaseDuration * 2 / 15
)

// New returns a candidate for the lease named cfg.Name in coll.
func New(coll *mongo.Collection, cfg Config) (*Lease, error) {
	if cfg.LeaseDuration == 0 && cfg.RenewDeadline == 0 && cfg.RetryPeriod == 0 {
		cfg.LeaseDuration, cfg.RenewDeadline, cfg.RetryPeriod = DefaultLeaseDuration, DefaultRenewDeadline, DefaultRetryPeriod
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// Decisions rest on these reads and writes: a failover must not roll
	// them back, whatever the URI or the server's defaults say (docs/reliability.md
	// "Reliability").
	coll = coll.Database().Collection(coll.Name(), options.Collection().
		SetWriteConcern(&writeconcern.WriteConcern{W: "majority", Journal: &journal}).
		SetReadConcern(readconcern.Majority()).
		SetReadPreference(readpref.Primary()))
	return &Lease{coll: coll, cfg: cfg, clock: cfg.Clock, log: log.With("lease", cfg.Name, "instance", cfg.Instance)}, nil
}

var journal = true

func docID(name string, epoch int64) string { return fmt.Sprintf("%s/%020d", name, epoch) }

// IsLeader returns nil while this instance holds the lease and its last
// renewal is within the renew deadline — judged on its own clock, so it turns
// false on time even when renewing and releasing both fail. It satisfies
// gocron's Elector.
func (l *Lease) IsLeader(context.Context) error {
	if _, ok := l.Epoch(); ok {
		return nil
	}
	return ErrNotLeader
}

// Epoch returns the held epoch (the fencing token) and whether it is held.
func (l *Lease) Epoch() (int64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held && l.clock.Since(l.lastRenew) < l.cfg.RenewDeadline {
		return l.epoch, true
	}
	return 0, false
}

// LeaderContext returns a context that ends when the current leadership
// ends (step-down, release or missed renew deadline), and false when not
// leader. Work started as leader watches it so it stops once the lease is
// gone: gocron's elector only gates the start of a run.
func (l *Lease) LeaderContext() (context.Context, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.held || l.clock.Since(l.lastRenew) >= l.cfg.RenewDeadline {
		return nil, false
	}
	return l.leaderCtx, true
}

// Run takes part in the election until ctx ends, then releases the lease if
// held. It returns nil after a clean release.
func (l *Lease) Run(ctx context.Context) error {
	t := l.clock.NewTicker(l.cfg.RetryPeriod)
	defer t.Stop()
	for {
		l.Tick(ctx)
		select {
		case <-ctx.Done():
			return l.Release(context.WithoutCancel(ctx))
		case <-t.Chan():
		}
	}
}

// Acquire tries until it holds the lease, or returns ErrHeld as soon as it
// sees another holder's record change between two reads (that holder is
// alive), or ctx's error.
func (l *Lease) Acquire(ctx context.Context) error {
	t := l.clock.NewTicker(l.cfg.RetryPeriod)
	defer t.Stop()
	first := true
	for {
		before := l.otherKey()
		l.Tick(ctx)
		if _, ok := l.Epoch(); ok {
			return nil
		}
		if after := l.otherKey(); !first && before != "" && after != "" && after != before {
			return ErrHeld
		}
		first = false
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.Chan():
		}
	}
}

func (l *Lease) otherKey() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.other
}

// Tick is one round of the election: renew when holding, otherwise look at
// the record and take it over when it is free, released or expired.
func (l *Lease) Tick(ctx context.Context) {
	l.mu.Lock()
	held := l.held
	l.mu.Unlock()
	if held {
		l.renew(ctx)
		return
	}
	l.tryAcquire(ctx)
}

// attemptTimeout bounds each store call so a renewal that succeeds is always
// visible before a candidate could have waited out the lease duration.
func (l *Lease) attemptTimeout() time.Duration {
	if l.storeTimeout > 0 {
		return l.storeTimeout
	}
	return min(l.cfg.RetryPeriod, l.cfg.LeaseDuration-l.cfg.RenewDeadline)
}

// call bounds one store call by attemptTimeout. Each call of a round has
// the bound, not the round: a store slow on every call, but within the
// bound, is still led (a round's calls together timed out every round,
// and no candidate ever led).
func (l *Lease) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, l.attemptTimeout())
}

func (l *Lease) renew(ctx context.Context) {
	start := l.clock.Now()
	l.mu.Lock()
	epoch, lastRenew := l.epoch, l.lastRenew
	l.mu.Unlock()
	if l.clock.Since(lastRenew) >= l.cfg.RenewDeadline {
		l.stepDown("renew deadline passed", nil)
		return
	}
	err := l.renewOnce(ctx, epoch, start)
	if err == nil {
		l.mu.Lock()
		// On the clock too: a process paused after the check above may
		// resume before the deadline timer's goroutine has run.
		expired := l.leaderCtx.Err() != nil || l.clock.Since(lastRenew) >= l.cfg.RenewDeadline
		if l.held && l.epoch == epoch && !expired {
			l.lastRenew = start
			l.deadline.Reset(l.cfg.RenewDeadline - l.clock.Since(start))
		}
		l.mu.Unlock()
		if expired {
			l.stepDown("renew deadline passed during the renewal", nil)
		}
		return
	}
	if errors.Is(err, errSuperseded) {
		l.stepDown("a newer epoch exists", err)
		return
	}
	if l.clock.Since(lastRenew) >= l.cfg.RenewDeadline {
		l.stepDown("could not renew within the renew deadline", err)
		return
	}
	l.log.Warn("lease renewal failed; still leader until the renew deadline", "epoch", epoch, "err", err,
		"deadline_in", (l.cfg.RenewDeadline - l.clock.Since(lastRenew)).Round(time.Millisecond))
}

var errSuperseded = errors.New("lease superseded")

func (l *Lease) renewOnce(ctx context.Context, epoch int64, now time.Time) error {
	cctx, cancel := l.call(ctx)
	res, err := l.coll.UpdateOne(cctx,
		bson.M{"_id": docID(l.cfg.Name, epoch), "holder": l.cfg.Instance, "released": false},
		bson.M{"$set": bson.M{"renewedAt": now.UTC()}, "$inc": bson.M{"renewals": int64(1)}})
	cancel()
	if err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	if res.MatchedCount == 0 {
		// The record was deleted (or edited) by hand: keep the epoch on
		// record so no candidate takes it or a lower one again.
		cctx, cancel := l.call(ctx)
		defer cancel()
		if err := l.bumpFloor(cctx, epoch); err != nil {
			l.log.Warn("cannot record the epoch floor", "epoch", epoch, "err", err)
		}
		return fmt.Errorf("%w: epoch %d record gone", errSuperseded, epoch)
	}
	// A candidate can only have inserted a newer epoch after seeing ours
	// unchanged for the lease duration; check anyway, it is one cheap read.
	cctx, cancel = l.call(ctx)
	defer cancel()
	n, err := l.coll.CountDocuments(cctx, bson.M{"name": l.cfg.Name, "epoch": bson.M{"$gt": epoch}}, options.Count().SetLimit(1))
	if err != nil {
		return fmt.Errorf("renew check: %w", err)
	}
	if n > 0 {
		return fmt.Errorf("%w by a newer epoch", errSuperseded)
	}
	return nil
}

func (l *Lease) tryAcquire(ctx context.Context) {
	sent := l.clock.Now()
	cctx, cancel := l.call(ctx)
	latest, err := l.Latest(cctx)
	cancel()
	l.mu.Lock()
	was := l.failing
	l.failing = err != nil
	l.mu.Unlock()
	switch {
	case err != nil && !was:
		l.log.Warn("cannot read the lease; store unreachable? retrying every retry period", "err", err, "retry_period", l.cfg.RetryPeriod)
		return
	case err != nil:
		l.log.Debug("lease read failed", "err", err)
		return
	case was:
		l.log.Info("lease readable again")
	}
	next := int64(1)
	own := l.cfg.LeaseDuration
	l.mu.Lock()
	longest := max(own, l.longest)
	l.other = ""
	// Its own half-done attempt is never renewed: a renewed one is another
	// process's under the same instance id (hostname-pid repeats across
	// containers), which won the epoch and is alive.
	mine := latest != nil && latest.Holder == l.cfg.Instance && latest.Epoch == l.tried && latest.Renewals == 0
	if latest != nil && !latest.Released && !mine {
		l.other = latest.key
	}
	l.mu.Unlock()
	if latest != nil {
		if latest.Epoch == math.MaxInt64 {
			l.warnOnce("max/"+latest.key, "lease record at the largest epoch: no epoch above it exists; not leading until an operator deletes it",
				"record", latest.ID, "epoch", latest.Epoch)
			return
		}
		next = latest.Epoch + 1
		l.mu.Lock()
		l.maxSeen = max(l.maxSeen, latest.Epoch)
		l.mu.Unlock()
		if !latest.Released {
			wait := l.holderWait(latest)
			l.mu.Lock()
			l.longest = max(l.longest, wait)
			l.mu.Unlock()
			waited, ok := l.unchangedFor(latest.key, sent, latest.Epoch)
			if !ok || waited < wait {
				return
			}
			l.log.Info("lease expired; taking over", "holder", latest.Holder, "epoch", latest.Epoch, "unchanged_for", waited.Round(time.Millisecond))
		}
	}
	// Epochs used before may have lost their records (deleted by hand):
	// the floor document, this candidate's memory and the caller's floor
	// say so. With no record at all nothing proves nobody holds: a holder
	// whose record was deleted may believe it leads until its next renewal
	// finds it gone (or, stalled, until its renew deadline), so wait the
	// longest lease duration seen, as for an expired holder, then take an
	// epoch above every one used (docs/design.md "Lease").
	cctx, cancel = l.call(ctx)
	floor, err := l.floor(cctx)
	cancel()
	if err != nil {
		l.log.Debug("lease floor read failed", "err", err)
		return
	}
	if floor == math.MaxInt64 {
		l.warnOnce("maxfloor", "lease epoch floor at the largest epoch: no epoch above it exists; not leading until an operator fixes it", "floor", floor)
		return
	}
	if latest == nil || floor >= next {
		var prev int64
		if latest != nil {
			prev = latest.Epoch
		}
		next = max(next, floor+1)
		waited, ok := l.unchangedFor(fmt.Sprintf("gap/%d/%d", prev, floor), sent, floor)
		if !ok && (latest != nil || floor > 0) {
			l.log.Warn("lease records missing: epochs up to the one seen are gone; waiting the lease duration before taking over",
				"latest_record", prev, "highest_epoch_used", floor, "wait", longest)
		}
		if !ok || waited < longest {
			return
		}
	}
	// The floor first: once any record of this epoch can exist, the floor
	// says so, and deleting the records cannot make it be taken again.
	cctx, cancel = l.call(ctx)
	err = l.bumpFloor(cctx, next)
	cancel()
	if err != nil {
		l.log.Debug("lease floor write failed", "err", err)
		return
	}
	l.mu.Lock()
	l.tried = next
	l.mu.Unlock()
	start := l.clock.Now()
	wall := start.UTC()
	cctx, cancel = l.call(ctx)
	_, err = l.coll.InsertOne(cctx, Record{
		ID: docID(l.cfg.Name, next), Name: l.cfg.Name, Epoch: next, Holder: l.cfg.Instance,
		AcquiredAt: wall, RenewedAt: wall, LeaseDurationMS: l.cfg.LeaseDuration.Milliseconds(),
	})
	cancel()
	if mongo.IsDuplicateKeyError(err) {
		l.log.Debug("another candidate won the epoch", "epoch", next)
		return
	}
	if err != nil {
		l.log.Debug("lease insert failed", "err", err)
		return
	}
	l.mu.Lock()
	l.held, l.epoch, l.lastRenew = true, next, start
	l.observed = ""
	l.maxSeen = max(l.maxSeen, next)
	l.leaderCtx, l.cancel = context.WithCancel(context.Background())
	cancelLeader := l.cancel
	l.deadline = l.clock.AfterFunc(l.cfg.RenewDeadline-l.clock.Since(start), cancelLeader)
	l.mu.Unlock()
	l.log.Info("lease acquired", "epoch", next)
	l.notify(true, next)
	// Old epochs are history; keep a few for operators.
	cctx, cancel = l.call(ctx)
	defer cancel()
	if _, err := l.coll.DeleteMany(cctx, bson.M{"name": l.cfg.Name, "epoch": bson.M{"$lt": next - 4}}); err != nil {
		l.log.Debug("lease cleanup failed", "err", err)
	}
}

// unchangedFor records key as what this candidate sees now, with epoch as
// the highest seen, and returns how long it has seen the same key, timed
// from when the read that first showed it returned (later than the write,
// so the wait is never shorter than the holder's). ok is false when the key
// is new.
func (l *Lease) unchangedFor(key string, sent time.Time, epoch int64) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.maxSeen = max(l.maxSeen, epoch)
	if key != l.observed {
		l.observed, l.observedAt = key, l.clock.Now()
		return 0, false
	}
	return sent.Sub(l.observedAt), true
}

func (l *Lease) warnOnce(key, msg string, args ...any) {
	l.mu.Lock()
	seen := l.warned == key
	l.warned = key
	l.mu.Unlock()
	if !seen {
		l.log.Warn(msg, args...)
	}
}
