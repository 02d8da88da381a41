// Package rotation is the one algorithm that swaps a key for a backup key,
// shared by the spend checker and the serving proxy.
//
// A rotation is a saga whose every step is idempotent. Who wins a race is
// decided only by single-document inserts against unique indexes (the journal
// _id for the key, the journal backupId for the backup) and by delete counts,
// so it is correct on MongoDB standalone, replica sets and FerretDB alike,
// without transactions and without trusting findAndModify.
package rotation

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readconcern"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"

	"github.com/spendchecker/spendchecker/rotation/history"
	"github.com/spendchecker/spendchecker/rotation/secret"
)

// Journal states.
const (
	stateClaimed = "claimed"
	stateDone    = "done"
)

// pendingField marks a key a rotation inserted until the rotation has marked
// its backup used. A key that still carries it after its rotation moved on
// was inserted late (a command delivered after its sender gave up) and is
// removed by recovery; a key put back by hand from the archive never carries
// it, which is how the two are told apart (docs/reliability.md "Reliability").
const pendingField = "pendingRotation"

// maxGenerations bounds how often one key document (same id and secret) can
// be restored and rotated again.
const maxGenerations = 64

// skipFor is how long a rotator leaves aside a backup whose id is a live key.
const skipFor = 10 * time.Minute

// Config configures a Rotator (New); RotateOption adjusts one Rotate call.
type Config struct {
	// Owner identifies this process in the journal and archive.
	Owner string
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Logger receives one line per rotation and recovery; discarded when nil.
	Logger *slog.Logger
	// AfterStep, when set, runs after each completed step; an error aborts the
	// saga there, as a crash would. For tests and fault injection.
	AfterStep func(ctx context.Context, rotationID string, s Step) error
	// Candidates is how many backups one read fetches (default
	// DefaultCandidates).
	Candidates int
	// UserBudget is the pool's rule for LiteLLM's personal-budget refusals
	// (Rotate with WithBudgetUser); the zero value is UserBudgetAuto.
	UserBudget UserBudget
	// NoLegacyRotator declares that the proxy's own rotator no longer runs
	// anywhere against this pool. Rotate then answers Rotated as soon as the
	// new key is live and its backup marked, and finishes the rotation in
	// the background (Wait, Close); the rotation is recorded as forward-only
	// and never undoes itself after that point (docs/design.md "The early
	// answer").
	NoLegacyRotator bool
	// FinishWithin bounds the background completion of a rotation answered
	// early (default DefaultFinishWithin); recovery completes what is left.
	FinishWithin time.Duration
}

// DefaultCandidates is Config.Candidates when unset: enough backups per
// read that racing rotators rarely all want the same one.
const DefaultCandidates = 8

// Rotator rotates the keys of one pool.
type Rotator struct {
	pool     Pool
	opts     Config
	log      *slog.Logger
	keys     *mongo.Collection
	backups  *mongo.Collection
	bindings *mongo.Collection
	history  *mongo.Collection
	journal  *mongo.Collection
	archive  *mongo.Collection

	// cache of backups seen unused; only a hint, the journal insert decides
	// and the backup is read again after it.
	mu     sync.Mutex
	cached []backupDoc
	// backups whose id is a live key, left aside until the time given.
	skipped map[string]time.Time
	// when Recover last looked for backups live as keys.
	lastRepair time.Time

	// the completions of rotations answered early (early.go): how many run,
	// a channel closed when none does, and what Close cuts.
	running int
	idle    chan struct{}
	closed  bool
	base    context.Context
	stop    context.CancelFunc
}

// durable makes every write of the rotator wait for a majority of a replica
// set, journaled, and every read go to the primary with read concern
// majority, whatever the connection string or the server's defaults say: a
// decision must not rest on a write a failover can roll back (docs/reliability.md
// "Reliability"). On a standalone server and on FerretDB these are accepted
// and mean "written and journaled".
func durable() *options.CollectionOptionsBuilder {
	j := true
	return options.Collection().
		SetWriteConcern(&writeconcern.WriteConcern{W: "majority", Journal: &j}).
		SetReadConcern(readconcern.Majority()).
		SetReadPreference(readpref.Primary())
}

