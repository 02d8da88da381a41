// Package retire disables upstream the keys the rotator retired: once a
// rotation is done (never one that undid itself, never one in progress)
// and a grace period has passed, the old key is disabled through the
// upstream's management API, and optionally deleted some days later
// (docs/refill.md). Everything is recorded on the rotation's archive
// document; every step is idempotent and each attempt is claimed by a
// unique insert, so replicas, crashes and a deposed leader disable a key
// at most once per attempt and record it once.
package retire

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readconcern"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"

	"github.com/spendchecker/spendchecker/keyadmin"
	"github.com/spendchecker/spendchecker/rotation"
	"github.com/spendchecker/spendchecker/rotation/mongoidx"
)

// Collection holds the claims of retire attempts and each pool's start
// marker.
const Collection = "key_retirements"

// Fields retire writes on an archive document (rotation.ArchiveCollection).
const (
	FieldRetiredAt  = "retiredUpstreamAt" // when the key was disabled (or found gone) upstream
	FieldOutcome    = "retireOutcome"     // one of the Outcome values
	FieldUpstreamID = "retireUpstreamId"  // the id the upstream knows the key by
	FieldAttempts   = "retireAttempts"
	FieldLastError  = "retireLastError"
	FieldNextAt     = "retireNextAt" // no attempt before this (backoff)
	// FieldNotBefore: no disable before this, the end of the grace period,
	// set when a pass first sees the rotation done.
	FieldNotBefore   = "retireNotBefore"
	FieldDeletedAt   = "deletedUpstreamAt"
	FieldDelAttempts = "deleteAttempts"
	FieldDelError    = "deleteLastError"
	FieldDelNextAt   = "deleteNextAt"
	// FieldRecheckUntil: a key recorded live after a disable whose outcome
	// is unknown is looked up each pass until then, in case the upstream
	// carries that disable out late.
	FieldRecheckUntil = "retireRecheckUntil"
	FieldReenabledAt  = "retireReenabledAt" // when a late disable was last undone
	// FieldRedisabledAt: when a retired key found enabled again (an
	// enable the upstream carried out late) was last disabled again.
	FieldRedisabledAt = "retireRedisabledAt"
)

// Outcomes recorded in FieldOutcome. Each settles the archive document:
// no further disable is tried.
const (
	OutcomeDisabled = "disabled"  // disabled upstream
	OutcomeNotFound = "not_found" // the upstream does not know the key: nothing left to disable
	// OutcomeNoUpstreamID: the key cannot be named to the upstream
	// (OpenRouter's hash is in neither the document's upstreamKeyId nor the
	// pool's upstream-key-ids); left to the operator.
	OutcomeNoUpstreamID = "no_upstream_id"
	// OutcomeLive: the secret is live again (a key or an unused backup):
	// never disabled. A later rotation of that key retires it.
	OutcomeLive = "live"
)

// journalDone is the rotation journal's state of a completed rotation
// (docs/design.md, "MongoDB schema").
const journalDone = "done"

// Defaults of Config.
const (
	DefaultGrace      = 60 * time.Second
	DefaultBatch      = 200
	DefaultStaleAfter = 5 * time.Minute
	DefaultLateWithin = time.Hour
	maxBackoff        = time.Hour
	// rescanEvery: a full scan from the pool's start marker, in case a
	// rotation was marked done with a clock behind the watermark.
	rescanEvery = time.Hour
)

// Upstream is what retire needs of a management API (*keyadmin.Client).
type Upstream interface {
	Disable(ctx context.Context, id string) error
	Enable(ctx context.Context, id string) error
	Delete(ctx context.Context, id string) error
	Lookup(ctx context.Context, id string) (keyadmin.Key, error)
	IDOf(secret string) string
}

// Step names a point of an attempt, for AfterStep.
type Step int

const (
	StepClaim    Step = iota + 1 // the attempt is claimed
	StepUpstream                 // the upstream answered (disable or delete)
	StepRecord                   // the outcome is on the archive document
)

func (s Step) String() string {
	switch s {
	case StepClaim:
		return "claim"
	case StepUpstream:
		return "upstream"
	case StepRecord:
		return "record"
	}
	return "?"
}

