package checker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Fields of a key's plan that replan reads: the pool prior and the burst
// factor it was made under, the headroom at its reading (lastSpendCheck),
// the rate the key's own history demanded (burst × its rate, or its
// fastest) and the rate the burst factor multiplied. With them a plan can
// be made again under a higher prior or burst factor without polling the
// key.
const (
	fieldPlanPrior    = "spendPlanPrior"
	fieldPlanBurst    = "spendPlanBurst"
	fieldPlanHeadroom = "spendPlanHeadroom"
	fieldPlanOwn      = "spendPlanOwnRate"
	fieldPlanRate     = "spendPlanRate"
)

// replanRise is how far the prior must rise above the one plans were last
// pulled forward under before they are pulled forward again: a prior
// creeping up by a percent a cycle would otherwise have every plan read and
// rewritten every cycle. A plan is then made under a prior at most this
// factor below the pool's.
const replanRise = 1.25

// storedPlan is what plan stores for replan; prior 0: nothing to replan
// (a key checked again at the minimum interval anyway).
type storedPlan struct {
	prior, burst, headroom, own, rate float64
}

// replan pulls forward the plans made under a lower pool prior or burst
// factor than the pool's now (docs/design.md "Adaptive cadence"): a key idle
// near its threshold, planned under the default prior, must not wait out
// that plan once the pool is known to spend many times faster, nor a key
// planned for bursts of 8 times its rate once the pool has shown 20. It
// reads only the keys planned under a lower prior or factor that are not
// due by the next cycle, and only when one rose since the last replan (once
// per process at first, for plans an earlier process or a lower configured
// prior made).
func (c *Checker) replan(ctx context.Context, p *poolRun, now time.Time) error {
	base := p.basePrior()
	p.cad.mu.Lock()
	fastest, done := p.cad.fastest, p.cad.replanned
	burst, doneBurst := max(DefaultBurstFactor, p.cad.burst), p.cad.replannedBurst
	p.cad.mu.Unlock()
	if p.BurstFactor > 0 {
		burst = p.BurstFactor
	}
	prior := max(base, fastest)
	if prior <= done*replanRise && burst <= doneBurst {
		return nil
	}
	minI, maxI := c.cfg.MinInterval, c.cfg.MaxInterval
	lower := bson.A{bson.M{fieldPlanPrior: bson.M{"$lt": prior}}}
	if burst > doneBurst {
		lower = append(lower, bson.M{fieldPlanBurst: bson.M{"$lt": burst}})
	}
	filter := bson.M{"$or": lower, FieldNextCheck: bson.M{"$gt": now.Add(minI / 2)}}
	cur, err := p.keys.Find(ctx, filter, options.Find().SetBatchSize(int32(c.cfg.BatchSize)).SetProjection(bson.M{
		FieldLastCheck: 1, FieldNextCheck: 1, fieldRate: 1, fieldPlanHeadroom: 1, fieldPlanOwn: 1, fieldPlanRate: 1}))
	if err != nil {
		return fmt.Errorf("find plans under a lower prior: %w", err)
	}
	defer cur.Close(context.WithoutCancel(ctx))
	var errs []error
	batch := make([]mongo.WriteModel, 0, c.writeStoreOf(ctx).batch)
	flush := func() {
		if len(batch) == 0 {
			return
		}
		wctx, cancel := context.WithTimeout(ctx, c.cfg.WriteTimeout)
		defer cancel()
		if _, err := p.keys.BulkWrite(wctx, batch, options.BulkWrite().SetOrdered(false)); err != nil {
			errs = append(errs, err)
		}
		batch = batch[:0]
	}
	for cur.Next(ctx) {
		d := cur.Current
		id, ok1 := d.Lookup("_id").StringValueOK()
		last, ok2 := d.Lookup(FieldLastCheck).TimeOK()
		next, ok3 := d.Lookup(FieldNextCheck).TimeOK()
		headroom, ok4 := d.Lookup(fieldPlanHeadroom).AsFloat64OK()
		own, ok5 := d.Lookup(fieldPlanOwn).AsFloat64OK()
		if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !(headroom > 0) || !(own >= 0) {
			continue // not a plan of ours: left to its next check
		}
		eff := max(own, prior)
		if r, _ := d.Lookup(fieldRate).AsFloat64OK(); !(r > 0) {
			eff = max(eff, idlePriorFactor*fastest) // as plan does for a key never seen spending
		}
		raised := bson.M{fieldPlanPrior: prior}
		if r, ok := d.Lookup(fieldPlanRate).AsFloat64OK(); ok && r >= 0 && !math.IsInf(r, 0) {
			// The burst factor scales the key's rate (a plan written by an
			// older version stores none, and holds until its check).
			eff = max(eff, r*burst)
			raised[fieldPlanBurst] = burst
		}
		// As plan: due half a minimum interval after the key could cross.
		again := last.Add(NextInterval(padded(headroom, eff, minI), 0, eff, 1, minI, maxI))
		if !again.Before(next) {
			continue
		}
		// Only ever earlier ($min), with the filter on _id alone: a plan
		// written meanwhile that is earlier still stays, and FerretDB v1
		// finds a document by _id without scanning the collection.
		batch = append(batch, mongo.NewUpdateOneModel().SetFilter(bson.M{"_id": id}).SetUpdate(bson.M{
			"$min": bson.M{FieldNextCheck: again}, "$max": raised}))
		if len(batch) == cap(batch) {
			flush()
		}
	}
	if err := cur.Err(); err != nil {
		errs = append(errs, err)
	}
	flush()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("pull plans forward: %w", err)
	}
	p.cad.mu.Lock()
	p.cad.replanned = max(p.cad.replanned, prior)
	p.cad.replannedBurst = max(p.cad.replannedBurst, burst)
	p.cad.mu.Unlock()
	return nil
}
