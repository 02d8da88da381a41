// Package statuspage reads what an operator looks at — every key's spend
// against its threshold, its rate and expected time to the threshold, the
// backups left, the lease, the last cycles and the recent rotations — into
// one read-only view model, and renders it as a self-contained HTML page.
// `spendchecker status` (text and JSON) and the page at / on --listen read
// the store through the same Read (docs/operating.md, "Status page").
package statuspage

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/checker"
	"github.com/spendchecker/spendchecker/lease"
	"github.com/spendchecker/spendchecker/rotation"
	"github.com/spendchecker/spendchecker/rotation/history"
	"github.com/spendchecker/spendchecker/rotation/secret"
	"github.com/spendchecker/spendchecker/storeerr"
)

// The key document's fields, named by their owners (docs/design.md, "MongoDB schema").
const (
	fieldSpend      = rotation.FieldTotalSpend
	fieldLastCheck  = checker.FieldLastCheck
	fieldNextCheck  = checker.FieldNextCheck
	fieldRate       = checker.FieldRate
	fieldBudget     = checker.FieldBudget
	fieldCheckError = checker.FieldCheckError
	// A balance provider's reading (the remaining kind, docs/providers.md "Providers").
	fieldRemaining = checker.FieldRemaining
	fieldCurrency  = checker.FieldCurrency
	// checkNoReading is the check error of a clear answer without a figure
	// (a one-api unlimited token).
	checkNoReading = "no_reading"
)

// BackupCounter counts a pool's unused backups (*rotation.Rotator does).
type BackupCounter interface {
	BackupsAvailable(ctx context.Context) (int64, error)
}

// BudgetUsers lists the LiteLLM users shared by keys of a pool, whose
// personal-budget refusals hold the keys (*rotation.Rotator does).
type BudgetUsers interface {
	SharedBudgetUsers(ctx context.Context) (map[string][]string, error)
}

// CycleLog gives the daemon's last cycles, newest first (*Ring does).
type CycleLog interface {
	Recent() []Cycle
}

// Pool is one pool to read.
type Pool struct {
	Name      string
	Keys      *mongo.Collection
	History   *mongo.Collection
	Threshold float64
	// MinRemaining is set for a balance pool (the remaining kind): its keys
	// rotate when what remains is at or below it, not at Threshold.
	MinRemaining *float64
	Backups      BackupCounter
	// Users, when set, names the LiteLLM users keys share (the pool's
	// user-budget setting is auto: their refusals hold the keys).
	Users BudgetUsers
}

// Source is what Read reads: the pools, the lease, and optionally the
// daemon's recent cycles and each pool's recent rotations.
type Source struct {
	Pools     []Pool
	Leases    *mongo.Collection
	LeaseName string
	// Cycles, if set, lists the last cycles of this process (they are
	// not stored anywhere else).
	Cycles CycleLog
	// Rotations is how many recent rotations to read per pool (0: none).
	Rotations int
	// Now defaults to time.Now.
	Now func() time.Time
	// Reachability, if set, remembers since when the store has been
	// unreachable across reads (the daemon also feeds it from the driver).
	Reachability *Reachability
	// Unsorted reads the keys in the store's order, not by _id: for a
	// summary, where the order does not matter (FerretDB v1 sorts in memory).
	Unsorted bool
}

// Snapshot is the view model: what `status` prints and the page shows.
type Snapshot struct {
	GeneratedAt time.Time  `json:"generatedAt"`
	Lease       LeaseView  `json:"lease"`
	Pools       []PoolView `json:"pools"`
	Cycles      []Cycle    `json:"cycles,omitempty"`
	// Store is set when the store could not be reached: what was not read
	// is unknown, not empty.
	Store  *StoreView `json:"store,omitempty"`
	Errors []string   `json:"-"`
	// Pending: the daemon has not finished its first summary yet;
	// SummaryAt: when the summary shown was read (zero: just now).
	Pending   bool      `json:"-"`
	SummaryAt time.Time `json:"-"` // every section's error, one line each, for the exit code and the page's banner
}

// StoreView says the store is unreachable, since when and why.
type StoreView struct {
	Reachable bool      `json:"reachable"`
	Since     time.Time `json:"unreachableSince"`
	Error     string    `json:"error"`
}

// LeaseView is the newest lease record.
type LeaseView struct {
	Name string `json:"name"`
	// State is "held", "released" or "never" (no record), "" when the
	// read failed (Error says why).
	State      string     `json:"state"`
	Holder     string     `json:"holder,omitempty"`
	Epoch      int64      `json:"epoch,omitempty"`
	AcquiredAt *time.Time `json:"acquiredAt,omitempty"`
	// RenewedAt is by the holder's clock.
	RenewedAt *time.Time `json:"renewedAt,omitempty"`
	Error     string     `json:"error,omitempty"`
}

