// Package refill creates backup keys upstream when a pool runs low: when
// its unused backups fall below a level it creates keys, with the pool's
// budget as each key's limit, up to a target, under hard caps per pool and
// UTC day on the keys created and the USD of their limits (docs/refill.md).
//
// Each creation is journaled before its request, in a slot whose unique
// _id (pool, day, number) is what the caps count, under a name that
// identifies the slot upstream. A slot sends its create once, ever. What
// became of it is decided once, by a unique insert: adopt (the key becomes
// a backup only after the upstream confirmed it), disable (a key was
// created but its secret is lost: disabled upstream and recorded), or
// absent (found nowhere after two looks). So a crash between the upstream's
// answer and the backup insert is recovered by finding the key by its name:
// never two keys for one slot, never a created key lost.
package refill

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"regexp"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readconcern"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"

	"github.com/spendchecker/spendchecker/keyadmin"
	"github.com/spendchecker/spendchecker/notify"
	"github.com/spendchecker/spendchecker/rotation"
	"github.com/spendchecker/spendchecker/rotation/mongoidx"
	"github.com/spendchecker/spendchecker/rotation/secret"
)

// Collection is the refill journal: slots, their outcomes, and the
// deployment's name token.
const Collection = "key_refills"

// Hard bounds no configuration can pass (New refuses it).
const (
	MaxKeysPerDay = 1000
	// MaxPerPass bounds the keys one pass creates, so a cycle stays short.
	MaxPerPass = 25
)

// Defaults of Config.
const (
	DefaultMaxKeysPerDay = 10
	DefaultMaxUSDPerDay  = 100.0
	// DefaultSettleAfter is how long after its request a slot whose
	// create got no clear answer is looked for by name (twice, this far
	// apart) before it is taken as never created.
	DefaultSettleAfter = 2 * time.Minute
)

// Upstream is what refill needs of a management API (*keyadmin.Client).
type Upstream interface {
	Create(ctx context.Context, name string, limit float64, secret string) (keyadmin.Key, error)
	FindByName(ctx context.Context, name string) ([]keyadmin.Key, error)
	Disable(ctx context.Context, id string) error
	// Lookup reads one key by id, changing nothing: a create's answer is
	// believed only once the upstream shows the key.
	Lookup(ctx context.Context, id string) (keyadmin.Key, error)
	IDOf(secret string) string
	ProposesSecret() bool
}

// Config configures a Refiller.
type Config struct {
	Pool     rotation.Pool
	Upstream Upstream
	// Below: a pass refills when the unused backups (and slots still
	// settling) are fewer than this. To: it creates up to this many.
	Below, To int
	// Limit is each created key's USD limit upstream (the pool's budget).
	Limit float64
	// MaxKeysPerDay and MaxUSDPerDay cap the slots of the pool per UTC
	// day, whatever Below and To say (defaults DefaultMaxKeysPerDay and
	// DefaultMaxUSDPerDay).
	MaxKeysPerDay int
	MaxUSDPerDay  float64
	SettleAfter   time.Duration
	Owner         string
	Epoch         func() int64
	Now           func() time.Time
	DryRun        bool
	Logger        *slog.Logger
	// AfterStep, when set, runs after each step; an error aborts the pass
	// there, as a crash would. For tests.
	AfterStep func(ctx context.Context, slotID string, s Step) error
}

// Step names a point of a slot's life, for AfterStep.
type Step int

const (
	StepJournal Step = iota + 1 // the slot is written, before the request
	StepCreate                  // the upstream answered the create (or failed)
	StepFind                    // a settle looked the name up
	StepDecide                  // the slot's outcome is decided
	StepDisable                 // a key of the slot was disabled upstream
	StepBackup                  // the backup is inserted
	StepDone                    // the slot is settled
)

func (s Step) String() string {
	names := [...]string{"?", "journal", "create", "find", "decide", "disable", "backup", "done"}
	if s < StepJournal || s > StepDone {
		return "?"
	}
	return names[s]
}

