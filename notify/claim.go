package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// The states of a claim.
const (
	stateClaimed = "claimed"
	stateSent    = "sent"
	stateFailed  = "failed"
)

// Claim is a claim as stored in the notifications collection
// (docs/design.md, "MongoDB schema"). Instance, Run and Delivery name its
// owner: the replica, the process (a random id per start) and the delivery
// within that process; ClaimAttempt is the attempt whose write took it.
type Claim struct {
	ID           string    `bson:"_id"`
	Event        string    `bson:"event"`
	Kind         string    `bson:"kind"`
	Pool         string    `bson:"pool"`
	Target       string    `bson:"target"`
	Format       string    `bson:"format"`
	Instance     string    `bson:"instance"`
	Run          string    `bson:"run"`
	Delivery     int64     `bson:"delivery"`
	ClaimAttempt int       `bson:"claimAttempt"`
	ClaimedAt    time.Time `bson:"claimedAt"`
	// Deadline is when the owner will have stopped delivering: it posts
	// nothing later, so a claim still `claimed` after it is stale.
	Deadline time.Time `bson:"deadline"`
	State    string    `bson:"state"`
	// EventJSON is the event (masked, as sent in the json format): what a
	// later run of the owner's replica resumes a stale claim from.
	EventJSON string `bson:"eventJSON"`
	Attempts  int    `bson:"attempts"`
	LastError string `bson:"lastError"`
}

// DefaultBound is bound() of the default settings: how long a delivery
// may take from its start to its outcome. A claim written before claims
// carried their deadline is stale this long after it was taken.
const DefaultBound = defaultMaxAttempts*(defaultRequestTimeout+3*defaultStoreTimeout) +
	(defaultMaxAttempts-1)*max(defaultMaxBackoff, defaultMaxRetryAfter) + 2*defaultStoreTimeout

// bound is how long one delivery may take from its start to its outcome:
// each attempt's request and its store commands (insert, read, take-over),
// the longest wait between two attempts, and the outcome's record (tried
// twice). The owner posts nothing after its start plus this.
func bound(c Config) time.Duration {
	return time.Duration(c.MaxAttempts)*(c.RequestTimeout+3*c.StoreTimeout) +
		time.Duration(c.MaxAttempts-1)*max(c.MaxBackoff, c.MaxRetryAfter) + 2*c.StoreTimeout
}

// deadline is when the claim's owner will have stopped delivering it.
func (c Claim) deadline() time.Time {
	if c.Deadline.IsZero() {
		return c.ClaimedAt.Add(DefaultBound)
	}
	return c.Deadline
}

// Stale reports whether the claim is still `claimed` past its deadline:
// its owner no longer delivers it (it died, or lost the store before it
// could record the outcome), so the event may never have been sent.
func (c Claim) Stale(now time.Time) bool {
	return c.State == stateClaimed && now.After(c.deadline())
}

// Overdue is how long past its deadline the claim is.
func (c Claim) Overdue(now time.Time) time.Duration { return now.Sub(c.deadline()) }

// StaleClaims reads the claims in coll left `claimed` past their deadline
// (`spendchecker verify`). A claim that cannot be read as one is returned
// with only its ID and an error naming it.
func StaleClaims(ctx context.Context, coll *mongo.Collection, now time.Time) ([]Claim, error) {
	var out []Claim
	var bad error
	err := eachClaimed(ctx, coll, func(c Claim, err error) {
		switch {
		case err != nil:
			bad = errors.Join(bad, err)
		case c.Stale(now):
			out = append(out, c)
		}
	})
	if err != nil {
		return out, err
	}
	return out, bad
}

// eachClaimed calls f with every claim in state `claimed`: there are few
// (deliveries under way, and stale ones), whatever the collection holds.
func eachClaimed(ctx context.Context, coll *mongo.Collection, f func(Claim, error)) error {
	cur, err := coll.Find(ctx, bson.D{{Key: "state", Value: stateClaimed}})
	if err != nil {
		return fmt.Errorf("read the notification claims: %w", err)
	}
	defer cur.Close(ctx)
	for cur.Next(ctx) {
		var c Claim
		if err := cur.Decode(&c); err != nil {
			id, _ := cur.Current.Lookup("_id").StringValueOK()
			f(Claim{ID: id}, fmt.Errorf("claim %q is unreadable: %w", id, err))
			continue
		}
		f(c, nil)
	}
	if err := cur.Err(); err != nil {
		return fmt.Errorf("read the notification claims: %w", err)
	}
	return nil
}

