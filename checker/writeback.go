package checker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
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

// writeStore is what the write-back needs to know of the server.
type writeStore struct {
	batch int        // statements per command
	fence WriteFence // FenceInFilter or FenceOnRead
}

// writeStoreOf asks the server once (buildInfo; FerretDB's carries
// ferretdbVersion): on FerretDB, FerretWriteBatch statements per command,
// else the configured or batch size; on FerretDB v1 the fence is checked on
// read, since its filtered updates scan every key and are not atomic anyway
// (docs/design.md "Lease"), else in the filter. Config overrides both.
func (c *Checker) writeStoreOf(ctx context.Context) writeStore {
	c.writeStoreMu.Lock()
	defer c.writeStoreMu.Unlock()
	ws := c.writeStore
	if ws.batch == 0 {
		var info bson.Raw
		if err := c.db.RunCommand(ctx, bson.D{{Key: "buildInfo", Value: 1}}).Decode(&info); err != nil {
			// Unknown server: the small size and the filter are safe
			// everywhere; ask again next time.
			ws = writeStore{batch: min(c.cfg.BatchSize, FerretWriteBatch), fence: FenceInFilter}
		} else {
			ws = writeStore{batch: c.cfg.BatchSize, fence: FenceInFilter}
			if v, err := info.LookupErr("ferretdbVersion"); err == nil {
				ws.batch = min(c.cfg.BatchSize, FerretWriteBatch)
				if version, _ := v.StringValueOK(); ferretV1(version) {
					ws.fence = FenceOnRead
				}
			}
			c.writeStore = ws
		}
	}
	if c.cfg.WriteBatch > 0 {
		ws.batch = c.cfg.WriteBatch
	}
	if c.cfg.WriteFence != FenceAuto {
		ws.fence = c.cfg.WriteFence
	}
	return ws
}

// ferretV1 says whether a ferretdbVersion ("v1.24.0", or "unknown" when
// built without version stamps, as embedded) is not v2 or later.
func ferretV1(v string) bool {
	major, _, _ := strings.Cut(strings.TrimPrefix(v, "v"), ".")
	n, err := strconv.Atoi(major)
	return err != nil || n < 2
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
// update of a key rotated meanwhile matches nothing, which is right; with
// the fence in the filter so does one of a key whose _id holds another
// secret since it was read. Each
// update is fenced: it applies only over an observation of an older lease
// epoch, or of the same epoch and an earlier check, so a deposed leader's
// write never replaces a newer observation (docs/design.md "Lease"); the
// store checks the fence when the update arrives, or, on FerretDB v1, the
// checker checks it on the key as read (WriteFence).
func (c *Checker) writeBack(ctx context.Context, keys *mongo.Collection, epoch int64, obs <-chan observation) error {
	var errs []error
	ws := c.writeStoreOf(ctx)
	batch := make([]mongo.WriteModel, 0, ws.batch)
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
		if ws.fence == FenceOnRead && !o.read.admits(epoch, o.at) {
			continue // the update would be fenced off: not sent
		}
		set := bson.M{rotation.FieldTotalSpend: o.spend, FieldLastCheck: o.at, FieldNextCheck: o.nextCheck, fieldRate: o.rate, fieldRateSustained: o.avg, FieldEpoch: epoch}
		if o.planOnly {
			set = bson.M{FieldNextCheck: o.nextCheck}
		}
		if o.rejected {
			set = bson.M{FieldRejectedAt: o.at, FieldRejectedOf: o.of, FieldNextCheck: o.nextCheck}
		}
		if o.budget != nil {
			set[FieldBudget] = *o.budget
		}
		switch {
		case o.planOnly, o.rejected:
		case o.kept:
			// No figure: the last spend stays, not replaced by a reading,
			// and so does the reading it names (a key stored without its
			// time gets it, planKept).
			delete(set, rotation.FieldTotalSpend)
			if !o.readingAt.IsZero() {
				set[fieldReadingAt] = o.readingAt
			}
		default:
			set[FieldReadingOf], set[fieldReadingAt] = o.of, o.at
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
			set[fieldPlanBurst], set[fieldPlanRate] = o.plan.burst, o.plan.rate
		} else {
			// No plan replan may pull forward (a Retry-After among them).
			unset[fieldPlanPrior], unset[fieldPlanHeadroom], unset[fieldPlanOwn] = "", "", ""
			unset[fieldPlanBurst], unset[fieldPlanRate] = "", ""
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
			unset[FieldRejectedAt], unset[FieldRejectedOf], unset[FieldRejectHeldAt] = "", "", ""
		}
		if len(unset) > 0 {
			update["$unset"] = unset
		}
		filter := bson.M{"_id": o.id}
		if ws.fence == FenceInFilter {
			filter["$or"] = fence(epoch, o.at)
			filter[rotation.FieldAPIKey] = o.read.secret
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