// PoolView is one pool.
type PoolView struct {
	Name           string  `json:"name"`
	KeysCollection string  `json:"keysCollection"`
	Threshold      float64 `json:"threshold"`
	// MinRemaining is set for a balance pool: it rotates its keys, not
	// Threshold (docs/providers.md, "Providers").
	MinRemaining *float64 `json:"minRemaining,omitempty"`
	// BackupsLeft is nil when counting them failed.
	BackupsLeft *int64    `json:"backupsLeft"`
	Keys        []KeyView `json:"keys"`
	// SharedBudgetUsers maps each LiteLLM user named by more than one key
	// (live, or rotated away for it) to those keys: a refusal of its
	// personal budget holds them instead of rotating.
	SharedBudgetUsers map[string][]string `json:"sharedBudgetUsers,omitempty"`
	Rotations         []history.Record    `json:"recentRotations,omitempty"`
	Error             string              `json:"error,omitempty"`
	// KeysUnknown: the keys could not be read (Keys is then empty, or
	// holds those read before the error); RotationsUnknown: the recent
	// rotations could not.
	KeysUnknown      bool `json:"keysUnknown,omitempty"`
	RotationsUnknown bool `json:"-"`
	// Summary is set by Summarise (the page's view), Keys then empty.
	Summary *KeySummary `json:"-"`
}

// KeyView is one key. Only the masked secret is ever carried.
type KeyView struct {
	ID           string `json:"id"`
	APIKeyMasked string `json:"apiKeyMasked"`
	Status       string `json:"status"`
	// CheckError says why the last check gave no spend acted on (e.g.
	// "unauthorized" with --rotate-unauthorized=false).
	CheckError string `json:"checkError,omitempty"`
	// BudgetUser is the LiteLLM user whose personal budget last refused
	// the key (rotation.FieldBudgetUser).
	BudgetUser string `json:"budgetUser,omitempty"`
	// Spend is nil until the key was checked; Budget when the upstream
	// reports none.
	Spend  *float64 `json:"spend"`
	Budget *float64 `json:"budget"`
	// Remaining is what remains of the key's account balance, in Currency,
	// for a balance provider (then Spend is nil). NoReading: the upstream
	// answered without a figure (a one-api unlimited token), so no spend
	// is shown as if it were a reading (docs/providers.md, "Providers").
	Remaining *float64 `json:"remaining,omitempty"`
	Currency  string   `json:"currency,omitempty"`
	NoReading bool     `json:"noReading,omitempty"`
	// PercentOfThreshold is 100 × spend / threshold.
	PercentOfThreshold *float64 `json:"percentOfThreshold"`
	// RatePerHour is the key's fastest spend rate seen (USD/hour),
	// the one the adaptive cadence plans with; nil when none is known.
	RatePerHour *float64 `json:"ratePerHour"`
	// ThresholdAt is when the key reaches the threshold at that rate,
	// counted from its last check: the earliest estimate. Nil when no
	// spend rate is known or the key is already over.
	ThresholdAt *time.Time `json:"thresholdAt"`
	Over        bool       `json:"overThreshold"`
	LastCheck   *time.Time `json:"lastCheck"`
	// NextCheck is when the cadence plans the next poll; nil or past: due.
	NextCheck *time.Time `json:"nextCheck"`
}

// Read reads the snapshot with every key in Pools[].Keys. It never stops
// at the first error: each section that could not be read carries its
// error (and Snapshot.Errors lists them), and the rest is shown. Once the
// store proves unreachable the sections left are not tried (each would
// wait and fail alike): they are unknown, and Snapshot.Store says since
// when. At 100,000 keys prefer Visit, which holds one key at a time.
func (s Source) Read(ctx context.Context) *Snapshot {
	return s.Visit(ctx, collect{})
}

// collect is the Visitor of Read: it keeps every key.
type collect struct{ NopVisitor }

func (collect) Key(p *PoolView, k KeyView) { p.Keys = append(p.Keys, k) }

