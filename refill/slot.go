package refill

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/keyadmin"
	"github.com/spendchecker/spendchecker/notify"
	"github.com/spendchecker/spendchecker/rotation"
)

// Journal documents and states (docs/refill.md, "What is recorded where").
const (
	kindSlot    = "slot"
	kindOutcome = "outcome"

	statePending  = "pending"  // journaled; what became of the create is not settled
	stateDone     = "done"     // the key is a backup
	stateOrphaned = "orphaned" // created, its secret lost: disabled upstream
	stateAbsent   = "absent"   // found nowhere after two looks: never created

	decideAdopt   = "adopt"
	decideDisable = "disable"
	decideAbsent  = "absent"
)

// slot is one journaled creation: its _id is <pool>/<day>/<n>.
type slot struct {
	ID    string  `bson:"_id"`
	Kind  string  `bson:"kind"`
	Pool  string  `bson:"pool"`
	Day   string  `bson:"day"`
	N     int     `bson:"n"`
	Name  string  `bson:"name"`
	Limit float64 `bson:"limit"`
	// Secret is the key proposed to an upstream that takes one, recorded
	// before the request and removed once the slot is settled.
	Secret      string     `bson:"secret,omitempty"`
	State       string     `bson:"state"`
	Owner       string     `bson:"owner"`
	Epoch       int64      `bson:"epoch"`
	RequestedAt time.Time  `bson:"requestedAt"`
	CheckAt     time.Time  `bson:"checkAt"`
	Checks      int        `bson:"checks"`
	LastError   string     `bson:"lastError,omitempty"`
	UpstreamID  string     `bson:"upstreamId,omitempty"`
	Orphans     []string   `bson:"orphanIds,omitempty"`
	SettledAt   *time.Time `bson:"settledAt,omitempty"`
}

// outcome is what became of a slot, decided once: its _id is the slot's
// and /outcome.
type outcome struct {
	ID       string `bson:"_id"`
	Kind     string `bson:"kind"`
	Pool     string `bson:"pool"`
	Slot     string `bson:"slot"`
	Decision string `bson:"decision"`
	// UpstreamID and Secret are the adopted key's; Secret is removed once
	// the backup is in.
	UpstreamID string    `bson:"upstreamId,omitempty"`
	Secret     string    `bson:"secret,omitempty"`
	Disable    []string  `bson:"disableIds,omitempty"`
	By         string    `bson:"by"`
	At         time.Time `bson:"at"`
}

// createOne journals the slot, then sends its create, once. ok says the
// key is a backup; false (nil error) stops the pass: the slot was taken by
// another executor, or the create failed (the slot is then settled by
// looking its name up).
func (r *Refiller) createOne(ctx context.Context, s slot, rep *Report) (bool, error) {
	if r.cfg.Upstream.ProposesSecret() {
		var err error
		if s.Secret, err = keyadmin.NewSecret(); err != nil {
			return false, fmt.Errorf("refill: make a key: %w", err)
		}
	}
	if _, err := r.journal.InsertOne(ctx, s); err != nil {
		if mongo.IsDuplicateKeyError(err) {
			return false, nil
		}
		return false, fmt.Errorf("refill: journal slot %s: %w", s.ID, err)
	}
	if err := r.after(ctx, s.ID, StepJournal); err != nil {
		return false, err
	}
	// A process paused since it journaled the slot (a deposed leader) may
	// find it decided by another meanwhile: absent after two looks. Its
	// create is then never sent.
	if decided, err := r.journal.CountDocuments(ctx, bson.M{"_id": s.ID + "/outcome"}, options.Count().SetLimit(1)); err != nil {
		return false, fmt.Errorf("refill: read outcome of %s: %w", s.ID, err)
	} else if decided > 0 {
		r.log.Warn("a journaled slot was settled by another process before its create was sent; not sending it", "slot", s.ID)
		return false, nil
	}
	k, cerr := r.cfg.Upstream.Create(ctx, s.Name, s.Limit, s.Secret)
	if ctx.Err() != nil {
		return false, ctx.Err() // unclear: settled by name later
	}
	if err := r.after(ctx, s.ID, StepCreate); err != nil {
		return false, err
	}
	if cerr == nil {
		cerr = r.confirm(ctx, s, k)
	}
	now := r.cfg.Now()
	if cerr == nil {
		r.failures, r.notBefore = 0, time.Time{}
		err := r.conclude(ctx, s, outcome{Decision: decideAdopt, UpstreamID: k.ID, Secret: k.Secret}, []string{k.ID}, true, rep)
		return err == nil, err
	}
	rep.Failed++
	r.failed(now, cerr)
	r.log.Warn("could not create a backup key upstream; looking it up by name", "slot", s.ID, "name", s.Name, "err", cerr)
	set := bson.M{"lastError": cerr.Error()}
	if k.ID != "" && k.ID != r.cfg.Upstream.IDOf(s.Secret) && !errors.Is(cerr, errNotTheSlots) {
		// The answer named a key not derived from the slot's secret
		// (OpenRouter's hash): disabled with the slot's orphans even if
		// the list never shows it.
		set["upstreamId"], s.UpstreamID = k.ID, k.ID
	}
	if _, err := r.journal.UpdateOne(ctx, bson.M{"_id": s.ID}, bson.M{"$set": set}); err != nil {
		return false, fmt.Errorf("refill: record slot %s: %w", s.ID, err)
	}
	s.LastError = cerr.Error()
	return false, r.settleSent(ctx, s, now, rep)
}

