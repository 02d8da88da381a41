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

	"github.com/spendchecker/spendchecker/history"
)

// Outcome says what a Rotate call did; callers branch on it.
type Outcome int

const (
	// Rotated: this call rotated the key.
	Rotated Outcome = iota + 1
	// AlreadyRotated: the key was rotated before; nothing written.
	AlreadyRotated
	// InProgress: another caller owns the rotation and has not finished;
	// nothing written. Recover completes it if that caller died.
	InProgress
	// NoBackup: no unused backup key was left; nothing written.
	NoBackup
	// NotFound: no such key and no record of its rotation; nothing written.
	NotFound
)

func (o Outcome) String() string {
	switch o {
	case Rotated:
		return "rotated"
	case AlreadyRotated:
		return "already_rotated"
	case InProgress:
		return "in_progress"
	case NoBackup:
		return "no_backup"
	case NotFound:
		return "not_found"
	}
	return "unknown"
}

// Result is the outcome of a rotation with the ids the caller may report.
type Result struct {
	Outcome    Outcome
	RotationID string
	OldKeyID   string
	NewKeyID   string
}

// Step names one step of the saga, in order.
type Step int

const (
	StepClaim Step = iota + 1
	StepInsertKey
	StepMarkBackup
	StepActivateKey
	StepMoveBindings
	StepArchive
	StepDeleteOld
	StepHistory
	StepDone
)

// Steps lists every step in the order they run.
var Steps = []Step{StepClaim, StepInsertKey, StepMarkBackup, StepActivateKey, StepMoveBindings, StepArchive, StepDeleteOld, StepHistory, StepDone}

func (s Step) String() string {
	if s < StepClaim || s > StepDone {
		return "?"
	}
	return [...]string{"?", "claim", "insert_key", "mark_backup", "activate_key", "move_bindings", "archive", "delete_old", "history", "done"}[s]
}

// Journal states.
const (
	stateClaimed = "claimed"
	stateDone    = "done"
)

// ErrKeyCollision means the new key's id already holds a different key (or
// the backup's secret was live under that id before): the backup is skipped
// and the rotation moves to another one (README "Rotation guarantees").
var ErrKeyCollision = errors.New("new key id already holds a different key")

// ErrBackupVanished means a claimed backup disappeared before its key was
// inserted; the claim is dropped so the key can be rotated again.
var ErrBackupVanished = errors.New("claimed backup vanished before use")

// errBackupTaken means a claimed backup was marked used for another key
// outside the journal (by the proxy's own rotator) before its key went live.
var errBackupTaken = errors.New("claimed backup was used by someone else")

// pendingField marks a key a rotation inserted until the rotation has marked
// its backup used. A key that still carries it after its rotation moved on
// was inserted late (a command delivered after its sender gave up) and is
// removed by recovery; a key put back by hand from the archive never carries
// it, which is how the two are told apart (README "Reliability").
const pendingField = "pendingRotation"

// maxGenerations bounds how often one key document (same id and secret) can
// be restored and rotated again.
const maxGenerations = 64

// skipFor is how long a rotator leaves aside a backup whose id is a live key.
const skipFor = 10 * time.Minute

// Options configure a Rotator.
type Options struct {
	// Owner identifies this process in the journal and archive.
	Owner string
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Logger receives one line per rotation and recovery; discarded when nil.
	Logger *slog.Logger
	// AfterStep, when set, runs after each completed step; an error aborts the
	// saga there, as a crash would. For tests and fault injection.
	AfterStep func(ctx context.Context, rotationID string, s Step) error
	// Candidates is how many backups one read fetches (default 8).
	Candidates int
}

// Rotator rotates the keys of one pool.
type Rotator struct {
	pool     Pool
	opts     Options
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
}

