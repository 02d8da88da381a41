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
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/rotation"
	"github.com/spendchecker/spendchecker/rotation/mongoidx"
	"github.com/spendchecker/spendchecker/spend"
)

// Fields the checker keeps on key documents, beside the proxy's own
// (rotation.FieldTotalSpend, the spend, among them). lastSpendCheck is read
// by the proxy's admin pages; nextSpendCheck and spendRate are the cadence
// plan, kept with the key so it survives restarts and replica changes.
const (
	FieldLastCheck = "lastSpendCheck"
	FieldNextCheck = "nextSpendCheck"
	// FieldRate is the key's fastest spend rate seen, USD per second, one of
	// the rates the cadence plan uses (status shows it).
	FieldRate   = "spendRate"
	fieldRate   = FieldRate
	FieldBudget = "spendBudget"
	// FieldEpoch is the lease epoch of the observation's writer: the
	// write-back's fence (docs/design.md "Lease").
	FieldEpoch = "spendEpoch"
	// FieldCheckError says why the last check gave no spend the checker
	// acts on (today: "unauthorized" with rotate-unauthorized off), for status.
	FieldCheckError = "spendCheckError"
	// FieldRejectedAt is when the upstream last rejected the key (401/403),
	// cleared by its next clear answer: a key is dead only when rejected on
	// two checks in a row, and the rejection guard counts the keys rejected
	// lately from the store, so its window survives --once runs, restarts
	// and leader changes (docs/reliability.md, Reliability).
	FieldRejectedAt = "spendRejectedAt"
	// FieldRejectedOf names the secret rejected (secret.Fingerprint): a
	// rejection of another secret, put under the key's _id since, is not
	// the first of two for the one there now.
	FieldRejectedOf = "spendRejectedOf"
	// FieldRejectHeldAt is when the guard last held the key's rotation: while
	// a hold is recent the guard keeps holding as long as the rejected share
	// stays high, however few keys a cycle polls.
	FieldRejectHeldAt = "spendRejectHeldAt"
	// FieldRemaining and FieldCurrency hold a balance provider's reading
	// (what remains of the account's balance) instead of totalSpend;
	// FieldAccount (set by the operator) names the key's account, whose
	// balance is asked once per cycle (docs/providers.md).
	FieldRemaining = "spendRemaining"
	FieldCurrency  = "spendCurrency"
	FieldAccount   = rotation.FieldSpendAccount
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
	// threshold per hour (docs/design.md "Adaptive cadence").
	RatePrior float64
	// BurstFactor is how many times its sustained rate a key is assumed
	// able to spend in a burst. 0 means learn it from the pool's
	// observations, starting at DefaultBurstFactor.
	BurstFactor float64
	// MinRemaining: with a balance provider (the remaining kind), a key
	// rotates when what remains is at or below it (docs/providers.md).
	MinRemaining float64
	// Account names the upstream account of every key of the pool that
	// names none itself (spendAccount): one balance request per cycle.
	Account string
	// UserBudget is the pool's rule for LiteLLM's personal-budget
	// refusals (rotation.UserBudgetAuto by default: rotate unless another
	// key of the pool names the same user).
	UserBudget rotation.UserBudget
}

// Defaults of Config (docs/configuration.md, "Flags"); the CLI's flags use them.
const (
	DefaultConcurrency = 16
	DefaultMinInterval = 10 * time.Second
	DefaultMaxInterval = 30 * time.Minute
	DefaultBatchSize   = 500
	DefaultRejectShare = 0.5
	DefaultRejectMin   = 3
)

// Config configures a Checker.
type Config struct {
	Pools []Pool
	// Concurrency is the number of simultaneous upstream requests per
	// cycle; default DefaultConcurrency.
	Concurrency int
	Adaptive    bool
	// MinInterval and MaxInterval bound a key's cadence; defaults
	// DefaultMinInterval and DefaultMaxInterval.
	MinInterval time.Duration
	MaxInterval time.Duration
	DryRun      bool
	Instance    string
	// BatchSize is the cursor batch and bulk-write size; default
	// DefaultBatchSize.
	BatchSize int
	// WriteBatch caps the statements of one write-back command; default
	// BatchSize, or FerretWriteBatch on FerretDB.
	WriteBatch int
	// WriteTimeout bounds one write-back command (and the rejection guard's
	// counts); default DefaultWriteTimeout.
	WriteTimeout time.Duration
	Clock        clockwork.Clock
	Logger       *slog.Logger
	// Epoch returns the lease epoch to record with rotations (0 without one).
	Epoch func() int64
	// RejectShare and RejectMin guard against systemic rejections: when, over
	// the last RejectWindow, at least RejectMin keys of a pool and at least
	// RejectShare of its answered keys were rejected (401/403), the cycle
	// rotates none of its rejected keys and fails (docs/reliability.md, Reliability).
	// Defaults DefaultRejectShare and DefaultRejectMin; a negative
	// RejectShare turns the guard off.
	RejectShare float64
	RejectMin   int
	// WriteFence says where the write-back's fence is checked (docs/design.md
	// "Lease"); default FenceAuto: in the filter, on read on FerretDB v1.
	WriteFence WriteFence
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

	writeStoreMu sync.Mutex
	writeStore   writeStore // zero until the server is known

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
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.MinInterval <= 0 {
		cfg.MinInterval = DefaultMinInterval
	}
	if cfg.MaxInterval < cfg.MinInterval {
		cfg.MaxInterval = max(DefaultMaxInterval, cfg.MinInterval)
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.Epoch == nil {
		cfg.Epoch = func() int64 { return 0 }
	}
	if cfg.RejectShare == 0 {
		cfg.RejectShare = DefaultRejectShare
	}
	if cfg.RejectMin <= 0 {
		cfg.RejectMin = DefaultRejectMin
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
		rot, err := rotation.New(db, p.Pool, rotation.Config{Owner: cfg.Instance, Now: cfg.Clock.Now, Logger: log, UserBudget: p.UserBudget})
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
			Keys: bson.D{{Key: rotation.FieldStatus, Value: 1}, {Key: FieldNextCheck, Value: 1}}}); err != nil {
			return err
		}
		if err := mongoidx.Ensure(ctx, p.keys, mongoidx.Index{Name: fieldPlanPrior + "_1",
			Keys: bson.D{{Key: fieldPlanPrior, Value: 1}}}); err != nil {
			return err
		}
		if err := mongoidx.Ensure(ctx, p.keys, mongoidx.Index{Name: fieldPlanBurst + "_1",
			Keys: bson.D{{Key: fieldPlanBurst, Value: 1}}}); err != nil {
			return err
		}
	}
	return nil
}

// MaxEpoch returns the highest lease epoch stored with any pool's
// observations: the lease's floor, so epochs never go backwards even when
// the lease records are deleted by hand (docs/design.md "Lease").
func (c *Checker) MaxEpoch(ctx context.Context) (int64, error) {
	var top int64
	for _, p := range c.pools {
		var doc bson.Raw
		err := p.keys.FindOne(ctx, bson.M{FieldEpoch: bson.M{"$gt": 0}},
			options.FindOne().SetSort(bson.D{{Key: FieldEpoch, Value: -1}}).SetProjection(bson.M{FieldEpoch: 1})).Decode(&doc)
		if errors.Is(err, mongo.ErrNoDocuments) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("pool %s: highest epoch: %w", p.rot.Pool().Name, err)
		}
		if e, ok := doc.Lookup(FieldEpoch).AsInt64OK(); ok {
			top = max(top, e)
		}
	}
	return top, nil
}