// Config configures a Retirer.
type Config struct {
	Pool     rotation.Pool
	Upstream Upstream
	// Grace is how long after a rotation finished its old key is disabled,
	// so requests that already hold it (the proxy reloading) are not cut.
	// Default DefaultGrace.
	Grace time.Duration
	// DeleteAfter deletes a disabled key upstream this long after it was
	// disabled (0: never).
	DeleteAfter time.Duration
	// IDs maps a key's _id to its upstream id, for documents without
	// upstreamKeyId (the pool's upstream-key-ids).
	IDs map[string]string
	// Live are the collections a secret is live in besides the pool's keys
	// and unused backups (other pools' keys and backups).
	Live []LiveCollection
	// Owner names this process in claims; Epoch its lease epoch.
	Owner string
	Epoch func() int64
	Now   func() time.Time
	// StaleAfter: an attempt claimed this long ago without an outcome is
	// taken as failed (the process died in it). Default DefaultStaleAfter.
	StaleAfter time.Duration
	// LateWithin bounds how late the upstream may carry out a disable
	// whose answer never came: a key found live after such a disable is
	// looked up, and enabled again if disabled, until then. Default
	// DefaultLateWithin.
	LateWithin time.Duration
	// Batch is how many rotations one pass reads (default DefaultBatch).
	Batch  int
	DryRun bool
	Logger *slog.Logger
	// AfterStep, when set, runs after each step; an error aborts the pass
	// there, as a crash would. For tests.
	AfterStep func(ctx context.Context, rotationID string, s Step) error
}

// LiveCollection is a collection holding live secrets: keys (every
// document), or backups (Backups: those not used).
type LiveCollection struct {
	Name    string
	Backups bool
}

// Retirer retires one pool's rotated keys.
type Retirer struct {
	cfg      Config
	log      *slog.Logger
	journal  *mongo.Collection
	archive  *mongo.Collection
	claims   *mongo.Collection
	live     []liveColl
	from     time.Time // watermark: no unsettled rotation finished before it
	rescanAt time.Time
}

type liveColl struct {
	c       *mongo.Collection
	backups bool
}

// durable: decisions rest on majority-journaled writes and majority reads
// from the primary, as the rotator's (docs/reliability.md).
func durable() *options.CollectionOptionsBuilder {
	j := true
	return options.Collection().
		SetWriteConcern(&writeconcern.WriteConcern{W: "majority", Journal: &j}).
		SetReadConcern(readconcern.Majority()).
		SetReadPreference(readpref.Primary())
}

