// Package history holds the spend-history records: one per real rotation,
// written by the rotator inside its saga, and queried by `spendchecker history`.
package history

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/rotation/mongoidx"
)

// Record is one spend-history document (docs/design.md, "MongoDB schema"). Its _id is the
// rotation id, so inserting it twice is harmless.
type Record struct {
	ID             string    `bson:"_id" json:"id"`
	Pool           string    `bson:"pool" json:"pool"`
	KeyID          string    `bson:"keyId" json:"keyId"`
	APIKeyMasked   string    `bson:"apiKeyMasked" json:"apiKeyMasked"`
	Spend          float64   `bson:"spend" json:"spend"`
	Threshold      float64   `bson:"threshold" json:"threshold"`
	Budget         *float64  `bson:"budget" json:"budget"`
	CheckedAt      time.Time `bson:"checkedAt" json:"checkedAt"`
	WasActive      bool      `bson:"wasActive" json:"wasActive"`
	RotatedAt      time.Time `bson:"rotatedAt" json:"rotatedAt"`
	RotationReason string    `bson:"rotationReason" json:"rotationReason"`
	NewKeyID       string    `bson:"newKeyId" json:"newKeyId"`
	Provider       string    `bson:"provider" json:"provider"`
	Instance       string    `bson:"instance" json:"instance"`
	LeaseEpoch     int64     `bson:"leaseEpoch" json:"leaseEpoch"`
	// Remaining is the account balance read, for a balance provider (then
	// Spend means nothing), in Currency (docs/providers.md).
	Remaining *float64 `bson:"remaining,omitempty" json:"remaining,omitempty"`
	Currency  string   `bson:"currency,omitempty" json:"currency,omitempty"`
}

// MarshalJSON writes a number that is not finite (an old record's "NaN")
// as null: JSON has no such number, and one would fail the whole listing.
func (r Record) MarshalJSON() ([]byte, error) {
	type plain Record
	out := struct {
		plain
		Spend     *float64 `json:"spend"`
		Threshold *float64 `json:"threshold"`
		Budget    *float64 `json:"budget"`
		// Only a balance record has one: absent, or null when not finite.
		Remaining any `json:"remaining,omitempty"`
	}{plain(r), finite(&r.Spend), finite(&r.Threshold), finite(r.Budget), nil}
	if r.Remaining != nil {
		out.Remaining = json.RawMessage("null")
		if v := finite(r.Remaining); v != nil {
			out.Remaining = *v
		}
	}
	return json.Marshal(out)
}

func finite(v *float64) *float64 {
	if v == nil || math.IsNaN(*v) || math.IsInf(*v, 0) {
		return nil
	}
	return v
}

// Observation is what the caller of a rotation knows about the key's spend;
// the rotator completes it into a Record. Spend zero with CheckedAt zero
// means no reading was taken: the record keeps the key's last recorded
// spend (its totalSpend).
type Observation struct {
	Spend      float64
	Threshold  float64
	Budget     *float64
	CheckedAt  time.Time
	Provider   string
	Instance   string
	LeaseEpoch int64
	Remaining  *float64
	Currency   string
}

// Store reads a pool's history collection.
type Store struct {
	coll *mongo.Collection
}

// NewStore returns a Store over coll.
func NewStore(coll *mongo.Collection) *Store { return &Store{coll: coll} }

// EnsureIndexes creates the indexes queries rely on; idempotent.
func (s *Store) EnsureIndexes(ctx context.Context) error {
	return mongoidx.Ensure(ctx, s.coll,
		mongoidx.Index{Name: "rotatedAt_1", Keys: bson.D{{Key: "rotatedAt", Value: 1}}},
		mongoidx.Index{Name: "keyId_1", Keys: bson.D{{Key: "keyId", Value: 1}}},
	)
}

// Since returns the records rotated at or after t, oldest first.
func (s *Store) Since(ctx context.Context, t time.Time) ([]Record, error) {
	var out []Record
	err := s.EachSince(ctx, t, func(r Record) error { out = append(out, r); return nil })
	return out, err
}