// Visit reads the snapshot as Read does, but hands each key to v as it is
// read instead of keeping it: Pools[].Keys stay empty. The page, `status`
// and the daemon's summary all read through it.
func (s Source) Visit(ctx context.Context, v Visitor) *Snapshot {
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	snap := &Snapshot{GeneratedAt: now().UTC(), Lease: LeaseView{Name: s.LeaseName}}
	r := &reader{}
	if s.Leases != nil {
		snap.Lease = readLease(ctx, s.Leases, s.LeaseName, r)
		if snap.Lease.Error != "" && snap.Lease.Error != unreachable {
			snap.Errors = append(snap.Errors, "lease: "+snap.Lease.Error)
		}
	}
	s.markDown(snap, r)
	v.Lease(snap)
	snap.Pools = make([]PoolView, 0, len(s.Pools))
	for _, p := range s.Pools {
		snap.Pools = append(snap.Pools, PoolView{})
		pv := &snap.Pools[len(snap.Pools)-1]
		s.readPool(ctx, p, r, snap, pv, v)
		if pv.Error != "" && pv.Error != unreachable {
			snap.Errors = append(snap.Errors, fmt.Sprintf("pool %s: %s", p.Name, pv.Error))
		}
	}
	if s.Cycles != nil {
		snap.Cycles = s.Cycles.Recent()
	}
	switch {
	case r.down != nil:
		s.markDown(snap, r)
	case s.Reachability != nil && (s.Leases != nil || len(s.Pools) > 0):
		s.Reachability.Up()
	}
	v.End(snap)
	return snap
}

// markDown fills snap.Store once a read found the store unreachable.
func (s Source) markDown(snap *Snapshot, r *reader) {
	if r.down == nil || snap.Store != nil {
		return
	}
	since := snap.GeneratedAt
	if s.Reachability != nil {
		s.Reachability.Down(since)
		since, _ = s.Reachability.Since()
	}
	snap.Store = &StoreView{Since: since.UTC(), Error: storeerr.Reason(r.down)}
	snap.Errors = append([]string{"store unreachable since " + since.UTC().Format(time.RFC3339) + ": " + snap.Store.Error}, snap.Errors...)
}

func readLease(ctx context.Context, leases *mongo.Collection, name string, r *reader) LeaseView {
	lv := LeaseView{Name: name}
	var rec *lease.Record
	err := r.read(func() (err error) { rec, err = lease.Latest(ctx, leases, name); return err })
	switch {
	case err != nil:
		lv.Error = r.line(err)
	case rec == nil:
		lv.State = "never"
	default:
		lv.State = "held"
		if rec.Released {
			lv.State = "released"
		}
		lv.Holder, lv.Epoch = rec.Holder, rec.Epoch
		lv.AcquiredAt, lv.RenewedAt = timePtr(rec.AcquiredAt), timePtr(rec.RenewedAt)
	}
	return lv
}

// reader runs a Read's store reads: once one finds the store unreachable,
// the rest are not tried.
type reader struct {
	down error // the first error that found the store unreachable
}

// errNotTried stands for a read not tried because the store is down.
var errNotTried = errors.New("not read: the store is unreachable")

// unreachable is the error of a section not read for the store being
// unreachable: Snapshot.Store says why, once for all of them.
const unreachable = "unknown: the store is unreachable"

func (r *reader) read(f func() error) error {
	if r.down != nil {
		return errNotTried
	}
	err := f()
	if storeerr.Unreachable(err) {
		r.down = err
	}
	return err
}

// line is err in one line, or unreachable.
func (r *reader) line(err error) string {
	if errors.Is(err, errNotTried) || storeerr.Unreachable(err) {
		return unreachable
	}
	return storeerr.Line(err)
}

func (s Source) readPool(ctx context.Context, p Pool, r *reader, snap *Snapshot, pv *PoolView, v Visitor) {
	*pv = PoolView{Name: p.Name, KeysCollection: p.Keys.Name(), Threshold: p.Threshold, MinRemaining: p.MinRemaining, Keys: []KeyView{}}
	var errs []string
	note := func(err error) {
		if e := r.line(err); !slices.Contains(errs, e) {
			errs = append(errs, e)
		}
	}
	if p.Backups != nil {
		var n int64
		if err := r.read(func() (err error) { n, err = p.Backups.BackupsAvailable(ctx); return err }); err != nil {
			note(err)
		} else {
			pv.BackupsLeft = &n
		}
	}
	v.PoolStart(pv)
	err := r.read(func() error {
		return ScanKeys(ctx, p.Keys, p.Threshold, p.MinRemaining, s.Unsorted, func(k KeyView) { v.Key(pv, k) })
	})
	if err != nil {
		pv.KeysUnknown = true
		note(err)
	}
	if p.Users != nil {
		var shared map[string][]string
		if err := r.read(func() (err error) { shared, err = p.Users.SharedBudgetUsers(ctx); return err }); err != nil {
			note(err)
		} else if len(shared) > 0 {
			pv.SharedBudgetUsers = shared
		}
	}
	if s.Rotations > 0 && p.History != nil {
		var recs []history.Record
		err := r.read(func() (err error) { recs, err = recentRotations(ctx, p.History, s.Rotations); return err })
		if err != nil {
			pv.RotationsUnknown = true
			note(err)
		}
		for i := range recs {
			recs[i].Pool = p.Name
		}
		pv.Rotations = recs
	}
	pv.Error = strings.Join(errs, "; ")
	s.markDown(snap, r) // what PoolEnd writes may say since when the store is down
	v.PoolEnd(pv)
}

