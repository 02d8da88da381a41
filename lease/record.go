package lease

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/rotation/mongoidx"
)

// Record is one epoch's document.
type Record struct {
	ID         string     `bson:"_id"`
	Name       string     `bson:"name"`
	Epoch      int64      `bson:"epoch"`
	Holder     string     `bson:"holder"`
	AcquiredAt time.Time  `bson:"acquiredAt"`
	RenewedAt  time.Time  `bson:"renewedAt"`
	Renewals   int64      `bson:"renewals"`
	Released   bool       `bson:"released"`
	ReleasedAt *time.Time `bson:"releasedAt,omitempty"`
	// LeaseDurationMS is the holder's lease duration: a candidate waits the
	// longer of its own and this (client-go records it too), so replicas
	// with different settings during a rolling change never both lead.
	LeaseDurationMS int64 `bson:"leaseDurationMs,omitempty"`

	key string   // what changes when the record does
	bad []string // fields of the wrong type
}

// Latest returns the newest epoch's record, or nil when there is none.
func (l *Lease) Latest(ctx context.Context) (*Record, error) {
	return Latest(ctx, l.coll, l.cfg.Name)
}

// Latest returns the newest record of the lease name in coll, or nil.
// Records are decoded leniently (docs/design.md "Lease"): a field with the wrong type
// takes its zero value (not released), an epoch that is not a number is read
// from the _id, and the record still counts as held and observed, so a record
// edited by hand delays a takeover by the lease duration, never for ever.
func Latest(ctx context.Context, coll *mongo.Collection, name string) (*Record, error) {
	// Epochs of another type sort apart from numbers: read the few records
	// there are (cleanup keeps five) and pick the newest here.
	cur, err := coll.Find(ctx, bson.M{"name": name}, options.Find().SetSort(bson.D{{Key: "epoch", Value: -1}}).SetLimit(100))
	if err != nil {
		return nil, fmt.Errorf("read lease %s: %w", name, err)
	}
	defer cur.Close(ctx)
	var best *Record
	for cur.Next(ctx) {
		r := decodeRecord(name, cur.Current)
		if best == nil || r.Epoch > best.Epoch {
			best = r
		}
	}
	if err := cur.Err(); err != nil {
		return nil, fmt.Errorf("read lease %s: %w", name, err)
	}
	return best, nil
}

func decodeRecord(name string, raw bson.Raw) *Record {
	r := &Record{Name: name}
	var bad []string
	num := func(field string) (int64, bool) {
		v, err := raw.LookupErr(field)
		if err != nil {
			return 0, false
		}
		if n, ok := v.AsInt64OK(); ok {
			return n, true
		}
		if f, ok := v.DoubleOK(); ok && f == math.Trunc(f) && f >= 0 && f < math.MaxInt64 {
			return int64(f), true
		}
		bad = append(bad, field)
		return 0, false
	}
	r.ID, _ = raw.Lookup("_id").StringValueOK()
	var ok bool
	if r.Epoch, ok = num("epoch"); !ok {
		fmt.Sscanf(strings.TrimPrefix(r.ID, name+"/"), "%d", &r.Epoch)
	}
	if v, err := raw.LookupErr("holder"); err == nil {
		if r.Holder, ok = v.StringValueOK(); !ok {
			r.Holder, bad = v.String(), append(bad, "holder")
		}
	}
	if v, err := raw.LookupErr("released"); err == nil {
		if r.Released, ok = v.BooleanOK(); !ok {
			bad = append(bad, "released")
		}
	}
	for f, t := range map[string]*time.Time{"acquiredAt": &r.AcquiredAt, "renewedAt": &r.RenewedAt} {
		if v, err := raw.LookupErr(f); err == nil {
			*t = v.Time()
			if v.Type != bson.TypeDateTime {
				bad = append(bad, f)
			}
		}
	}
	r.Renewals, _ = num("renewals")
	r.LeaseDurationMS, _ = num("leaseDurationMs")
	sum := sha256.Sum256(raw)
	r.key = fmt.Sprintf("%d/%s/%d/%x", r.Epoch, r.Holder, r.Renewals, sum[:8])
	r.bad = bad
	return r
}

// floorID is the document that keeps the highest epoch ever taken for a
// lease name; every acquisition raises it before inserting its record.
func floorID(name string) string { return name + "/floor" }

func (l *Lease) bumpFloor(ctx context.Context, epoch int64) error {
	_, err := l.coll.UpdateOne(ctx, bson.M{"_id": floorID(l.cfg.Name)},
		bson.M{"$max": bson.M{"maxEpoch": epoch}, "$set": bson.M{"floorOf": l.cfg.Name}}, options.UpdateOne().SetUpsert(true))
	return err
}

// floor is the highest epoch known to have been used: the floor document,
// this candidate's memory and the caller's Floor.
func (l *Lease) floor(ctx context.Context) (int64, error) {
	l.mu.Lock()
	floor := l.maxSeen
	l.mu.Unlock()
	var raw bson.Raw
	err := l.coll.FindOne(ctx, bson.M{"_id": floorID(l.cfg.Name)}).Decode(&raw)
	switch {
	case errors.Is(err, mongo.ErrNoDocuments):
	case err != nil:
		return 0, err
	default:
		if e, ok := raw.Lookup("maxEpoch").AsInt64OK(); ok {
			floor = max(floor, e)
		} else {
			l.warnOnce("floor/"+raw.String(), "lease epoch floor document unreadable; ignoring it", "doc", raw.String())
		}
	}
	if l.cfg.Floor != nil {
		f, err := l.cfg.Floor(ctx)
		if err != nil {
			return 0, err
		}
		floor = max(floor, f)
	}
	return floor, nil
}

// maxHolderWait caps how long a recorded lease duration can make a
// candidate wait: ten times its own, and at least five minutes (docs/design.md
// "Lease"), so a hand-edited leaseDurationMs cannot block failover for ever.
func (l *Lease) maxHolderWait() time.Duration {
	return max(10*l.cfg.LeaseDuration, 5*time.Minute)
}

// holderWait is how long latest must be seen unchanged before a takeover:
// the longer of this candidate's lease duration and the holder's, capped.
func (l *Lease) holderWait(latest *Record) time.Duration {
	wait := l.cfg.LeaseDuration
	if len(latest.bad) > 0 {
		l.warnOnce("bad/"+latest.key, "lease record has fields of the wrong type; treating it as held and unchanged",
			"record", latest.ID, "fields", latest.bad)
	}
	ms := latest.LeaseDurationMS
	if ms <= 0 {
		return wait
	}
	capped := l.maxHolderWait()
	if ms > capped.Milliseconds() {
		l.warnOnce("cap/"+latest.key, "lease record's lease duration is beyond the cap; waiting the cap",
			"record", latest.ID, "lease_duration_ms", ms, "cap", capped)
		return max(wait, capped)
	}
	return max(wait, time.Duration(ms)*time.Millisecond)
}

// EnsureIndexes creates the index the latest-epoch query uses; idempotent.
func EnsureIndexes(ctx context.Context, coll *mongo.Collection) error {
	return mongoidx.Ensure(ctx, coll, mongoidx.Index{Name: "name_1_epoch_-1", Keys: bson.D{{Key: "name", Value: 1}, {Key: "epoch", Value: -1}}})
}