// New returns a Retirer for the pool in db.
func New(db *mongo.Database, cfg Config) (*Retirer, error) {
	if err := cfg.Pool.Validate(); err != nil {
		return nil, err
	}
	if cfg.Upstream == nil {
		return nil, errors.New("retire: no upstream")
	}
	if cfg.Grace <= 0 {
		cfg.Grace = DefaultGrace
	}
	if cfg.StaleAfter <= 0 {
		cfg.StaleAfter = DefaultStaleAfter
	}
	if cfg.LateWithin <= 0 {
		cfg.LateWithin = DefaultLateWithin
	}
	if cfg.Batch <= 0 {
		cfg.Batch = DefaultBatch
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Epoch == nil {
		cfg.Epoch = func() int64 { return 0 }
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Retirer{cfg: cfg, log: log.With("pool", cfg.Pool.Name),
		journal: db.Collection(rotation.JournalCollection, durable()),
		archive: db.Collection(rotation.ArchiveCollection, durable()),
		claims:  db.Collection(Collection, durable()),
	}
	live := append([]LiveCollection{{Name: cfg.Pool.KeysCollection}, {Name: cfg.Pool.BackupsCollection, Backups: true}}, cfg.Live...)
	seen := map[LiveCollection]bool{}
	for _, l := range live {
		if !seen[l] {
			seen[l] = true
			r.live = append(r.live, liveColl{c: db.Collection(l.Name, durable()), backups: l.Backups})
		}
	}
	return r, nil
}

// EnsureIndexes writes the pool's start marker (the first time) and
// creates the journal index a pass reads done rotations by, and with
// DeleteAfter the archive's index of keys due for deletion; idempotent.
func (r *Retirer) EnsureIndexes(ctx context.Context) error {
	if _, err := r.since(ctx); err != nil {
		return err
	}
	err := mongoidx.Ensure(ctx, r.journal, mongoidx.Index{Name: "pool_1_state_1_finishedAt_1",
		Keys: bson.D{{Key: "pool", Value: 1}, {Key: "state", Value: 1}, {Key: "finishedAt", Value: 1}}})
	if err == nil {
		err = mongoidx.Ensure(ctx, r.archive, mongoidx.Index{Name: FieldRecheckUntil + "_1", Keys: bson.D{{Key: FieldRecheckUntil, Value: 1}}})
	}
	if err != nil || r.cfg.DeleteAfter <= 0 {
		return err
	}
	return mongoidx.Ensure(ctx, r.archive, mongoidx.Index{Name: FieldOutcome + "_1_" + FieldRetiredAt + "_1",
		Keys: bson.D{{Key: FieldOutcome, Value: 1}, {Key: FieldRetiredAt, Value: 1}}})
}

// Report counts what a pass did.
type Report struct {
	Retired  int // disabled upstream
	NotFound int // the upstream did not know the key: recorded as retired
	Skipped  int // settled without a disable: no upstream id, or live again
	Failed   int // attempts that failed; retried after a backoff
	Deleted  int // deleted upstream (DeleteAfter)
	// Reenabled: live keys found disabled by a disable the upstream
	// carried out late, and enabled again.
	Reenabled int
	// Redisabled: retired keys, no longer live, found enabled by an enable
	// the upstream carried out late, and disabled again.
	Redisabled int
	// Waiting: rotations within their grace period, their backoff, or
	// another executor's attempt.
	Waiting int
	// Overdue: rotations read whose key is still not retired OverdueAfter
	// past the end of their grace (what verify calls retire_overdue).
	Overdue int
	// Would lists, in a dry run, the rotations whose old key a pass would
	// disable (or delete).
	Would []Planned
}

// Planned is one action a dry run would take.
type Planned struct {
	Action, RotationID, KeyID, APIKeyMasked string
}

// rotationEntry is what a pass reads of a journal entry.
type rotationEntry struct {
	ID         string    `bson:"_id"`
	OldKeyID   string    `bson:"oldKeyId"`
	State      string    `bson:"state"`
	FinishedAt time.Time `bson:"finishedAt"`
}

// archived is what a pass reads of an archive document.
type archived struct {
	ID          string     `bson:"_id"`
	Document    bson.Raw   `bson:"document"`
	RetiredAt   *time.Time `bson:"retiredUpstreamAt"`
	Outcome     string     `bson:"retireOutcome"`
	UpstreamID  string     `bson:"retireUpstreamId"`
	Attempts    int        `bson:"retireAttempts"`
	NextAt      *time.Time `bson:"retireNextAt"`
	NotBefore   *time.Time `bson:"retireNotBefore"`
	DeletedAt   *time.Time `bson:"deletedUpstreamAt"`
	DelAttempts int        `bson:"deleteAttempts"`
	DelNextAt   *time.Time `bson:"deleteNextAt"`
	// RecheckUntil: watched for a late disable until then (late.go).
	RecheckUntil *time.Time `bson:"retireRecheckUntil"`
	// UndoneAt: the rotation undid itself; the copy records no deletion.
	UndoneAt *time.Time `bson:"undoneAt"`
}

// Run is one pass: it disables the old keys of the pool's done rotations
// past their grace, retries failed attempts whose backoff ended, and
// deletes keys disabled DeleteAfter ago. An error says the pass stopped
// early; what it did is in the report and on the archive documents.
func (r *Retirer) Run(ctx context.Context) (Report, error) {
	var rep Report
	since, err := r.since(ctx)
	if err != nil || since.IsZero() {
		return rep, err
	}
	now := r.cfg.Now()
	if r.from.Before(since) || now.After(r.rescanAt) {
		r.from, r.rescanAt = since, now.Add(rescanEvery)
	}
	prev, err := r.lastPass(ctx)
	if err != nil {
		return rep, err
	}
	// Rotations within their grace too: the pass that first sees one
	// records when its grace ends.
	cur, err := r.journal.Find(ctx, bson.M{"pool": r.cfg.Pool.Name, "state": journalDone,
		"finishedAt": bson.M{"$gte": r.from}},
		options.Find().SetSort(bson.D{{Key: "finishedAt", Value: 1}}).SetLimit(int64(r.cfg.Batch)).
			SetProjection(bson.M{"_id": 1, "oldKeyId": 1, "state": 1, "finishedAt": 1}))
	if err != nil {
		return rep, fmt.Errorf("retire: read done rotations: %w", err)
	}
	var entries []rotationEntry
	if err := cur.All(ctx, &entries); err != nil {
		return rep, fmt.Errorf("retire: read done rotations: %w", err)
	}
	docs, err := r.archived(ctx, entries)
	if err != nil {
		return rep, err
	}
	// Every rotation read is seen now, before any disable: a pass that
	// stops early leaves none unrecorded.
	due := map[string]time.Time{}
	for _, e := range entries {
		if a, ok := docs[e.ID]; ok && a.Outcome == "" && a.UndoneAt == nil {
			if due[e.ID], err = r.due(ctx, e, a, prev, now); err != nil {
				return rep, err
			}
		}
	}
	if err := r.markPass(ctx, now); err != nil {
		return rep, err
	}
	watermark := time.Time{}
	for _, e := range entries {
		a, ok := docs[e.ID]
		if !ok {
			// Done without an archive copy: the old key was gone when the
			// rotation archived (deleted by someone else). Nothing known
			// to disable.
			continue
		}
		if a.Outcome != "" {
			continue // settled
		}
		if a.UndoneAt != nil {
			// An undone rotation a late journal mark left done: it deleted
			// nothing, and the key may be live (re-keyed in place).
			continue
		}
		if watermark.IsZero() {
			watermark = e.FinishedAt
		}
		if now.Before(due[e.ID]) {
			rep.Waiting++
			continue
		}
		settled := rep.Retired + rep.NotFound + rep.Skipped
		if err := r.disable(ctx, e, a, now, &rep); err != nil {
			return rep, err
		}
		if rep.Retired+rep.NotFound+rep.Skipped == settled && !r.cfg.DryRun && now.After(due[e.ID].Add(OverdueAfter)) {
			rep.Overdue++
		}
	}
	switch {
	case !watermark.IsZero():
		r.from = watermark
	case len(entries) > 0:
		r.from = entries[len(entries)-1].FinishedAt
	}
	if err := r.recheck(ctx, now, &rep); err != nil {
		return rep, err
	}
	if r.cfg.DeleteAfter > 0 {
		return rep, r.deleteDue(ctx, now, &rep)
	}
	return rep, nil
}

// since reads the pool's start marker, writing it at the first pass:
// rotations that finished before retire was first turned on are left alone.
func (r *Retirer) since(ctx context.Context) (time.Time, error) {
	id := "since/" + r.cfg.Pool.Name
	var m struct {
		Since time.Time `bson:"since"`
	}
	err := r.claims.FindOne(ctx, bson.M{"_id": id}).Decode(&m)
	if err == nil {
		return m.Since, nil
	}
	if !errors.Is(err, mongo.ErrNoDocuments) {
		return time.Time{}, fmt.Errorf("retire: read start marker: %w", err)
	}
	now := r.cfg.Now().UTC().Truncate(time.Millisecond)
	if r.cfg.DryRun {
		return now, nil
	}
	_, err = r.claims.InsertOne(ctx, bson.M{"_id": id, "pool": r.cfg.Pool.Name, "since": now, "owner": r.cfg.Owner})
	if err != nil && !mongo.IsDuplicateKeyError(err) {
		return time.Time{}, fmt.Errorf("retire: write start marker: %w", err)
	}
	if err != nil {
		return r.since(ctx) // another replica wrote it first: its time counts
	}
	r.log.Info("retiring rotated keys upstream from now on; earlier rotations are left alone", "since", now)
	return now, nil
}

// archived reads the archive documents of the entries (the copy under the
// rotation id: the old key as it was when deleted).
func (r *Retirer) archived(ctx context.Context, entries []rotationEntry) (map[string]archived, error) {
	out := map[string]archived{}
	if len(entries) == 0 {
		return out, nil
	}
	ids := make([]string, len(entries))
	for i, e := range entries {
		ids[i] = e.ID
	}
	cur, err := r.archive.Find(ctx, bson.M{"_id": bson.M{"$in": ids}})
	if err != nil {
		return nil, fmt.Errorf("retire: read archive: %w", err)
	}
	var docs []archived
	if err := cur.All(ctx, &docs); err != nil {
		return nil, fmt.Errorf("retire: read archive: %w", err)
	}
	for _, d := range docs {
		out[d.ID] = d
	}
	return out, nil
}

func (r *Retirer) after(ctx context.Context, id string, s Step) error {
	if r.cfg.AfterStep == nil {
		return nil
	}
	if err := r.cfg.AfterStep(ctx, id, s); err != nil {
		return fmt.Errorf("retire %s after step %s: %w", id, s, err)
	}
	return nil
}

// backoff is the wait after the n-th failed attempt: a minute, doubling,
// at most an hour, and at least what the upstream asked.
func backoff(n int, err error) time.Duration {
	d := min(time.Minute<<min(n-1, 10), maxBackoff)
	return max(d, min(keyadmin.RetryAfter(err), 24*time.Hour))
}