// settleSent settles a slot whose create this process sent without a clear
// answer. When another process decided the slot meanwhile (while this one
// was paused, or the create was held in the network), the key this create
// may have made was not there for its looks: this process looks the name
// up once more, and any key found that the decision does not adopt is
// disabled and recorded.
func (r *Refiller) settleSent(ctx context.Context, s slot, now time.Time, rep *Report) error {
	var have outcome
	err := r.journal.FindOne(ctx, bson.M{"_id": s.ID + "/outcome"}).Decode(&have)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return r.settle(ctx, s, now, rep)
	}
	if err != nil {
		return fmt.Errorf("refill: read outcome of %s: %w", s.ID, err)
	}
	found, ferr := r.cfg.Upstream.FindByName(ctx, s.Name)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if ferr != nil {
		r.log.Warn("could not look up by name a key created after its slot was settled; it may be left enabled upstream", "slot", s.ID, "name", s.Name, "err", ferr)
	}
	var created []string
	for _, k := range found {
		created = append(created, k.ID)
	}
	return r.conclude(ctx, s, have, created, false, rep)
}

// errUnconfirmed: the upstream answered a create with a key it does not
// show (unknown or disabled); errNotTheSlots: with a key it shows under
// another name, never disabled for the slot.
var (
	errUnconfirmed = errors.New("the upstream answered the create with a key it does not show enabled")
	errNotTheSlots = errors.New("the upstream answered the create with a key it shows under another name")
)

// confirm looks up the key a create answered: it becomes a backup only if
// the upstream shows it, enabled, under the slot's name. A look-up that
// fails (no answer) leaves the create's answer believed.
func (r *Refiller) confirm(ctx context.Context, s slot, k keyadmin.Key) error {
	got, err := r.cfg.Upstream.Lookup(ctx, k.ID)
	switch {
	case errors.Is(err, keyadmin.ErrNotFound):
		return fmt.Errorf("%w: %w", errUnconfirmed, err)
	case err != nil:
		r.log.Warn("could not look a created key up; taking the create's answer", "slot", s.ID, "name", s.Name, "err", err)
		return nil
	case got.Name != s.Name:
		// Both upstreams show a key's name (alias) on a look-up: a key
		// without the slot's is some other key, maybe live.
		return errNotTheSlots
	case got.Disabled:
		return errUnconfirmed
	}
	return nil
}

// settleDue settles the open slots whose time to look has come.
func (r *Refiller) settleDue(ctx context.Context, now time.Time, rep *Report) error {
	cur, err := r.journal.Find(ctx, bson.M{"pool": r.cfg.Pool.Name, "kind": kindSlot, "state": statePending, "checkAt": bson.M{"$lte": now.UTC()}},
		options.Find().SetSort(bson.D{{Key: "checkAt", Value: 1}}).SetLimit(50))
	if err != nil {
		return fmt.Errorf("refill: find open slots: %w", err)
	}
	var slots []slot
	if err := cur.All(ctx, &slots); err != nil {
		return fmt.Errorf("refill: find open slots: %w", err)
	}
	for _, s := range slots {
		if err := r.settle(ctx, s, now, rep); err != nil {
			return err
		}
	}
	return nil
}