// owner names one delivery of one process of one replica.
type owner struct {
	instance string
	run      string
	delivery int64
}

func (c Claim) owner() owner { return owner{c.Instance, c.Run, c.Delivery} }

// delivery is one attempt series at one event for one receiver.
type delivery struct {
	owner
	deadline time.Time
	// from is the stale claim of an earlier run this delivery takes over.
	from *Claim
	// id is the claim's _id, fixed by the first attempt (claimOf).
	id string
}

// errVanished: a claim that refused the insert was gone when read (deleted
// by hand, or a claim of before re-arms were counted): the next attempt
// inserts again.
var errVanished = errors.New("the claim vanished before it could be read")

// take claims the event for delivery d: it inserts the claim, or, taking
// over a stale claim of an earlier run of this replica, rewrites its owner.
// When the write finds the claim held, the claim is read: it is d's own
// when its write took effect but the reply was lost (an earlier attempt of
// d wrote it), and then the delivery goes on. Another owner's claim is
// returned as held. Only the unique _id index decides who wins an insert
// (docs/operating.md, "Notifications"); the rewrite of a stale claim filters on its
// old owner, which only this replica's later runs ever rewrite.
func (n *Notifier) take(t *target, ev Event, d *delivery, attempt int) (held *Claim, err error) {
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.StoreTimeout)
	defer cancel()
	id, err := n.claimOf(ctx, t, ev, d)
	if err != nil {
		return nil, err
	}
	now := n.clock.Now().UTC()
	data, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("encode the event: %w", err)
	}
	who := bson.D{{Key: "instance", Value: d.instance}, {Key: "run", Value: d.run}, {Key: "delivery", Value: d.delivery},
		{Key: "claimAttempt", Value: attempt}, {Key: "deadline", Value: d.deadline.UTC()}, {Key: "eventJSON", Value: string(data)}}
	if d.from != nil {
		res, err := n.cfg.Store.UpdateOne(ctx, ownerFilter(*d.from), bson.D{{Key: "$set", Value: append(who, bson.E{Key: "resumedAt", Value: now})}})
		if err != nil {
			return nil, fmt.Errorf("take over the claim: %w", err)
		}
		if res.MatchedCount == 1 {
			return nil, nil
		}
	} else {
		doc := append(bson.D{{Key: "_id", Value: id}, {Key: "event", Value: ev.ID}, {Key: "kind", Value: string(ev.Kind)},
			{Key: "pool", Value: ev.Pool}, {Key: "target", Value: t.fp}, {Key: "format", Value: string(t.Format)},
			{Key: "claimedAt", Value: now}, {Key: "state", Value: stateClaimed}}, who...)
		_, err = n.cfg.Store.InsertOne(ctx, doc)
		if err == nil {
			return nil, nil
		}
		if !mongo.IsDuplicateKeyError(err) {
			return nil, fmt.Errorf("claim in the store: %w", err)
		}
	}
	var c Claim
	if err := n.cfg.Store.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&c); err != nil {
		if errors.Is(err, mongo.ErrNoDocuments) {
			return nil, errVanished
		}
		return nil, fmt.Errorf("read the claim: %w", err)
	}
	if c.owner() == d.owner {
		return nil, nil
	}
	if d.from == nil && n.resumable(c, now) {
		// This replica's earlier run died holding it: take it over now
		// rather than at the next sweep.
		d.from = &c
		return n.take(t, ev, d, attempt)
	}
	return &c, nil
}

// ownerFilter matches the claim while it is still `claimed` by the owner
// it had when read (a claim written before claims named their run has
// none).
func ownerFilter(c Claim) bson.D {
	f := bson.D{{Key: "_id", Value: c.ID}, {Key: "state", Value: stateClaimed}, {Key: "instance", Value: c.Instance}}
	if c.Run == "" {
		return append(f, bson.E{Key: "run", Value: bson.D{{Key: "$exists", Value: false}}})
	}
	return append(f, bson.E{Key: "run", Value: c.Run}, bson.E{Key: "delivery", Value: c.Delivery})
}