// New returns a Rotator for pool in db.
func New(db *mongo.Database, pool Pool, opts Config) (*Rotator, error) {
	if err := pool.Validate(); err != nil {
		return nil, err
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Candidates <= 0 {
		opts.Candidates = DefaultCandidates
	}
	if opts.FinishWithin <= 0 {
		opts.FinishWithin = DefaultFinishWithin
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	base, stop := context.WithCancel(context.Background())
	return &Rotator{
		base:     base,
		stop:     stop,
		pool:     pool,
		opts:     opts,
		log:      log.With("pool", pool.Name),
		keys:     db.Collection(pool.KeysCollection, durable()),
		backups:  db.Collection(pool.BackupsCollection, durable()),
		bindings: db.Collection(pool.BindingsCollection, durable()),
		history:  db.Collection(pool.HistoryCollection, durable()),
		journal:  db.Collection(JournalCollection, durable()),
		archive:  db.Collection(ArchiveCollection, durable()),
		skipped:  map[string]time.Time{},
	}, nil
}

// Pool returns the pool this rotator serves.
func (r *Rotator) Pool() Pool { return r.pool }

// journalEntry is a key_rotations document. It carries everything recovery
// needs except secrets, which stay in the key and backup documents.
type journalEntry struct {
	ID           string     `bson:"_id"`
	Pool         string     `bson:"pool"`
	OldKeyID     string     `bson:"oldKeyId"`
	BackupID     string     `bson:"backupId"`
	NewKeyID     string     `bson:"newKeyId"`
	State        string     `bson:"state"`
	Reason       string     `bson:"reason"`
	Owner        string     `bson:"owner"`
	APIKeyMasked string     `bson:"apiKeyMasked"`
	StartedAt    time.Time  `bson:"startedAt"`
	FinishedAt   *time.Time `bson:"finishedAt,omitempty"`
	// SupersededBy, in an undone rotation, is the key someone else's
	// rotation of the old key brought in.
	SupersededBy string `bson:"supersededBy,omitempty"`
	// Prior lists the live keys that replaced an earlier copy of the old
	// key (it was put back by hand after someone rotated it): never taken
	// for a foreign rotation racing this one.
	Prior []string `bson:"priorReplacements,omitempty"`
	// UndoneBackupID, in an undone rotation, is the backup it gave back.
	UndoneBackupID string         `bson:"undoneBackupId,omitempty"`
	History        history.Record `bson:"history"`
	// BackupsCollection is where BackupID was claimed: the journal is one
	// per database, and only this tells two pools' claims on one backup
	// from the same id in two collections (empty in older entries).
	BackupsCollection string `bson:"backupsCollection,omitempty"`
	// BudgetUser is the LiteLLM user whose personal budget the old key was
	// rotated for: another key naming it later shares it.
	BudgetUser string `bson:"budgetUser,omitempty"`
	// ForwardOnly: the rotation was claimed with no legacy rotator running
	// (Config.NoLegacyRotator) and may have been answered once its key was
	// live and its backup marked; every executor completes it and none
	// undoes it, whatever process it runs in.
	ForwardOnly bool `bson:"forwardOnly,omitempty"`
}

// RotateOption adjusts one Rotate call (Config configures the Rotator).
type RotateOption func(*request)

type request struct {
	obs        *history.Observation
	Key        bson.Raw
	budgetUser string
}

// WithObservation records the spend observation that led to the rotation in
// its history record.
func WithObservation(o history.Observation) RotateOption {
	return func(r *request) { r.obs = &o }
}

// WithKeyDocument passes the key document the caller already read, saving
// the rotator a round trip. It must be the document whose _id is keyID.
func WithKeyDocument(doc bson.Raw) RotateOption {
	return func(r *request) { r.Key = doc }
}

// RotationID derives the id of the rotation of one key document from the
// pool, the key's id and its secret: every caller rotating the same document
// computes the same id and so collides on the journal's _id.
func RotationID(pool, keyID, secret string) string {
	h := sha256.New()
	for _, s := range []string{pool, keyID, secret} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return "rot_" + hex.EncodeToString(h.Sum(nil)[:12])
}

// generationID is the rotation id of the n-th rotation of one key document:
// the same document put back after a rotation (restored from the archive)
// is rotated again under the next id, which every caller derives alike.
func generationID(base string, n int) string {
	if n == 0 {
		return base
	}
	return base + "." + strconv.Itoa(n)
}

// sameDocument reports whether rotation id belongs to the key document with
// this id and secret, whatever its generation.
func sameDocument(rotationID, pool, keyID, secret string) bool {
	base := RotationID(pool, keyID, secret)
	return rotationID == base || (len(rotationID) > len(base) && rotationID[:len(base)+1] == base+".")
}

// Rotate swaps keyID for a backup key. It returns an error only when the
// saga stopped part-way (a retry or Recover completes it) or could not start.
func (r *Rotator) Rotate(ctx context.Context, keyID, reason string, opts ...RotateOption) (Result, error) {
	var req request
	for _, o := range opts {
		o(&req)
	}
	res := Result{OldKeyID: keyID}
	doc := req.Key
	// The key, the backups used for its id and, on a cold cache, the unused
	// backups do not depend on one another: one round trip of latency.
	var keyErr error
	var usedFor []string
	err := together(ctx,
		func(ctx context.Context) error {
			if doc == nil {
				doc, keyErr = r.keys.FindOne(ctx, bson.M{"_id": keyID}).Raw()
			}
			return nil
		},
		func(ctx context.Context) (err error) {
			usedFor, err = r.usedFor(ctx, keyID)
			return err
		},
		func(ctx context.Context) error {
			_, _ = r.candidates(ctx, map[string]bool{}) // a hint only: claim reads again on failure
			return nil
		})
	if errors.Is(keyErr, mongo.ErrNoDocuments) {
		return r.missingKey(ctx, keyID)
	}
	if keyErr != nil {
		return res, fmt.Errorf("read key %s: %w", keyID, keyErr)
	}
	if err != nil {
		return res, err
	}
	key, err := DecodeKey(doc)
	if err != nil {
		return res, fmt.Errorf("key %s: %w", keyID, err)
	}
	if key.ID != keyID {
		return res, fmt.Errorf("key document has _id %q, want %q", key.ID, keyID)
	}
	if req.budgetUser != "" {
		held, err := r.holdForUser(ctx, key, req.budgetUser)
		if err != nil {
			return res, err
		}
		if held {
			r.log.Info("key held, not rotated: its owner's budget is shared with another key of the pool (or user-budget is hold)",
				"key", keyID, "budgetUser", req.budgetUser, "userBudget", r.opts.UserBudget.String(), "reason", reason)
			res.Outcome = Held
			return res, nil
		}
	}
	base := RotationID(r.pool.Name, keyID, key.APIKey)
	// Millisecond precision, as stored: the new key's createdAt is compared
	// with the journal's startedAt to recognise the rotation's own insert.
	now := r.opts.Now().UTC().Truncate(time.Millisecond)
	entry := journalEntry{
		Pool:         r.pool.Name,
		OldKeyID:     keyID,
		State:        stateClaimed,
		Reason:       reason,
		Owner:        r.opts.Owner,
		APIKeyMasked: secret.Mask(key.APIKey),
		StartedAt:    now,
		BudgetUser:   req.budgetUser,
	}
	entry.BackupsCollection = r.pool.BackupsCollection
	entry.ForwardOnly = r.opts.NoLegacyRotator
	prior, err := r.earlierReplacements(ctx, keyID, key.APIKey, usedFor)
	if err != nil {
		return res, err
	}
	entry.Prior = prior
	for gen := 0; ; gen++ {
		if gen == maxGenerations {
			return res, fmt.Errorf("key %s: rotated and put back more than %d times", keyID, maxGenerations)
		}
		entry.ID = generationID(base, gen)
		res.RotationID = entry.ID
		entry.History = r.historyRecord(entry, key, req.obs)
		out, next, err := r.rotateOnce(ctx, entry, doc, req.obs)
		if next {
			continue
		}
		return out, err
	}
}

// rotateOnce runs one rotation id: it claims a backup and runs the saga,
// moving to another backup when the claimed one turns out to be a live key.
// next says the id was used by an earlier rotation of this same document,
// which is live again: the caller tries the next generation.
func (r *Rotator) rotateOnce(ctx context.Context, entry journalEntry, doc bson.Raw, obs *history.Observation) (res Result, next bool, err error) {
	res = Result{OldKeyID: entry.OldKeyID, RotationID: entry.ID}
	log := r.log.With("key", entry.OldKeyID, "rotation", entry.ID)
	for {
		backup, err := r.claim(ctx, &entry)
		if err != nil {
			return res, false, err
		}
		if backup == nil {
			return r.claimLost(ctx, res)
		}
		res.NewKeyID = entry.NewKeyID
		if err := r.after(ctx, entry.ID, StepClaim); err != nil {
			return res, false, err
		}
		s := &saga{r: r, e: entry, oldKey: doc, backupSecret: backup.APIKey, backupCarried: backup.Carried,
			claimRead: backup.claimRead, claimReadOK: true}
		if entry.ForwardOnly {
			s.answerBefore = StepActivateKey
		}
		err = s.run(ctx, StepInsertKey)
		early := errors.Is(err, errAnswer)
		if early && !r.finishDetached(ctx, s) {
			early = false
			err = s.run(ctx, StepActivateKey) // closed: finish before answering
		} else if early {
			err = nil
		}
		if errors.Is(err, ErrKeyCollision) {
			// Nothing was written for this backup: let it go, take another.
			log.Warn("backup's id is already a live key; skipping it (verify names it)", "backup", backup.ID, "err", err)
			r.skip(backup.ID)
			if derr := r.dropClaim(ctx, entry); derr != nil {
				return res, false, derr
			}
			continue
		}
		if errors.Is(err, errClaimMoved) {
			log.Info("the rotation's claim moved on while this call was paused; stopped", "backup", backup.ID)
			var cur journalEntry
			if rerr := r.journal.FindOne(ctx, bson.M{"_id": entry.ID}).Decode(&cur); rerr == nil {
				return r.entryResult(ctx, cur), false, nil
			}
			res.Outcome, res.NewKeyID = InProgress, ""
			return res, false, nil
		}
		var elsewhere errRotatedElsewhere
		if errors.As(err, &elsewhere) {
			res.Outcome, res.NewKeyID = AlreadyRotated, elsewhere.newKeyID
			return res, false, nil
		}
		if err != nil {
			log.Warn("rotation stopped part-way; recovery will finish it", "err", err)
			return res, false, err
		}
		res.Outcome = Rotated
		attrs := []any{"new_key", entry.NewKeyID, "reason", entry.Reason, "apiKeyMasked", entry.APIKeyMasked}
		if obs != nil {
			attrs = append(attrs, "spend", obs.Spend, "threshold", obs.Threshold)
		}
		if early {
			attrs = append(attrs, "finishing", "background")
		}
		log.Info("key rotated", attrs...)
		return res, false, nil
	}
}

// dropClaim deletes a claim under which nothing was written, so its key can
// be rotated with another backup. The backupId in the filter keeps a late
// drop from removing a later claim of the same rotation id.
func (r *Rotator) dropClaim(ctx context.Context, e journalEntry) error {
	if err := r.unreserve(ctx, e); err != nil {
		return err
	}
	if _, err := r.journal.DeleteOne(ctx, bson.M{"_id": e.ID, "backupId": e.BackupID, "state": stateClaimed}); err != nil {
		return fmt.Errorf("drop claim %s of backup %s: %w", e.ID, e.BackupID, err)
	}
	r.forget(e.BackupID)
	return nil
}

func (r *Rotator) after(ctx context.Context, id string, s Step) error {
	if r.opts.AfterStep == nil {
		return nil
	}
	if err := r.opts.AfterStep(ctx, id, s); err != nil {
		return fmt.Errorf("after step %s: %w", s, err)
	}
	return nil
}
