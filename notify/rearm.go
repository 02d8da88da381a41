package notify

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/rotation/secret"
)

// A low-backups crossing is claimed under an _id that names it: the event's
// claim id, then "#<n>" once the alarm was re-armed n times. A re-arm
// inserts a marker numbered one more than the last; nothing is deleted or
// rewritten, so whichever insert reaches the store late (a claim of an
// ended crossing, a marker) cannot stand for another crossing, and only
// unique inserts decide, as for every claim.

// claimOf is the _id of the claim delivery d takes, fixed at its first
// attempt: a retry must find the claim an earlier attempt may have
// written, even if the alarm was re-armed in between.
func (n *Notifier) claimOf(ctx context.Context, t *target, ev Event, d *delivery) (string, error) {
	if d.id != "" {
		return d.id, nil
	}
	id := claimID(t, ev)
	switch {
	case d.from != nil:
		id = d.from.ID
	case ev.Kind == BackupsLow:
		rearms, err := n.rearms(ctx, id)
		if err != nil {
			return "", err
		}
		if rearms > 0 {
			id += "#" + strconv.FormatInt(rearms, 10)
		}
	}
	d.id = id
	return id, nil
}

// isClaimOf reports whether id is a claim of the event whose claim id
// is base (in any crossing).
func isClaimOf(id, base string) bool { return id == base || strings.HasPrefix(id, base+"#") }

// rearms is how many times the alarm of the claim id base was re-armed:
// the number of its last marker.
func (n *Notifier) rearms(ctx context.Context, base string) (int64, error) {
	var m struct {
		N int64 `bson:"n"`
	}
	err := n.cfg.Store.FindOne(ctx, bson.D{{Key: "rearmOf", Value: base}}, options.FindOne().SetSort(bson.D{{Key: "n", Value: -1}})).Decode(&m)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read the low-backups re-arms: %w", err)
	}
	return m.N, nil
}

// rearm starts a new crossing of the low-backups alarm: the next one is
// claimed under a new _id, so it is notified again. A marker another
// replica inserted first (the same number) does the same; older markers
// are no longer read and are removed.
func (n *Notifier) rearm(t *target, ev Event) {
	if n.cfg.Store == nil {
		return
	}
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.StoreTimeout)
	defer cancel()
	base := claimID(t, ev)
	err := func() error {
		last, err := n.rearms(ctx, base)
		if err != nil {
			return err
		}
		next := last + 1
		_, err = n.cfg.Store.InsertOne(ctx, bson.D{{Key: "_id", Value: base + "#rearm/" + strconv.FormatInt(next, 10)},
			{Key: "rearmOf", Value: base}, {Key: "n", Value: next}, {Key: "kind", Value: string(ev.Kind)}, {Key: "pool", Value: ev.Pool},
			{Key: "target", Value: t.fp}, {Key: "format", Value: string(t.Format)}, {Key: "rearmedAt", Value: n.clock.Now().UTC()}})
		if err != nil && !mongo.IsDuplicateKeyError(err) {
			return fmt.Errorf("re-arm: %w", err)
		}
		_, _ = n.cfg.Store.DeleteMany(ctx, bson.D{{Key: "rearmOf", Value: base}, {Key: "n", Value: bson.D{{Key: "$lt", Value: next}}}})
		return nil
	}()
	if err != nil {
		n.log.Warn("could not re-arm the low-backups notification; the next crossing may go unreported",
			"pool", ev.Pool, "url", secret.RedactURL(t.URL), "err", err)
	}
}
