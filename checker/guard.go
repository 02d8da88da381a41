package checker

import (
	"context"
	"errors"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// systemicRejection returns why the rejected keys in held must not be
// rotated, or "" when they may be: a share of a pool's answered keys
// rejected at once is an outage, a block or a wrong URL, not that many dead
// keys (docs/reliability.md, Reliability). It counts distinct keys over the last
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
	ctx, cancel := context.WithTimeout(ctx, c.cfg.WriteTimeout)
	defer cancel()
	hist := c.db.Collection(p.rot.Pool().HistoryCollection)
	rejected, err1 := p.keys.CountDocuments(ctx, bson.M{FieldRejectedAt: bson.M{"$gte": since}})
	answered, err2 := p.keys.CountDocuments(ctx, bson.M{"$or": bson.A{
		bson.M{FieldRejectedAt: bson.M{"$gte": since}}, bson.M{FieldLastCheck: bson.M{"$gte": since}}}})
	gone, err3 := hist.CountDocuments(ctx, bson.M{"rotationReason": bson.M{"$in": bson.A{"unauthorized", "exhausted"}}, "rotatedAt": bson.M{"$gte": since}})
	recent, err4 := p.keys.CountDocuments(ctx, bson.M{FieldRejectHeldAt: bson.M{"$gte": since}})
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
	} else if _, err := p.keys.UpdateMany(ctx, bson.M{"_id": bson.M{"$in": held}}, bson.M{"$set": bson.M{FieldRejectHeldAt: now}}); err != nil {
		c.log.Warn("could not record the rejection hold", "pool", p.rot.Pool().Name, "err", err)
	}
	return fmt.Sprintf("%d of %d keys answered in the last %s were rejected (401/403): that looks like an upstream outage, a block or a wrong --provider-url, not dead keys; check the upstream, then rotate dead keys by hand (spendchecker rotate) or raise --reject-share",
		rejected, answered, RejectWindow)
}
