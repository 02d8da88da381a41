package checker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/rotation"
)

// FerretWriteBatch caps write-back commands on FerretDB v1, which keeps a
// SQLite connection open for every statement of an update command until the
// command ends (handler/msg_update.go defers each statement's close), out of
// a pool of 100: one update of about 100 statements waits forever for a
// connection. 32 leaves room for a couple of such commands at once.
const FerretWriteBatch = 32

// DefaultWriteTimeout bounds one write-back command.
const DefaultWriteTimeout = 30 * time.Second

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

// writeGrace is how long the write-back may go on after the cycle's context
// ended (shutdown, or the lease lost): observations made are worth keeping,
// but a deposed leader must stop writing within a bound (docs/design.md "Lease").
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
// late write never replaces a newer observation (docs/design.md "Lease").
func (c *Checker) writeBack(ctx context.Context, keys *mongo.Collection, epoch int64, obs <-chan observation) error {
	var errs []error
	batch := make([]mongo.WriteModel, 0, c.writeBatchSize(ctx))
	flush := func() {
		if len(batch) == 0 {
			return
		}
		// Each write gets its own bound: a stalled store must not hang the
		// cycle, or shutdown behind it.
		wctx, cancel := context.WithTimeout(ctx, c.cfg.WriteTimeout)
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
		set := bson.M{rotation.FieldTotalSpend: o.spend, FieldLastCheck: o.at, FieldNextCheck: o.nextCheck, fieldRate: o.rate, fieldRateSustained: o.avg, FieldEpoch: epoch}
		if o.planOnly {
			set = bson.M{FieldNextCheck: o.nextCheck}
		}
		if o.rejected {
			set = bson.M{FieldRejectedAt: o.at, FieldNextCheck: o.nextCheck}
		}
		if o.budget != nil {
			set[FieldBudget] = *o.budget
		}
		if o.checkErr == "no_reading" {
			// No figure: the last spend stays, not replaced by a reading.
			delete(set, rotation.FieldTotalSpend)
		}
		if o.remaining != nil && !o.planOnly && !o.rejected {
			// The remaining kind: the balance, not a spend of 0.
			delete(set, rotation.FieldTotalSpend)
			set[FieldRemaining], set[FieldCurrency] = *o.remaining, o.currency
		}
		update := bson.M{"$set": set}
		unset := bson.M{}
		if o.plan.prior > 0 && !o.planOnly && !o.rejected {
			set[fieldPlanPrior], set[fieldPlanHeadroom], set[fieldPlanOwn] = o.plan.prior, o.plan.headroom, o.plan.own
		} else {
			// No plan replan may pull forward (a Retry-After among them).
			unset[fieldPlanPrior], unset[fieldPlanHeadroom], unset[fieldPlanOwn] = "", "", ""
		}
		if o.avg < 0 && !o.planOnly && !o.rejected {
			delete(set, fieldRateSustained)
			unset[fieldRateSustained] = ""
		}
		switch {
		case o.planOnly, o.rejected:
		case o.checkErr != "":
			set[FieldCheckError] = o.checkErr
		default:
			unset[FieldCheckError] = ""
		}
		if o.clearRejected {
			unset[FieldRejectedAt], unset[FieldRejectHeldAt] = "", ""
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
// was written by hand and must not fence the key for ever (docs/design.md "Lease").
const maxEpochLead = 1000

// fence is the write-back filter (docs/design.md "Lease"): the write applies over an
// observation of a lower epoch, or of the same epoch and an older time. A
// spendEpoch that is missing, not a number, or beyond maxEpochLead (another
// writer, or edited by hand) says nothing about the writer's epoch: then the
// observation time alone decides, so a late write never replaces a newer
// observation, and a key is never fenced for ever.
func fence(epoch int64, at time.Time) bson.A {
	noEpoch := bson.A{
		bson.M{FieldEpoch: bson.M{"$not": bson.M{"$type": "number"}}},
		bson.M{FieldEpoch: bson.M{"$gt": epoch + maxEpochLead}},
	}
	if epoch > math.MaxInt64-maxEpochLead {
		noEpoch = noEpoch[:1]
	}
	older := bson.A{
		bson.M{FieldLastCheck: bson.M{"$lt": at}},
		bson.M{FieldLastCheck: bson.M{"$not": bson.M{"$type": "date"}}},
	}
	return bson.A{
		bson.M{FieldEpoch: bson.M{"$lt": epoch}},
		bson.M{"$and": bson.A{bson.M{"$or": append(bson.A{bson.M{FieldEpoch: epoch}}, noEpoch...)}, bson.M{"$or": older}}},
	}
}