// EachSince hands each record rotated at or after t to each, oldest first,
// as it is read: one cursor batch is held at a time, however long the
// window. It stops at each's first error and returns it.
func (s *Store) EachSince(ctx context.Context, t time.Time, each func(Record) error) error {
	cur, err := s.coll.Find(ctx, bson.M{"rotatedAt": bson.M{"$gte": t}}, options.Find().SetSort(bson.D{{Key: "rotatedAt", Value: 1}}).SetBatchSize(500))
	if err != nil {
		return fmt.Errorf("history query: %w", err)
	}
	defer cur.Close(context.WithoutCancel(ctx))
	for cur.Next(ctx) {
		if err := each(Lenient(cur.Current)); err != nil {
			return err
		}
	}
	if err := cur.Err(); err != nil {
		return fmt.Errorf("history query: %w", err)
	}
	return nil
}

// Lenient reads a history document as leniently as the other documents
// (docs/design.md, "MongoDB schema"): older deployments wrote an ObjectId _id and
// numbers of other BSON types, so each field is taken when it can be read
// as what it means and left zero otherwise; one odd record never hides the
// others.
func Lenient(d bson.Raw) Record {
	str := func(key string) string {
		v, err := d.LookupErr(key)
		if err != nil {
			return ""
		}
		switch v.Type {
		case bson.TypeString:
			return v.StringValue()
		case bson.TypeObjectID:
			return v.ObjectID().Hex()
		case bson.TypeInt32, bson.TypeInt64:
			n, _ := v.AsInt64OK()
			return strconv.FormatInt(n, 10)
		case bson.TypeNull, bson.TypeUndefined:
			return ""
		}
		return v.String()
	}
	num := func(key string) (float64, bool) {
		v, err := d.LookupErr(key)
		if err != nil {
			return 0, false
		}
		if f, ok := v.AsFloat64OK(); ok {
			return f, true
		}
		if s, ok := v.StringValueOK(); ok {
			f, err := strconv.ParseFloat(s, 64)
			return f, err == nil
		}
		return 0, false
	}
	date := func(key string) time.Time {
		t, _ := d.Lookup(key).TimeOK()
		return t
	}
	r := Record{
		ID: str("_id"), Pool: str("pool"), KeyID: str("keyId"), APIKeyMasked: str("apiKeyMasked"),
		CheckedAt: date("checkedAt"), RotatedAt: date("rotatedAt"), RotationReason: str("rotationReason"),
		NewKeyID: str("newKeyId"), Provider: str("provider"), Instance: str("instance"),
	}
	r.Spend, _ = num("spend")
	r.Threshold, _ = num("threshold")
	if b, ok := num("budget"); ok {
		r.Budget = &b
	}
	if e, ok := num("leaseEpoch"); ok {
		r.LeaseEpoch = int64(e)
	}
	if v, ok := num("remaining"); ok {
		r.Remaining, r.Currency = &v, str("currency")
	}
	r.WasActive, _ = d.Lookup("wasActive").BooleanOK()
	return r
}

// TTLIndex reports a TTL index on the history collection, if any: older
// deployments carried one on checkedAt that silently deletes history.
func (s *Store) TTLIndex(ctx context.Context) (name string, after time.Duration, found bool, err error) {
	specs, err := mongoidx.Specs(ctx, s.coll)
	if err != nil {
		return "", 0, false, err
	}
	name, after, found = TTLOf(specs)
	return name, after, found, nil
}

// TTLOf finds a TTL index among index specifications.
func TTLOf(specs []bson.Raw) (name string, after time.Duration, found bool) {
	for _, spec := range specs {
		v, err := spec.LookupErr("expireAfterSeconds")
		if err != nil {
			continue
		}
		secs, ok := v.AsInt64OK()
		if !ok {
			if f, fok := v.AsFloat64OK(); fok {
				secs, ok = int64(f), true
			}
		}
		if !ok {
			continue
		}
		name, _ = spec.Lookup("name").StringValueOK()
		return name, time.Duration(secs) * time.Second, true
	}
	return "", 0, false
}