// resumable: the claim is stale and was left by an earlier run of this
// replica. A replica id names one live process at a time (the lease rests
// on it too), so that run is over and nobody else will deliver the event.
// Another replica's stale claim is never taken over: that replica may be
// alive and may have sent the event without being able to record it.
func (n *Notifier) resumable(c Claim, now time.Time) bool {
	return n.cfg.Instance != "" && c.Instance == n.cfg.Instance && c.Run != n.run && c.Stale(now)
}

// record notes the outcome on the claim. The update is idempotent, so it
// is tried twice: a claim left `claimed` would later show as stale, and
// one this replica sent would be resumed, and sent again, by its next run.
func (n *Notifier) record(t *target, ev Event, d *delivery, state string, attempts int, lastErr string) {
	n.update(t, ev, d, bson.D{{Key: "state", Value: state}, {Key: "attempts", Value: attempts}, {Key: "lastError", Value: lastErr},
		{Key: "finishedAt", Value: n.clock.Now().UTC()}})
}

// release leaves the claim `claimed` but moves its deadline to now: its
// owner stopped delivering (shutdown), so the next run of this replica may
// resume it at once, and the other replicas see it as stale.
func (n *Notifier) release(t *target, ev Event, d *delivery, attempts int, lastErr string) {
	n.update(t, ev, d, bson.D{{Key: "deadline", Value: n.clock.Now().UTC()}, {Key: "attempts", Value: attempts},
		{Key: "lastError", Value: lastErr}})
}

func (n *Notifier) update(t *target, ev Event, d *delivery, set bson.D) {
	u := unrecorded{event: ev.ID, claim: d.id, update: bson.D{{Key: "$set", Value: set}},
		filter: bson.D{{Key: "_id", Value: d.id}, {Key: "run", Value: d.run}, {Key: "delivery", Value: d.delivery}}}
	var err error
	for range 2 {
		ctx, cancel := n.finalCtx()
		_, err = n.cfg.Store.UpdateOne(ctx, u.filter, u.update)
		cancel()
		if err == nil {
			return
		}
	}
	// The sweep writes it when the store is back: left `claimed`, the
	// claim would read as stale, and this replica's next run would resume
	// it and send the event again.
	n.mu.Lock()
	n.unrecorded[u.claim] = u
	n.mu.Unlock()
	n.log.Warn("could not record the notification's outcome; its claim will show as stale", "id", ev.ID, "err", err)
}

// unrecorded is an outcome whose write failed, kept for the next sweep.
type unrecorded struct {
	event, claim   string // their ids
	filter, update bson.D
}

// recordLate writes the outcomes whose writes failed; those that fail
// again wait for the next sweep.
func (n *Notifier) recordLate(ctx context.Context) {
	n.mu.Lock()
	pending := make([]unrecorded, 0, len(n.unrecorded))
	for _, u := range n.unrecorded {
		pending = append(pending, u)
	}
	n.mu.Unlock()
	for _, u := range pending {
		if _, err := n.cfg.Store.UpdateOne(ctx, u.filter, u.update); err != nil {
			n.log.Warn("could not record the notification's outcome yet; retrying at the next sweep", "id", u.event, "err", err)
			continue
		}
		n.mu.Lock()
		delete(n.unrecorded, u.claim)
		n.mu.Unlock()
		n.log.Info("notification outcome recorded late", "id", u.event)
	}
}

// finalCtx bounds a write of an outcome. It is made even after Close
// abandoned the deliveries (an event sent but left `claimed` would be
// sent again), but then briefly: the process is stopping.
func (n *Notifier) finalCtx() (context.Context, context.CancelFunc) {
	d := n.cfg.StoreTimeout
	if n.ctx.Err() != nil {
		d = min(d, 2*time.Second)
	}
	return context.WithTimeout(context.WithoutCancel(n.ctx), d)
}