// settle decides an open slot from its name upstream: the key created with
// the secret proposed for it is adopted; any other key under its name is
// one whose secret is lost, disabled; none, twice, is absent.
func (r *Refiller) settle(ctx context.Context, s slot, now time.Time, rep *Report) error {
	var have outcome
	err := r.journal.FindOne(ctx, bson.M{"_id": s.ID + "/outcome"}).Decode(&have)
	if err == nil {
		return r.conclude(ctx, s, have, nil, false, rep)
	}
	if !errors.Is(err, mongo.ErrNoDocuments) {
		return fmt.Errorf("refill: read outcome of %s: %w", s.ID, err)
	}
	found, ferr := r.cfg.Upstream.FindByName(ctx, s.Name)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if ferr != nil {
		r.failed(now, ferr)
		r.log.Warn("could not look a journaled key up by name; will retry", "slot", s.ID, "name", s.Name, "err", ferr)
		_, err := r.journal.UpdateOne(ctx, bson.M{"_id": s.ID}, bson.M{"$set": bson.M{"lastError": ferr.Error(),
			"checkAt": now.UTC().Add(max(r.cfg.SettleAfter, keyadmin.RetryAfter(ferr)))}})
		return err
	}
	if err := r.after(ctx, s.ID, StepFind); err != nil {
		return err
	}
	mine := r.cfg.Upstream.IDOf(s.Secret)
	var others []string
	for _, k := range found {
		if mine != "" && k.ID == mine && !k.Disabled {
			return r.conclude(ctx, s, outcome{Decision: decideAdopt, UpstreamID: k.ID, Secret: s.Secret}, nil, false, rep)
		}
		others = append(others, k.ID)
	}
	if s.UpstreamID != "" && !slices.Contains(others, s.UpstreamID) {
		// Named by the create's answer, missing from the list.
		others = append(others, s.UpstreamID)
	}
	if len(others) > 0 {
		return r.conclude(ctx, s, outcome{Decision: decideDisable, Disable: others}, nil, false, rep)
	}
	if s.Checks+1 >= 2 {
		return r.conclude(ctx, s, outcome{Decision: decideAbsent}, nil, false, rep)
	}
	_, err = r.journal.UpdateOne(ctx, bson.M{"_id": s.ID, "state": statePending},
		bson.M{"$set": bson.M{"checks": s.Checks + 1, "checkAt": now.UTC().Add(r.cfg.SettleAfter)}})
	return err
}

// conclude decides the slot's outcome (the first decision stands, whoever
// made it) and carries it out. created are ids of keys this executor knows
// it created for the slot: if the decision is not to adopt them, they are
// disabled too.
func (r *Refiller) conclude(ctx context.Context, s slot, proposed outcome, created []string, fresh bool, rep *Report) error {
	proposed.ID, proposed.Kind, proposed.Pool, proposed.Slot = s.ID+"/outcome", kindOutcome, s.Pool, s.ID
	proposed.By, proposed.At = r.cfg.Owner, r.cfg.Now().UTC()
	cur := proposed
	if _, err := r.journal.InsertOne(ctx, proposed); err != nil {
		if !mongo.IsDuplicateKeyError(err) {
			return fmt.Errorf("refill: decide %s: %w", s.ID, err)
		}
		if err := r.journal.FindOne(ctx, bson.M{"_id": proposed.ID}).Decode(&cur); err != nil {
			return fmt.Errorf("refill: read outcome of %s: %w", s.ID, err)
		}
	}
	if err := r.after(ctx, s.ID, StepDecide); err != nil {
		return err
	}
	var extra []string
	for _, id := range created {
		if id != "" && (cur.Decision != decideAdopt || id != cur.UpstreamID) {
			extra = append(extra, id)
		}
	}
	switch {
	case cur.Decision == decideAdopt && len(extra) == 0:
		return r.adopt(ctx, s, cur, fresh, rep)
	case cur.Decision == decideAbsent && len(extra) == 0:
		return r.finish(ctx, s, stateAbsent, nil, rep)
	}
	if cur.Decision == decideAdopt {
		// Another executor adopted a key under this slot's name and this
		// one holds another: never two keys for one slot.
		if err := r.adopt(ctx, s, cur, false, rep); err != nil {
			return err
		}
		_, err := r.disable(ctx, s, extra, false, rep)
		return err
	}
	_, err := r.disable(ctx, s, append(cur.Disable, extra...), true, rep)
	return err
}