// Refiller refills one pool.
type Refiller struct {
	cfg     Config
	log     *slog.Logger
	journal *mongo.Collection
	backups *mongo.Collection
	keys    *mongo.Collection
	archive *mongo.Collection
	token   string // the deployment's token in key names

	notBefore time.Time // no create before this (backoff after failures)
	failures  int
}

func durable() *options.CollectionOptionsBuilder {
	j := true
	return options.Collection().
		SetWriteConcern(&writeconcern.WriteConcern{W: "majority", Journal: &j}).
		SetReadConcern(readconcern.Majority()).
		SetReadPreference(readpref.Primary())
}

// New checks cfg and returns a Refiller for the pool in db.
func New(db *mongo.Database, cfg Config) (*Refiller, error) {
	if err := cfg.Pool.Validate(); err != nil {
		return nil, err
	}
	if cfg.Upstream == nil {
		return nil, errors.New("refill: no upstream")
	}
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("refill: pool %s: %w", cfg.Pool.Name, err)
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
	return &Refiller{cfg: cfg, log: log.With("pool", cfg.Pool.Name),
		journal: db.Collection(Collection, durable()),
		backups: db.Collection(cfg.Pool.BackupsCollection, durable()),
		keys:    db.Collection(cfg.Pool.KeysCollection, durable()),
		archive: db.Collection(rotation.ArchiveCollection, durable()),
	}, nil
}

func (c Config) withDefaults() Config {
	if c.MaxKeysPerDay == 0 {
		c.MaxKeysPerDay = DefaultMaxKeysPerDay
	}
	if c.MaxUSDPerDay == 0 {
		c.MaxUSDPerDay = DefaultMaxUSDPerDay
	}
	if c.SettleAfter <= 0 {
		c.SettleAfter = DefaultSettleAfter
	}
	return c
}

// Validate refuses the settings no pool should run with (zero caps take
// their defaults).
func (c Config) Validate() error {
	c = c.withDefaults()
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	switch {
	case c.Below < 1 || c.To < c.Below:
		return fmt.Errorf("refill-below (%d) must be at least 1 and refill-to (%d) at least refill-below", c.Below, c.To)
	case !finite(c.Limit) || c.Limit <= 0:
		return fmt.Errorf("the key limit %v must be a positive number of USD", c.Limit)
	case c.MaxKeysPerDay < 1 || c.MaxKeysPerDay > MaxKeysPerDay:
		return fmt.Errorf("refill-max-keys-per-day %d must be 1 to %d", c.MaxKeysPerDay, MaxKeysPerDay)
	case !finite(c.MaxUSDPerDay) || c.MaxUSDPerDay < c.Limit:
		return fmt.Errorf("refill-max-usd-per-day %v must be a number at least the key limit %v", c.MaxUSDPerDay, c.Limit)
	}
	return nil
}

// EnsureIndexes creates the journal's index of open slots and the
// deployment's name token; idempotent.
func (r *Refiller) EnsureIndexes(ctx context.Context) error {
	if err := mongoidx.Ensure(ctx, r.journal, mongoidx.Index{Name: "pool_1_state_1_checkAt_1",
		Keys: bson.D{{Key: "pool", Value: 1}, {Key: "state", Value: 1}, {Key: "checkAt", Value: 1}}}); err != nil {
		return err
	}
	_, err := r.nameToken(ctx)
	return err
}