// durable makes every write of the rotator wait for a majority of a replica
// set, journaled, and every read go to the primary with read concern
// majority, whatever the connection string or the server's defaults say: a
// decision must not rest on a write a failover can roll back (README
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
func New(db *mongo.Database, pool Pool, opts Options) (*Rotator, error) {
	if err := pool.Validate(); err != nil {
		return nil, err
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Candidates <= 0 {
		opts.Candidates = 8
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Rotator{
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
}

type backupDoc struct {
	ID     string
	APIKey string
	// Raw is the backup document as claimed, for the optional fields the
	// new key carries over (carried); nil when only listed.
	Raw bson.Raw
}

// Option adjusts one Rotate call.
type Option func(*request)

type request struct {
	obs    *history.Observation
	keyDoc bson.Raw
}

// WithObservation records the spend observation that led to the rotation in
// its history record.
func WithObservation(o history.Observation) Option {
	return func(r *request) { r.obs = &o }
}

// WithKeyDocument passes the key document the caller already read, saving
// the rotator a round trip. It must be the document whose _id is keyID.
func WithKeyDocument(doc bson.Raw) Option {
	return func(r *request) { r.keyDoc = doc }
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
func (r *Rotator) Rotate(ctx context.Context, keyID, reason string, opts ...Option) (Result, error) {
	var req request
	for _, o := range opts {
		o(&req)
	}
	res := Result{OldKeyID: keyID}
	doc := req.keyDoc
	if doc == nil {
		var err error
		doc, err = r.keys.FindOne(ctx, bson.M{"_id": keyID}).Raw()
		if errors.Is(err, mongo.ErrNoDocuments) {
			return r.missingKey(ctx, keyID)
		}
		if err != nil {
			return res, fmt.Errorf("read key %s: %w", keyID, err)
		}
	}
	key, err := decodeKey(doc)
	if err != nil {
		return res, fmt.Errorf("key %s: %w", keyID, err)
	}
	if key.ID != keyID {
		return res, fmt.Errorf("key document has _id %q, want %q", key.ID, keyID)
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
		APIKeyMasked: history.Mask(key.APIKey),
		StartedAt:    now,
	}
	prior, err := r.earlierReplacements(ctx, keyID, key.APIKey)
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

// earlierReplacements lists the live keys some rotation (any rotator's)
// brought in for an earlier copy of keyID. They are read before the key is
// confirmed live: every rotator deletes the old key before it inserts the
// new one, so a replacement live before the key was seen live again
// replaced a copy put back since, not the key this call rotates.
func (r *Rotator) earlierReplacements(ctx context.Context, keyID, secret string) ([]string, error) {
	cur, err := r.backups.Find(ctx, bson.M{"usedFor": keyID, "isUsed": true}, options.Find().SetProjection(bson.M{"_id": 1}))
	if err != nil {
		return nil, fmt.Errorf("find replacements of %s: %w", keyID, err)
	}
	var ids []string
	for cur.Next(ctx) {
		if id, ok := cur.Current.Lookup("_id").StringValueOK(); ok {
			ids = append(ids, id)
		}
	}
	if err := cur.Err(); err != nil || len(ids) == 0 {
		return nil, err
	}
	kc, err := r.keys.Find(ctx, bson.M{"_id": bson.M{"$in": ids}}, options.Find().SetProjection(bson.M{"_id": 1}))
	if err != nil {
		return nil, fmt.Errorf("find replacements of %s: %w", keyID, err)
	}
	var live []string
	for kc.Next(ctx) {
		if id, ok := kc.Current.Lookup("_id").StringValueOK(); ok && id != keyID {
			live = append(live, id)
		}
	}
	if err := kc.Err(); err != nil || len(live) == 0 {
		return nil, err
	}
	// A separate, later read: one find over several ids is no snapshot.
	n, err := r.keys.CountDocuments(ctx, bson.M{"_id": keyID, "apiKey": secret})
	if err != nil {
		return nil, fmt.Errorf("read key %s: %w", keyID, err)
	}
	if n == 0 {
		return nil, nil // gone (or re-keyed) since: nothing proven earlier
	}
	return live, nil
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
		s := &saga{r: r, e: entry, oldKey: doc, backupSecret: backup.APIKey, backup: backup.Raw}
		err = s.run(ctx, StepInsertKey)
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
				return entryResult(cur), false, nil
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

// missingKey tells an already rotated key from one that never existed.
func (r *Rotator) missingKey(ctx context.Context, keyID string) (Result, error) {
	res := Result{OldKeyID: keyID, Outcome: NotFound}
	var e journalEntry
	err := r.journal.FindOne(ctx, bson.M{"pool": r.pool.Name, "oldKeyId": keyID},
		options.FindOne().SetSort(bson.D{{Key: "startedAt", Value: -1}})).Decode(&e)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("read journal for %s: %w", keyID, err)
	}
	return entryResult(e), nil
}

// claimLost reports the rotation someone else claimed first. When that
// rotation is done but the key is live again with the same secret, the key
// came back: a late insert is removed (and the rotation reported done); a
// key put back by hand is rotated again under the next generation.
func (r *Rotator) claimLost(ctx context.Context, res Result) (Result, bool, error) {
	var e journalEntry
	err := r.journal.FindOne(ctx, bson.M{"_id": res.RotationID}).Decode(&e)
	if errors.Is(err, mongo.ErrNoDocuments) {
		res.Outcome = NoBackup
		return res, false, nil
	}
	if err != nil {
		return res, false, fmt.Errorf("read journal %s: %w", res.RotationID, err)
	}
	if e.State != stateDone && e.State != stateUndone {
		return entryResult(e), false, nil
	}
	raw, err := r.keys.FindOne(ctx, bson.M{"_id": e.OldKeyID}).Raw()
	if errors.Is(err, mongo.ErrNoDocuments) {
		return entryResult(e), false, nil
	}
	if err != nil {
		return res, false, fmt.Errorf("read key %s: %w", e.OldKeyID, err)
	}
	k, err := decodeKey(raw)
	if err != nil || !sameDocument(e.ID, r.pool.Name, k.ID, k.APIKey) {
		return entryResult(e), false, nil
	}
	if k.Pending != "" {
		if _, err := r.sweepKey(ctx, raw); err != nil {
			return res, false, err
		}
		return entryResult(e), false, nil
	}
	return res, true, nil
}

func entryResult(e journalEntry) Result {
	res := Result{OldKeyID: e.OldKeyID, RotationID: e.ID, NewKeyID: e.NewKeyID, Outcome: InProgress}
	if e.State == stateDone || e.State == stateUndone {
		res.Outcome = AlreadyRotated
	}
	if e.State == stateUndone {
		res.NewKeyID = e.SupersededBy
	}
	return res
}

// claim inserts the journal entry with the first backup nobody else holds,
// then reads that backup again: the secret that goes live is the one in the
// store after the claim, and a backup deleted or used outside the journal
// since it was cached is let go. It returns nil (and no error) when the
// rotation is already claimed or no backup is left; claimLost tells which.
func (r *Rotator) claim(ctx context.Context, e *journalEntry) (*backupDoc, error) {
	tried := map[string]bool{}
	for {
		cands, err := r.candidates(ctx, tried)
		if err != nil {
			return nil, err
		}
		if len(cands) == 0 {
			return nil, nil
		}
		for _, b := range cands {
			tried[b.ID] = true
			e.BackupID, e.NewKeyID = b.ID, b.ID
			e.History.NewKeyID = b.ID
			_, err := r.journal.InsertOne(ctx, e)
			if err == nil {
				r.forget(b.ID)
				got, err := r.claimedBackup(ctx, *e)
				if err != nil {
					return nil, err
				}
				if got != nil {
					return got, nil
				}
				continue
			}
			if !mongo.IsDuplicateKeyError(err) {
				return nil, fmt.Errorf("claim backup %s: %w", b.ID, err)
			}
			r.forget(b.ID)
			// A duplicate is on _id (the rotation is someone else's) or on
			// backupId (that backup is taken): only a read tells which.
			n, err := r.journal.CountDocuments(ctx, bson.M{"_id": e.ID})
			if err != nil {
				return nil, fmt.Errorf("read journal %s: %w", e.ID, err)
			}
			if n > 0 {
				return nil, nil
			}
		}
	}
}

// claimField names, in a backup, the rotation that reserved it.
const claimField = "claimedBy"

// reserve hides the claimed backup from the proxy's own rotators, whose claim
// is findOneAndUpdate({isUsed: false}): it sets isUsed, usedFor and the
// rotation id, but no usedAt, so the proxy's clean-up of used backups (by
// usedAt) cannot delete it before its key is live (README "Rotation
// guarantees"). The journal insert decided the claim; this
// only tells the legacy claimers, so a lost race here is harmless: the
// backup is then let go. It returns the backup as it is now, or why it
// cannot be used.
func (r *Rotator) reserve(ctx context.Context, e journalEntry) (bson.Raw, string, error) {
	raw, err := r.backups.FindOneAndUpdate(ctx, bson.M{"_id": e.BackupID, "isUsed": bson.M{"$ne": true}},
		bson.M{"$set": bson.M{"isUsed": true, "usedFor": e.OldKeyID, claimField: e.ID}},
		options.FindOneAndUpdate().SetReturnDocument(options.After)).Raw()
	if err == nil {
		return raw, "", nil
	}
	if !errors.Is(err, mongo.ErrNoDocuments) {
		return nil, "", fmt.Errorf("reserve backup %s: %w", e.BackupID, err)
	}
	raw, err = r.backups.FindOne(ctx, bson.M{"_id": e.BackupID}).Raw()
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, "deleted", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("read backup %s: %w", e.BackupID, err)
	}
	by, _ := raw.Lookup(claimField).StringValueOK()
	usedFor, _ := raw.Lookup("usedFor").StringValueOK()
	if by == e.ID && usedFor == e.OldKeyID {
		return raw, "", nil // reserved by another executor of this rotation
	}
	return raw, "used for another key", nil
}

// unreserve gives a reserved backup back, unless someone else used it since.
func (r *Rotator) unreserve(ctx context.Context, e journalEntry) error {
	_, err := r.backups.UpdateOne(ctx, bson.M{"_id": e.BackupID, claimField: e.ID, "usedFor": e.OldKeyID, "activated": bson.M{"$ne": true}},
		bson.M{"$set": bson.M{"isUsed": false}, "$unset": bson.M{"usedFor": "", claimField: ""}})
	if err != nil {
		return fmt.Errorf("give back backup %s: %w", e.BackupID, err)
	}
	return nil
}

// usable checks a reserved backup's secret: present, and not a secret that
// was live under this id and rotated away (the old rotators left such
// backups unmarked), which must not come back.
func (r *Rotator) usable(ctx context.Context, e journalEntry, raw bson.Raw) (string, string, error) {
	secret, _ := raw.Lookup("apiKey").StringValueOK()
	if secret == "" {
		return "", "malformed", nil
	}
	n, err := r.journal.CountDocuments(ctx, bson.M{"_id": RotationID(r.pool.Name, e.BackupID, secret)})
	if err != nil {
		return "", "", fmt.Errorf("read journal for backup %s: %w", e.BackupID, err)
	}
	if n > 0 {
		r.skip(e.BackupID)
		return "", "its secret was live under this id and rotated away", nil
	}
	return secret, "", nil
}

// claimedBackup reserves the backup just claimed and reads it. It returns
// nil, having dropped the claim, when the backup is gone, used for another
// key or unusable.
func (r *Rotator) claimedBackup(ctx context.Context, e journalEntry) (*backupDoc, error) {
	raw, why, err := r.reserve(ctx, e)
	if err != nil {
		return nil, err
	}
	var secret string
	if why == "" {
		if secret, why, err = r.usable(ctx, e, raw); err != nil {
			return nil, err
		}
	}
	if why == "" {
		return &backupDoc{ID: e.BackupID, APIKey: secret, Raw: raw}, nil
	}
	r.log.Info("claimed backup changed since it was listed; trying another", "backup", e.BackupID, "why", why)
	return nil, r.dropClaim(ctx, e)
}

// candidates returns backups that looked unused, from the cache when it has
// any not yet tried.
func (r *Rotator) candidates(ctx context.Context, tried map[string]bool) ([]backupDoc, error) {
	now := r.opts.Now()
	r.mu.Lock()
	for id, until := range r.skipped {
		if now.After(until) {
			delete(r.skipped, id)
		} else {
			tried[id] = true
		}
	}
	var out []backupDoc
	for _, b := range r.cached {
		if !tried[b.ID] {
			out = append(out, b)
		}
	}
	r.mu.Unlock()
	if len(out) > 0 {
		return out, nil
	}
	// Excluded: backups this claim already tried, and malformed ones by
	// their raw _id (which may not be a string), so a run of malformed
	// documents ahead in claim order cannot hide good backups behind them.
	exclude := make([]any, 0, len(tried))
	for id := range tried {
		exclude = append(exclude, id)
	}
	for {
		filter := bson.M{"isUsed": bson.M{"$ne": true}}
		if len(exclude) > 0 {
			filter["_id"] = bson.M{"$nin": exclude}
		}
		cur, err := r.backups.Find(ctx, filter, options.Find().
			SetSort(bson.D{{Key: "createdAt", Value: 1}, {Key: "_id", Value: 1}}).
			SetLimit(int64(r.opts.Candidates)).
			SetProjection(bson.M{"_id": 1, "apiKey": 1}))
		if err != nil {
			return nil, fmt.Errorf("find backups: %w", err)
		}
		var raws []bson.Raw
		if err := cur.All(ctx, &raws); err != nil {
			return nil, fmt.Errorf("find backups: %w", err)
		}
		for _, raw := range raws {
			id, ok := raw.Lookup("_id").StringValueOK()
			secret, ok2 := raw.Lookup("apiKey").StringValueOK()
			if !ok || !ok2 || id == "" || secret == "" {
				r.log.Warn("skipping malformed backup document (needs string _id and apiKey)", "backup", raw.Lookup("_id").String())
				exclude = append(exclude, raw.Lookup("_id"))
				continue
			}
			out = append(out, backupDoc{ID: id, APIKey: secret})
		}
		if len(out) > 0 || len(raws) == 0 {
			break
		}
	}
	r.mu.Lock()
	r.cached = append([]backupDoc(nil), out...)
	r.mu.Unlock()
	return out, nil
}

// skip leaves a backup aside for a while: its id is a live key.
func (r *Rotator) skip(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.skipped[id] = r.opts.Now().Add(skipFor)
}

func (r *Rotator) forget(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, b := range r.cached {
		if b.ID == id {
			r.cached = append(r.cached[:i], r.cached[i+1:]...)
			return
		}
	}
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

func (r *Rotator) historyRecord(e journalEntry, key keyDoc, obs *history.Observation) history.Record {
	rec := history.Record{
		ID:             e.ID,
		Pool:           r.pool.Name,
		KeyID:          e.OldKeyID,
		APIKeyMasked:   e.APIKeyMasked,
		Spend:          key.TotalSpend,
		CheckedAt:      e.StartedAt,
		WasActive:      key.Status == "healthy",
		RotatedAt:      e.StartedAt,
		RotationReason: e.Reason,
		Instance:       r.opts.Owner,
	}
	if obs != nil {
		rec.Spend, rec.Threshold, rec.Budget = obs.Spend, obs.Threshold, obs.Budget
		rec.Provider, rec.LeaseEpoch = obs.Provider, obs.LeaseEpoch
		rec.Remaining, rec.Currency = obs.Remaining, obs.Currency
		if !obs.CheckedAt.IsZero() {
			rec.CheckedAt = obs.CheckedAt.UTC()
		}
		if obs.Instance != "" {
			rec.Instance = obs.Instance
		}
	}
	return rec
}

type keyDoc struct {
	ID          string
	APIKey      string
	Status      string
	TotalSpend  float64
	ReplacedKey string
	Pending     string // the rotation that inserted it, until it is activated
	CreatedAt   time.Time
}

// decodeKey reads the fields the rotator needs, leniently: a key without a
// string _id or apiKey cannot be rotated, anything else is tolerated.
func decodeKey(doc bson.Raw) (keyDoc, error) {
	var k keyDoc
	var ok bool
	if k.ID, ok = doc.Lookup("_id").StringValueOK(); !ok {
		return k, errors.New("_id is not a string")
	}
	if k.APIKey, ok = doc.Lookup("apiKey").StringValueOK(); !ok || k.APIKey == "" {
		return k, errors.New("apiKey missing or not a string")
	}
	k.Status, _ = doc.Lookup("status").StringValueOK()
	k.ReplacedKey, _ = doc.Lookup("replacedKey").StringValueOK()
	k.Pending, _ = doc.Lookup(pendingField).StringValueOK()
	if v, ok := doc.Lookup("createdAt").TimeOK(); ok {
		k.CreatedAt = v.UTC()
	}
	if v, err := doc.LookupErr("totalSpend"); err == nil {
		if f, ok := v.AsFloat64OK(); ok {
			k.TotalSpend = f
		}
	}
	return k, nil
}

// liveChain bounds LiveEnd's walk from a rotated key to its live replacement.
const liveChain = 16

// LiveEnd follows a rotated key's replacements through the journal (the
// rotation whose oldKeyId is the previous new key) to the one still in the
// pool, for a caller that swaps keys in memory on *already rotated*. It
// returns "" when the chain ends in a rotation still under way, a key
// deleted by hand, or is longer than liveChain.
func (r *Rotator) LiveEnd(ctx context.Context, keyID string) (string, error) {
	for range liveChain {
		if keyID == "" {
			return "", nil
		}
		n, err := r.keys.CountDocuments(ctx, bson.M{"_id": keyID})
		if err != nil {
			return "", fmt.Errorf("read key %s: %w", keyID, err)
		}
		if n > 0 {
			return keyID, nil
		}
		var next struct {
			NewKeyID string `bson:"newKeyId"`
			State    string `bson:"state"`
		}
		err = r.journal.FindOne(ctx, bson.M{"pool": r.pool.Name, "oldKeyId": keyID},
			options.FindOne().SetSort(bson.D{{Key: "startedAt", Value: -1}})).Decode(&next)
		if errors.Is(err, mongo.ErrNoDocuments) || (err == nil && next.State != stateDone) {
			return "", nil
		}
		if err != nil {
			return "", fmt.Errorf("read journal for %s: %w", keyID, err)
		}
		keyID = next.NewKeyID
	}
	return "", nil
}