// adopt inserts the adopted key as a backup, then settles the slot.
func (r *Refiller) adopt(ctx context.Context, s slot, o outcome, fresh bool, rep *Report) error {
	if o.Secret == "" {
		// Removed once the backup was in, or once the key was disabled
		// (its backup id taken, recorded in orphanIds first).
		var cur slot
		if err := r.journal.FindOne(ctx, bson.M{"_id": s.ID}).Decode(&cur); err != nil {
			return fmt.Errorf("refill: read slot %s: %w", s.ID, err)
		}
		if slices.Contains(cur.Orphans, o.UpstreamID) {
			return r.finish(ctx, s, stateOrphaned, cur.Orphans, rep)
		}
		return r.finish(ctx, s, stateDone, nil, nil)
	}
	if err := r.insertBackup(ctx, s, o, fresh); errors.Is(err, errBackupIDTaken) {
		// The key cannot become its backup: disabled and recorded, as one
		// whose secret is lost; the next slot refills the pool.
		r.log.Warn("the created key's backup id holds another key; disabling the created key", "slot", s.ID, "err", err)
		if done, err := r.disable(ctx, s, []string{o.UpstreamID}, false, rep); err != nil || !done {
			return err
		}
		if _, err := r.journal.UpdateOne(ctx, bson.M{"_id": o.ID}, bson.M{"$unset": bson.M{"secret": ""}}); err != nil {
			return fmt.Errorf("refill: clear the secret of %s: %w", s.ID, err)
		}
		return r.finish(ctx, s, stateOrphaned, []string{o.UpstreamID}, rep)
	} else if err != nil {
		return err
	}
	if err := r.after(ctx, s.ID, StepBackup); err != nil {
		return err
	}
	if fresh {
		rep.Created++
		r.log.Info("backup key created upstream", "slot", s.ID, "key", s.Name)
	} else {
		rep.Adopted++
		r.log.Info("backup key found upstream by name and added", "slot", s.ID, "key", s.Name)
	}
	// The backup holds the secret now; the outcome without it still says
	// adopt, which is all a later executor needs.
	if _, err := r.journal.UpdateOne(ctx, bson.M{"_id": o.ID}, bson.M{"$unset": bson.M{"secret": ""}}); err != nil {
		return fmt.Errorf("refill: clear the secret of %s: %w", s.ID, err)
	}
	return r.finish(ctx, s, stateDone, nil, nil)
}

// insertBackup makes the adopted key an unused backup, once: a backup of
// that id holding the key, or the key live or archived (used since), is
// left as it is.
func (r *Refiller) insertBackup(ctx context.Context, s slot, o outcome, fresh bool) error {
	doc := bson.D{{Key: "_id", Value: s.Name}, {Key: rotation.FieldAPIKey, Value: o.Secret}, {Key: rotation.FieldIsUsed, Value: false},
		{Key: rotation.FieldActivated, Value: false}, {Key: rotation.FieldCreatedAt, Value: r.cfg.Now().UTC()},
		{Key: rotation.FieldUpstreamKeyID, Value: o.UpstreamID}, {Key: "refillSlot", Value: s.ID}}
	if !fresh {
		for _, c := range []struct {
			coll   *mongo.Collection
			filter bson.M
		}{{r.backups, bson.M{"_id": s.Name}}, {r.keys, bson.M{rotation.FieldAPIKey: o.Secret}},
			{r.archive, bson.M{"document." + rotation.FieldAPIKey: o.Secret}}} {
			n, err := c.coll.CountDocuments(ctx, c.filter, options.Count().SetLimit(1))
			if err != nil {
				return fmt.Errorf("refill: is %s in already: %w", s.ID, err)
			}
			if n > 0 {
				return r.sameBackup(ctx, s, o)
			}
		}
	}
	_, err := r.backups.InsertOne(ctx, doc)
	if mongo.IsDuplicateKeyError(err) {
		return r.sameBackup(ctx, s, o)
	}
	if err != nil {
		return fmt.Errorf("refill: insert backup %s: %w", s.Name, err)
	}
	return nil
}