func keyView(d bson.Raw, threshold float64, minRemaining *float64) KeyView {
	apiKey, _ := d.Lookup(rotation.FieldAPIKey).StringValueOK()
	k := KeyView{ID: idString(d.Lookup(rotation.FieldID)), APIKeyMasked: secret.Mask(apiKey)}
	k.Status, _ = d.Lookup(rotation.FieldStatus).StringValueOK()
	k.CheckError, _ = d.Lookup(fieldCheckError).StringValueOK()
	k.BudgetUser, _ = d.Lookup(rotation.FieldBudgetUser).StringValueOK()
	k.Spend = number(d, fieldSpend)
	k.Budget = number(d, fieldBudget)
	k.LastCheck = date(d, fieldLastCheck)
	k.NextCheck = date(d, fieldNextCheck)
	k.NoReading = k.CheckError == checkNoReading
	if of, ok := d.Lookup(checker.FieldReadingOf).StringValueOK(); ok && of != secret.Fingerprint(apiKey) {
		// The reading stored is another secret's (re-keyed in place): the
		// key's own is not read yet.
		k.Spend, k.Budget = nil, nil
		return k
	}
	if k.Remaining = number(d, fieldRemaining); k.Remaining != nil {
		// A balance, not a spend (docs/providers.md, "Providers").
		k.Currency, _ = d.Lookup(fieldCurrency).StringValueOK()
		k.Spend = nil
		if minRemaining != nil {
			k.Over = *k.Remaining <= *minRemaining
			if r := number(d, fieldRate); r != nil && *r > 0 && !k.Over && k.LastCheck != nil {
				// The rate is the balance's fall: the time to the minimum.
				if secs := (*k.Remaining - *minRemaining) / *r; secs < float64(100*365*24*3600) {
					at := k.LastCheck.Add(time.Duration(secs * float64(time.Second)))
					k.ThresholdAt = &at
				}
			}
		}
		if r := number(d, fieldRate); r != nil && *r > 0 {
			k.RatePerHour = finite(*r * 3600)
		}
		return k
	}
	if k.Spend != nil && threshold > 0 {
		k.PercentOfThreshold = finite(100 * *k.Spend / threshold)
		k.Over = *k.Spend >= threshold
	}
	if r := number(d, fieldRate); r != nil && *r > 0 {
		k.RatePerHour = finite(*r * 3600)
		if k.Spend != nil && !k.Over && k.LastCheck != nil {
			secs := (threshold - *k.Spend) / *r
			if secs < float64(100*365*24*3600) {
				at := k.LastCheck.Add(time.Duration(secs * float64(time.Second)))
				k.ThresholdAt = &at
			}
		}
	}
	return k
}

// recentRotations reads a pool's newest n history records, newest first.
func recentRotations(ctx context.Context, coll *mongo.Collection, n int) ([]history.Record, error) {
	cur, err := coll.Find(ctx, bson.M{}, options.Find().SetSort(bson.D{{Key: "rotatedAt", Value: -1}}).SetLimit(int64(n)))
	if err != nil {
		return nil, fmt.Errorf("read history: %w", err)
	}
	defer cur.Close(context.WithoutCancel(ctx))
	out := []history.Record{}
	for cur.Next(ctx) {
		out = append(out, history.Lenient(cur.Current))
	}
	if err := cur.Err(); err != nil {
		return out, fmt.Errorf("read history: %w", err)
	}
	return out, nil
}

func idString(v bson.RawValue) string {
	if s, ok := v.StringValueOK(); ok {
		return s
	}
	if oid, ok := v.ObjectIDOK(); ok {
		return oid.Hex()
	}
	return v.String()
}

// finite is v, or nil (unknown, null in JSON) when scaling a finite
// reading overflowed: JSON has no Inf or NaN.
func finite(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// number reads a finite number; anything else is unknown.
func number(d bson.Raw, key string) *float64 {
	v, err := d.LookupErr(key)
	if err != nil {
		return nil
	}
	f, ok := v.AsFloat64OK()
	if !ok || math.IsNaN(f) || math.IsInf(f, 0) {
		return nil
	}
	return &f
}

func date(d bson.Raw, key string) *time.Time {
	t, ok := d.Lookup(key).TimeOK()
	if !ok {
		return nil
	}
	return &t
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
