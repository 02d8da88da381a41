package checker

import (
	"cmp"
	"math"
	"strconv"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// WriteFence says where the write-back's fence (docs/design.md "Lease") is
// checked.
type WriteFence int

const (
	// FenceAuto checks the fence in the filter, except on FerretDB v1,
	// where it is checked on read.
	FenceAuto WriteFence = iota
	// FenceInFilter puts the fence in each update's filter: the store
	// checks it when the update arrives, atomically on MongoDB, so even a
	// write delivered late never replaces a newer observation. FerretDB v1
	// finds a document by _id only for a filter on _id alone and reads
	// every key for such an update: a write-back of N keys costs O(N²).
	FenceInFilter
	// FenceOnRead checks the fence against the key as the cycle read it for
	// this check and updates by _id alone: one point write per key on any
	// store, but a write the network delivers late is not fenced.
	FenceOnRead
)

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
// observation, and a key is never fenced for ever. fenceRead.admits is the
// same predicate, evaluated by the checker.
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

// fenceRead is the last observation of a key as the cycle read it: the
// fence's inputs.
type fenceRead struct {
	epoch     storedEpoch
	check     int64 // lastSpendCheck, in milliseconds as stored
	checkDate bool  // lastSpendCheck is a date
	// secret is the apiKey read: with the fence in the filter, the update
	// applies only to that key, never to another secret put under its _id
	// since (re-keyed in place, or another key under the old id).
	secret string
}

// storedEpoch is a spendEpoch as stored: a number of a numeric BSON type
// (integer, or floating point: a double, or a decimal read as one), or not.
type storedEpoch struct {
	number, float bool
	i             int64
	f             float64
}

// fenceOf reads a key document's fence from the fields readKey has
// already looked up (lastSpendCheck, apiKey) and the rest of doc.
func fenceOf(lastCheck bson.RawValue, secret string, doc bson.Raw) fenceRead {
	var r fenceRead
	r.check, r.checkDate = lastCheck.DateTimeOK()
	r.secret = secret
	v := doc.Lookup(FieldEpoch)
	switch v.Type {
	case bson.TypeInt32:
		r.epoch = storedEpoch{number: true, i: int64(v.Int32())}
	case bson.TypeInt64:
		r.epoch = storedEpoch{number: true, i: v.Int64()}
	case bson.TypeDouble:
		r.epoch = storedEpoch{number: true, float: true, f: v.Double()}
	case bson.TypeDecimal128:
		f, err := strconv.ParseFloat(v.Decimal128().String(), 64)
		if err != nil {
			f = math.NaN()
		}
		r.epoch = storedEpoch{number: true, float: true, f: f}
	}
	return r
}

// admits says whether the fence's filter matches the key as read: the
// write of an observation made at at by the leader of epoch applies.
func (r fenceRead) admits(epoch int64, at time.Time) bool {
	c := r.epoch.compare(epoch)
	if c == -1 {
		return true
	}
	beyond := epoch <= math.MaxInt64-maxEpochLead && r.epoch.compare(epoch+maxEpochLead) == 1
	if r.epoch.number && c != 0 && !beyond {
		return false // a newer leader's, or NaN, which no comparison matches
	}
	// The filter carries at as a date, in milliseconds.
	return !r.checkDate || r.check < at.UnixMilli()
}

// compare compares the stored epoch with e exactly, as a query does: -1, 0 or
// 1, or 2 when they do not compare (not a number, or NaN).
func (s storedEpoch) compare(e int64) int {
	switch {
	case !s.number || (s.float && math.IsNaN(s.f)):
		return 2
	case !s.float:
		return cmp.Compare(s.i, e)
	case s.f < -(1 << 63):
		return -1
	case s.f >= 1<<63:
		return 1
	}
	whole := math.Trunc(s.f)
	if c := cmp.Compare(int64(whole), e); c != 0 {
		return c
	}
	return cmp.Compare(s.f, whole)
}