// sameBackup checks that a backup under the slot's name, if any, holds the
// adopted key: another one there is an id collision, left to the operator.
func (r *Refiller) sameBackup(ctx context.Context, s slot, o outcome) error {
	var have struct {
		APIKey string `bson:"apiKey"`
	}
	err := r.backups.FindOne(ctx, bson.M{"_id": s.Name}).Decode(&have)
	if errors.Is(err, mongo.ErrNoDocuments) || (err == nil && have.APIKey == o.Secret) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("refill: read backup %s: %w", s.Name, err)
	}
	return fmt.Errorf("%w: %s (slot %s)", errBackupIDTaken, s.Name, s.ID)
}

// errBackupIDTaken: a backup under the slot's name holds another key.
var errBackupIDTaken = errors.New("the backup id holds another key")

// disable disables keys created under the slot whose secret is lost, never
// one live in the pool, then (settle) settles the slot as orphaned. done is
// false when a disable failed: the slot stays open and is tried again.
func (r *Refiller) disable(ctx context.Context, s slot, ids []string, settle bool, rep *Report) (done bool, err error) {
	for _, id := range ids {
		n, err := r.backups.CountDocuments(ctx, bson.M{rotation.FieldUpstreamKeyID: id}, options.Count().SetLimit(1))
		if err == nil && n == 0 {
			n, err = r.keys.CountDocuments(ctx, bson.M{rotation.FieldUpstreamKeyID: id}, options.Count().SetLimit(1))
		}
		if err != nil {
			return false, fmt.Errorf("refill: is %s live: %w", id, err)
		}
		if n > 0 {
			r.log.Warn("a key under a journaled name is live in the pool; not disabling it", "slot", s.ID, "upstream_id", id)
			continue
		}
		if derr := r.cfg.Upstream.Disable(ctx, id); derr != nil && !errors.Is(derr, keyadmin.ErrNotFound) {
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			rep.Failed++
			r.failed(r.cfg.Now(), derr)
			r.log.Warn("could not disable a created key whose secret is lost; will retry", "slot", s.ID, "upstream_id", id, "err", derr)
			_, err := r.journal.UpdateOne(ctx, bson.M{"_id": s.ID}, bson.M{"$set": bson.M{"lastError": derr.Error(),
				"checkAt": r.cfg.Now().UTC().Add(max(r.cfg.SettleAfter, keyadmin.RetryAfter(derr)))}})
			return false, err
		}
		if err := r.after(ctx, s.ID, StepDisable); err != nil {
			return false, err
		}
	}
	if !settle {
		_, err := r.journal.UpdateOne(ctx, bson.M{"_id": s.ID}, bson.M{"$addToSet": bson.M{"orphanIds": bson.M{"$each": ids}}})
		return err == nil, err
	}
	return true, r.finish(ctx, s, stateOrphaned, ids, rep)
}

// finish settles the slot in state; rep nil records quietly (another
// executor counted it).
func (r *Refiller) finish(ctx context.Context, s slot, state string, orphans []string, rep *Report) error {
	now := r.cfg.Now().UTC()
	set := bson.M{"state": state, "settledAt": now}
	if len(orphans) > 0 {
		set["orphanIds"] = orphans
	}
	from := bson.A{statePending}
	if state == stateOrphaned {
		// A key found (or created late) after the slot was settled absent.
		from = append(from, stateAbsent)
	}
	res, err := r.journal.UpdateOne(ctx, bson.M{"_id": s.ID, "state": bson.M{"$in": from}}, bson.M{"$set": set, "$unset": bson.M{"secret": ""}})
	if err != nil {
		return fmt.Errorf("refill: settle %s: %w", s.ID, err)
	}
	if err := r.after(ctx, s.ID, StepDone); err != nil {
		return err
	}
	if rep == nil || res.ModifiedCount == 0 {
		return nil
	}
	switch state {
	case stateOrphaned:
		rep.Orphaned++
		r.log.Warn("a key was created upstream but its secret is lost; disabled it upstream", "slot", s.ID, "name", s.Name, "upstream_ids", orphans)
		rep.Events = append(rep.Events, notify.RefillFailedEvent(s.Pool, s.ID, s.Name,
			"created upstream but its secret is lost (the upstream shows it only once); disabled upstream", now))
	case stateAbsent:
		rep.Absent++
		why := s.LastError
		if why == "" {
			why = "no answer, and no key under its name upstream"
		}
		r.log.Warn("a journaled key was never created upstream", "slot", s.ID, "name", s.Name, "err", why)
		rep.Events = append(rep.Events, notify.RefillFailedEvent(s.Pool, s.ID, s.Name, "not created: "+why, now))
	}
	return nil
}