// nameToken is a random token of the deployment, written once: two
// deployments (staging and production) creating keys in one upstream
// account under the same pool name never take each other's keys for
// their own.
func (r *Refiller) nameToken(ctx context.Context) (string, error) {
	if r.token != "" {
		return r.token, nil
	}
	var doc struct {
		Token string `bson:"token"`
	}
	err := r.journal.FindOne(ctx, bson.M{"_id": "token"}).Decode(&doc)
	if errors.Is(err, mongo.ErrNoDocuments) {
		if r.cfg.DryRun {
			return "xxxxxx", nil
		}
		b := make([]byte, 3)
		_, _ = rand.Read(b)
		_, err = r.journal.InsertOne(ctx, bson.M{"_id": "token", "token": hex.EncodeToString(b)})
		if err != nil && !mongo.IsDuplicateKeyError(err) {
			return "", fmt.Errorf("refill: write the name token: %w", err)
		}
		return r.nameToken(ctx)
	}
	if err != nil || doc.Token == "" {
		return "", fmt.Errorf("refill: read the name token: %v", err)
	}
	r.token = doc.Token
	return r.token, nil
}

var plainName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,40}$`)

// keyName is the name of slot n of day in the upstream, and the _id of the
// backup it becomes: spendchecker-<pool>-<token>-<yyyymmdd>-<n>-<nonce>. A
// pool name an upstream might refuse is replaced by its fingerprint. The
// nonce, random per slot and kept in the slot, makes the name the slot's
// alone: a deployment restored from another's database (its token copied)
// never finds the other's keys under its names.
func (r *Refiller) keyName(token, day string, n int) (string, error) {
	pool := r.cfg.Pool.Name
	if !plainName.MatchString(pool) {
		pool = "p" + secret.Fingerprint(pool)
	}
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("refill: name a key: %w", err)
	}
	return fmt.Sprintf("spendchecker-%s-%s-%s-%d-%s", pool, token, day[0:4]+day[5:7]+day[8:10], n, hex.EncodeToString(b)), nil
}

// Report counts what a pass did.
type Report struct {
	// Unused backups and Open slots (still settling) before the pass.
	Unused, Open int64
	Created      int // keys created and inserted as backups
	Adopted      int // keys of earlier slots found and inserted as backups
	Orphaned     int // keys created whose secret was lost: disabled upstream
	Absent       int // slots settled as never created
	Failed       int // creates that failed this pass
	// Capped says the day's caps stopped the pass.
	Capped bool
	// Would is what a dry run would create.
	Would  int
	Events []notify.Event
}

// Run is one pass: it settles the slots whose create is unclear, then
// creates keys when the pool is below its level, within the caps. An error
// says the pass stopped early; what it did is in the report.
func (r *Refiller) Run(ctx context.Context) (Report, error) {
	var rep Report
	token, err := r.nameToken(ctx)
	if err != nil {
		return rep, err
	}
	now := r.cfg.Now()
	if !r.cfg.DryRun {
		if err := r.settleDue(ctx, now, &rep); err != nil {
			return rep, err
		}
	}
	unused, err := r.backups.CountDocuments(ctx, bson.M{rotation.FieldIsUsed: bson.M{"$ne": true},
		"_id": bson.M{"$type": "string", "$ne": ""}, rotation.FieldAPIKey: bson.M{"$type": "string", "$ne": ""}})
	if err != nil {
		return rep, fmt.Errorf("refill: count backups: %w", err)
	}
	open, err := r.journal.CountDocuments(ctx, bson.M{"pool": r.cfg.Pool.Name, "kind": kindSlot, "state": statePending})
	if err != nil {
		return rep, fmt.Errorf("refill: count open slots: %w", err)
	}
	rep.Unused, rep.Open = unused, open
	if unused+open >= int64(r.cfg.Below) {
		return rep, nil
	}
	want := min(int64(r.cfg.To)-unused-open, MaxPerPass)
	if now.Before(r.notBefore) {
		return rep, nil
	}
	return rep, r.create(ctx, token, now, int(want), &rep)
}

// create takes want slots of today within the caps and creates their keys.
func (r *Refiller) create(ctx context.Context, token string, now time.Time, want int, rep *Report) error {
	day := now.UTC().Format(time.DateOnly)
	next, keys, usd, err := r.today(ctx, day, now)
	if err != nil {
		return err
	}
	first := ""
	for range want {
		if next >= r.cfg.MaxKeysPerDay || keys >= r.cfg.MaxKeysPerDay || usd+r.cfg.Limit > r.cfg.MaxUSDPerDay+1e-9 {
			rep.Capped = true
			r.log.Warn("refill capped for today", "keys", keys, "usd", usd, "max_keys", r.cfg.MaxKeysPerDay, "max_usd", r.cfg.MaxUSDPerDay)
			rep.Events = append(rep.Events, notify.RefillCappedEvent(r.cfg.Pool.Name, day, keys, usd, r.cfg.MaxKeysPerDay, r.cfg.MaxUSDPerDay, now))
			break
		}
		if r.cfg.DryRun {
			rep.Would++
			next, keys, usd = next+1, keys+1, usd+r.cfg.Limit
			continue
		}
		name, err := r.keyName(token, day, next)
		if err != nil {
			return err
		}
		s := slot{ID: fmt.Sprintf("%s/%s/%d", r.cfg.Pool.Name, day, next), Kind: kindSlot, Pool: r.cfg.Pool.Name, Day: day, N: next,
			Name: name, Limit: r.cfg.Limit, State: statePending, Owner: r.cfg.Owner, Epoch: r.cfg.Epoch(),
			RequestedAt: now.UTC(), CheckAt: now.UTC().Add(r.cfg.SettleAfter)}
		ok, err := r.createOne(ctx, s, rep)
		if err != nil || !ok {
			return err
		}
		if first == "" {
			first = s.ID
		}
		next, keys, usd = next+1, keys+1, usd+r.cfg.Limit
	}
	if rep.Created > 0 {
		rep.Events = append(rep.Events, notify.BackupsRefilledEvent(r.cfg.Pool.Name, first, rep.Created, rep.Unused+int64(rep.Created), now))
	}
	return nil
}

// today reads the day's slots: the next number, how many and the USD of
// their limits. Slots are never deleted by the daemon, so the sum stands.
// Slots of another day requested within the day after now count too: a
// clock set back (corrected after running ahead across midnight) reopens
// no allowance it spent under the later day's name.
func (r *Refiller) today(ctx context.Context, day string, now time.Time) (next, keys int, usd float64, err error) {
	cur, err := r.journal.Find(ctx, bson.M{"pool": r.cfg.Pool.Name, "kind": kindSlot, "$or": bson.A{
		bson.M{"day": day}, bson.M{"requestedAt": bson.M{"$gt": now.UTC(), "$lte": now.UTC().Add(24 * time.Hour)}}}},
		options.Find().SetProjection(bson.M{"n": 1, "limit": 1, "day": 1}))
	if err != nil {
		return 0, 0, 0, fmt.Errorf("refill: read today's slots: %w", err)
	}
	var slots []struct {
		N     int     `bson:"n"`
		Limit float64 `bson:"limit"`
		Day   string  `bson:"day"`
	}
	if err := cur.All(ctx, &slots); err != nil {
		return 0, 0, 0, fmt.Errorf("refill: read today's slots: %w", err)
	}
	ahead := 0
	for _, s := range slots {
		usd += s.Limit
		if s.Day != day {
			ahead++
			continue
		}
		next = max(next, s.N+1)
	}
	// A slot deleted by hand leaves its number taken: deleting journal
	// documents never buys more keys.
	return next, max(len(slots)-ahead, next) + ahead, usd, nil
}

func (r *Refiller) after(ctx context.Context, id string, s Step) error {
	if r.cfg.AfterStep == nil {
		return nil
	}
	if err := r.cfg.AfterStep(ctx, id, s); err != nil {
		return fmt.Errorf("refill %s after step %s: %w", id, s, err)
	}
	return nil
}

// failed backs creates off after a failure: a minute, doubling, at most an
// hour, and at least the upstream's Retry-After.
func (r *Refiller) failed(now time.Time, err error) {
	r.failures++
	d := min(time.Minute<<min(r.failures-1, 6), time.Hour)
	r.notBefore = now.Add(max(d, min(keyadmin.RetryAfter(err), 24*time.Hour)))
}
