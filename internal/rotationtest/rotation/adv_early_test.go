package rotation_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation"
)

// cmdGate pauses a process right before it sends one command, as a process
// stopped (GC, VM freeze, SIGSTOP) between two of its commands would: the
// first command the match accepts blocks in the driver's command monitor
// (which runs in the sender, before the command is written) until Release.
type cmdGate struct {
	match    func(name string, body bson.Raw) bool
	once     sync.Once
	reached  chan struct{}
	released chan struct{}
	relOnce  sync.Once
}

func newGate(match func(name string, body bson.Raw) bool) *cmdGate {
	return &cmdGate{match: match, reached: make(chan struct{}), released: make(chan struct{})}
}

func (g *cmdGate) monitor() *event.CommandMonitor {
	return &event.CommandMonitor{Started: func(_ context.Context, e *event.CommandStartedEvent) {
		if !g.match(e.CommandName, e.Command) {
			return
		}
		first := false
		g.once.Do(func() { first = true })
		if !first {
			return
		}
		close(g.reached)
		<-g.released
	}}
}

// Reached is closed when the paused command is about to be sent.
func (g *cmdGate) Reached() <-chan struct{} { return g.reached }

// Release lets the paused command go (idempotent).
func (g *cmdGate) Release() { g.relOnce.Do(func() { close(g.released) }) }

// gatedRotator is a rotator on a client of its own whose first command
// matching match pauses until the gate is released (released at cleanup).
func gatedRotator(t *testing.T, mdb *mongotest.DB, cfg rotation.Config, match func(string, bson.Raw) bool) (*rotation.Rotator, *cmdGate) {
	t.Helper()
	g := newGate(match)
	c := mdb.NewClient(t, options.Client().SetMonitor(g.monitor()))
	t.Cleanup(g.Release) // before the client's disconnect (cleanups run last first)
	return newRotator(t, c.Database(mdb.Name), cfg), g
}

func onColl(name, coll string) func(string, bson.Raw) bool {
	return func(n string, body bson.Raw) bool {
		if n != name {
			return false
		}
		c, _ := body.Lookup(name).StringValueOK()
		return c == coll
	}
}

// A recoverer reads the new key (not there yet) and the backup (reserved,
// not yet marked), and pauses before it reserves the backup itself.
// Meanwhile the owner inserts the key, marks the backup, answers early and
// its completion stops (cut by FinishWithin, or paused at its first
// background command until the recoverer is done); the used backup is then
// deleted, as the proxy's clean-up of used backups does. The recoverer
// resumes, finds the backup deleted and must not drop the claim: the
// answered key is live. It must stay live, the rotation be completed onto
// it, and no binding end on a deleted key.
func TestAdvEarly_RecovererBackupDeletedAfterAnswer(t *testing.T) {
	bg := context.Background()
	for _, paused := range []bool{false, true} {
		name := "owner's completion cut"
		if paused {
			name = "owner's completion paused until recovery ran"
		}
		t.Run(name, func(t *testing.T) {
			mdb := mongotest.New(t)
			db := mdb.Database
			seed(t, db, 4, 3, 3)

			claimed := make(chan struct{})
			goOn := make(chan struct{})
			cfg := rotation.Config{Owner: "o", NoLegacyRotator: true, AfterStep: func(_ context.Context, _ string, s rotation.Step) error {
				if s == rotation.StepClaim {
					close(claimed)
					<-goOn
				}
				return nil
			}}
			var o *rotation.Rotator
			var ogate *cmdGate
			if paused {
				// The owner's first background command is the activation,
				// an update of the keys collection.
				o, ogate = gatedRotator(t, mdb, cfg, onColl("update", testPool.KeysCollection))
			} else {
				cfg.FinishWithin = time.Nanosecond
				o = newRotator(t, db, cfg)
			}
			answered := rotateAsync(o, "key-002", "unauthorized")
			<-claimed

			// The recoverer pauses right before its reservation.
			r, rgate := gatedRotator(t, mdb, rotation.Config{Owner: "r"}, onColl("findAndModify", testPool.BackupsCollection))
			recovered := recoverAsync(r)
			<-rgate.Reached()

			close(goOn)
			a := <-answered
			if a.err != nil || a.res.Outcome != rotation.Rotated {
				t.Fatalf("owner: %+v, %v; want rotated early", a.res, a.err)
			}
			b := a.res.NewKeyID
			if !paused {
				if err := o.Wait(bg); err != nil {
					t.Fatal(err)
				}
				if n := count(t, db, testPool.KeysCollection, bson.M{"_id": b, "pendingRotation": bson.M{"$exists": true}}); n != 1 {
					t.Fatalf("the owner's completion was not cut before the activation: the test proves nothing")
				}
			} else {
				<-ogate.Reached()
			}
			if n := count(t, db, testPool.BackupsCollection, bson.M{"_id": b, "usedAt": bson.M{"$exists": true}}); n != 1 {
				t.Fatalf("backup %s not marked used at the answer", b)
			}
			// The clean-up of used backups deletes it.
			if _, err := db.Collection(testPool.BackupsCollection).DeleteOne(bg, bson.M{"_id": b}); err != nil {
				t.Fatal(err)
			}
			rgate.Release()
			if err := <-recovered; err != nil {
				t.Logf("recover: %v", err)
			}
			if paused {
				ogate.Release()
				if err := o.Wait(bg); err != nil {
					t.Fatal(err)
				}
			}
			if n := count(t, db, testPool.KeysCollection, bson.M{"_id": b}); n != 1 {
				t.Errorf("the answered key %s was removed", b)
			}
			// The next recovery pass completes whatever is left.
			if rep, err := newRotator(t, db, rotation.Config{Owner: "next"}).Recover(bg); err != nil || rep.Failed != 0 {
				t.Errorf("recover: %+v, %v", rep, err)
			}
			if n := count(t, db, testPool.KeysCollection, bson.M{"_id": b}); n != 1 {
				t.Errorf("the answered key %s is not live after recovery", b)
			}
			if n := count(t, db, rotation.JournalCollection, bson.M{"_id": a.res.RotationID, "state": "done"}); n != 1 {
				t.Errorf("the answered rotation %s is not done", a.res.RotationID)
			}
			if n := count(t, db, testPool.KeysCollection, bson.M{}); n != 4 {
				t.Errorf("pool size %d, want 4", n)
			}
			if n := count(t, db, testPool.BindingsCollection, bson.M{testPool.BindingKeyField: b}); n != 3 {
				t.Errorf("%d bindings on the answered key %s, want 3", n, b)
			}
			if n := danglingBindings(t, db); n != 0 {
				t.Errorf("%d bindings on no live key", n)
			}
			if n := count(t, db, testPool.HistoryCollection, bson.M{"keyId": "key-002"}); n != 1 {
				t.Errorf("%d history records of key-002, want 1", n)
			}
		})
	}
}

// danglingBindings counts bindings whose key is not live.
func danglingBindings(t *testing.T, db *mongo.Database) int {
	t.Helper()
	ctx := context.Background()
	cur, err := db.Collection(testPool.BindingsCollection).Find(ctx, bson.M{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for cur.Next(ctx) {
		k := cur.Current.Lookup(testPool.BindingKeyField)
		if count(t, db, testPool.KeysCollection, bson.M{"_id": k}) == 0 {
			n++
		}
	}
	return n
}

// The claimed backup is deleted (by hand) while the owner is paused after
// its reservation. A recoverer sees neither the key nor the backup and
// pauses right before it drops the claim; the owner resumes, inserts the
// key, its backup mark matches nothing, and its journal read finds the
// claim still there. It must not answer early: the recoverer then drops
// the claim and the next sweep removes the key as a late insert. Whatever
// the owner answers, a key it answered must stay live.
func TestAdvEarly_OwnerAnswersWithBackupMarkUnmatched(t *testing.T) {
	bg := context.Background()
	mdb := mongotest.New(t)
	db := mdb.Database
	seed(t, db, 4, 3, 3)

	claimed := make(chan struct{})
	goOn := make(chan struct{})
	o := newRotator(t, db, rotation.Config{Owner: "o", NoLegacyRotator: true, FinishWithin: time.Nanosecond,
		AfterStep: func(_ context.Context, _ string, s rotation.Step) error {
			if s == rotation.StepClaim {
				close(claimed)
				<-goOn
			}
			return nil
		}})
	answered := rotateAsync(o, "key-002", "unauthorized")
	<-claimed
	var e struct {
		BackupID string `bson:"backupId"`
	}
	if err := db.Collection(rotation.JournalCollection).FindOne(bg, bson.M{"oldKeyId": "key-002"}).Decode(&e); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Collection(testPool.BackupsCollection).DeleteOne(bg, bson.M{"_id": e.BackupID}); err != nil {
		t.Fatal(err)
	}
	// The recoverer pauses right before it drops the claim.
	r, rgate := gatedRotator(t, mdb, rotation.Config{Owner: "r"}, onColl("delete", rotation.JournalCollection))
	recovered := recoverAsync(r)
	<-rgate.Reached()
	close(goOn)
	a := <-answered
	t.Logf("owner: %+v, %v", a.res, a.err)
	if err := o.Wait(bg); err != nil {
		t.Fatal(err)
	}
	rgate.Release()
	if err := <-recovered; err != nil {
		t.Logf("recover: %v", err)
	}
	if _, err := newRotator(t, db, rotation.Config{Owner: "next"}).Recover(bg); err != nil {
		t.Logf("recover: %v", err)
	}
	if a.err == nil && a.res.Outcome == rotation.Rotated {
		if n := count(t, db, testPool.KeysCollection, bson.M{"_id": a.res.NewKeyID}); n != 1 {
			t.Errorf("the key answered, %s, was removed", a.res.NewKeyID)
		}
	}
	if n := danglingBindings(t, db); n != 0 {
		t.Errorf("%d bindings on no live key", n)
	}
	if n := count(t, db, testPool.KeysCollection, bson.M{}); n != 4 {
		t.Errorf("pool size %d, want 4", n)
	}
}

// crashForwardOnly leaves key-001's forward-only rotation as a process
// killed at once after step s leaves it (its claim recorded forwardOnly).
func crashForwardOnly(s rotation.Step) func(t *testing.T, db *mongo.Database) {
	return func(t *testing.T, db *mongo.Database) {
		t.Helper()
		r := newRotator(t, db, rotation.Config{Owner: "crashed", NoLegacyRotator: true, FinishWithin: time.Nanosecond, AfterStep: crashAfter(s)})
		res, err := r.Rotate(context.Background(), "key-001", "manual")
		if err := r.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
		if n := count(t, db, rotation.JournalCollection, bson.M{"oldKeyId": "key-001", "state": "claimed", "forwardOnly": true}); n != 1 {
			t.Fatalf("rotate: %+v, %v: no unfinished forward-only rotation left", res, err)
		}
	}
}

// TestHeldCommandDeliveredLate for the recoverer of a forward-only
// rotation (never undone), left right after its claim (recovered by a
// rotator without the option) and with its key inserted and its backup
// marked, where it answers (recovered by one with the option): every
// command of the recovery held, its sender giving up, another process
// recovering and rotating onward, then the command delivered. A guard:
// the held runs of the existing test recover only entries that are not
// forward-only.
func TestAdvEarly_HeldCommandForwardOnlyRecoverer(t *testing.T) {
	if testing.Short() {
		t.Skip("a fresh store for each command held")
	}
	recoverRun := func(ctx context.Context, r *rotation.Rotator) error {
		_, err := r.Recover(ctx)
		return err
	}
	runs := []heldRun{
		{name: "fo-claimed-recoverer", prepare: crashForwardOnly(rotation.StepClaim), run: recoverRun},
		{name: "fo-answered-recoverer", prepare: crashForwardOnly(rotation.StepMarkBackup), run: recoverRun, early: true},
	}
	heldDeliveredLate(t, runs)
}

// Three processes rotate keys answering early, and at once rotate the keys
// they were answered onward, crashing at random steps (their completions
// too), while a recoverer without the option runs pass after pass. After
// the last recovery every answered key is live or was itself rotated
// onward, and every invariant holds.
func TestAdvEarly_ChainsWithRecoverersRacing(t *testing.T) {
	bg := context.Background()
	mdb := mongotest.New(t)
	db := mdb.Database
	const keys, backups, rotations = 5, 30, 14
	seed(t, db, keys, backups, 2)

	var mu sync.Mutex
	var answered []string
	budget := rotations
	take := func() bool {
		mu.Lock()
		defer mu.Unlock()
		budget--
		return budget >= 0
	}
	liveKeys := func() []string {
		cur, err := db.Collection(testPool.KeysCollection).Find(bg, bson.M{}, options.Find().SetProjection(bson.M{"_id": 1}))
		if err != nil {
			t.Error(err)
			return nil
		}
		var ids []string
		for cur.Next(bg) {
			ids = append(ids, cur.Current.Lookup("_id").StringValue())
		}
		return ids
	}
	stop := make(chan struct{})
	recDone := make(chan struct{})
	go func() {
		defer close(recDone)
		q := newRotator(t, mdb.NewClient(t).Database(mdb.Name), rotation.Config{Owner: "rec"})
		for {
			select {
			case <-stop:
				return
			default:
			}
			_, _ = q.Recover(bg)
		}
	}()
	var wg sync.WaitGroup
	var procs []*rotation.Rotator
	for p := range 3 {
		rng := newLockedRand(uint64(p + 1))
		r := newRotator(t, mdb.NewClient(t).Database(mdb.Name), rotation.Config{Owner: fmt.Sprintf("p%d", p), NoLegacyRotator: true,
			AfterStep: func(context.Context, string, rotation.Step) error {
				if rng.chance(0.08) {
					return errCrash
				}
				return nil
			}})
		procs = append(procs, r)
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := ""
			for take() {
				key := next
				if key == "" {
					ids := liveKeys()
					if len(ids) == 0 {
						return
					}
					key = ids[rng.intN(len(ids))]
				}
				res, err := r.Rotate(bg, key, "manual")
				next = ""
				if err == nil && res.Outcome == rotation.Rotated {
					mu.Lock()
					answered = append(answered, res.NewKeyID)
					mu.Unlock()
					if rng.chance(0.5) {
						next = res.NewKeyID
					}
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-recDone
	for _, r := range procs {
		if err := r.Wait(bg); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if rep, err := newRotator(t, db, rotation.Config{Owner: "last"}).Recover(bg); err != nil || rep.Failed != 0 {
			t.Errorf("recover: %+v, %v", rep, err)
		}
	}
	t.Logf("%d rotations answered", len(answered))
	for _, k := range answered {
		live := count(t, db, testPool.KeysCollection, bson.M{"_id": k})
		onward := count(t, db, rotation.JournalCollection, bson.M{"oldKeyId": k, "state": "done"})
		if live+onward != 1 {
			t.Errorf("answered key %s: live %d, rotated onward %d", k, live, onward)
		}
	}
	if n := danglingBindings(t, db); n != 0 {
		t.Errorf("%d bindings on no live key", n)
	}
	checkInvariants(t, db, keys)
}

// lockedRand is a seeded source shared by a process's goroutines.
type lockedRand struct {
	mu  sync.Mutex
	rng *rand.Rand
}

func newLockedRand(seed uint64) *lockedRand {
	return &lockedRand{rng: rand.New(rand.NewPCG(seed, seed))}
}

func (l *lockedRand) chance(p float64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rng.Float64() < p
}

func (l *lockedRand) intN(n int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rng.IntN(n)
}

// Misconfigured: a forward-only rotation (NoLegacyRotator) runs next to the
// proxy's own rotator after all, which runs whole at every step of ours, and
// ours whole at every step of it. Documented as the option's precondition:
// the pool may grow by one. Nothing may be lost: the key ours answered
// stays live, no binding is left on a deleted key, every used backup is a
// live key, and a rotation of ours that completed keeps its history record.
// A guard (it passes): it pins what the misconfiguration costs.
func TestAdvEarly_ForwardOnlyNextToLegacy(t *testing.T) {
	ctx := context.Background()
	check := func(t *testing.T, db *mongo.Database, res rotation.Result, err error) {
		t.Helper()
		t.Logf("ours: %+v, %v", res, err)
		for range 2 {
			if _, err := newRotator(t, db, rotation.Config{}).Recover(ctx); err != nil {
				t.Fatalf("recover: %v", err)
			}
		}
		n := count(t, db, testPool.KeysCollection, bson.M{})
		if n != 3 && n != 4 {
			t.Errorf("pool size %d, want 3 (or 4: both replacements kept)", n)
		}
		if err == nil && res.Outcome == rotation.Rotated {
			if count(t, db, testPool.KeysCollection, bson.M{"_id": res.NewKeyID}) != 1 {
				t.Errorf("the answered key %s is not live", res.NewKeyID)
			}
		}
		if count(t, db, testPool.KeysCollection, bson.M{"_id": "key-001"}) != 0 {
			t.Error("key-001 still live")
		}
		if n := danglingBindings(t, db); n != 0 {
			t.Errorf("%d bindings on no live key", n)
		}
		if n := count(t, db, testPool.BindingsCollection, bson.M{}); n != 6 {
			t.Errorf("%d bindings, want 6", n)
		}
		if reps := count(t, db, testPool.KeysCollection, bson.M{"replacedKey": "key-001"}); reps < 1 {
			t.Error("key-001 has no live replacement")
		}
		cur, err := db.Collection(testPool.BackupsCollection).Find(ctx, bson.M{"isUsed": true})
		if err != nil {
			t.Fatal(err)
		}
		for cur.Next(ctx) {
			id := cur.Current.Lookup("_id").StringValue()
			if count(t, db, testPool.KeysCollection, bson.M{"_id": id}) == 0 {
				t.Errorf("used backup %s is not a live key", id)
			}
		}
		done := count(t, db, rotation.JournalCollection, bson.M{"state": "done"})
		if h := count(t, db, testPool.HistoryCollection, bson.M{"_id": bson.M{"$regex": "^rot_"}}); h != done {
			t.Errorf("%d history records of ours for %d rotations done", h, done)
		}
		if n := count(t, db, rotation.JournalCollection, bson.M{"state": bson.M{"$ne": "done"}}); n != 0 {
			t.Errorf("%d rotations of ours not done", n)
		}
	}
	for _, k := range rotation.Steps {
		t.Run("legacy after our "+k.String(), func(t *testing.T) {
			db := mongotest.New(t).Database
			seed(t, db, 3, 4, 2)
			ran := false
			r := newRotator(t, db, rotation.Config{NoLegacyRotator: true, AfterStep: func(_ context.Context, _ string, s rotation.Step) error {
				if s == k && !ran {
					ran = true
					legacyRotate(t, db, "key-001", nil)
				}
				return nil
			}})
			res, err := r.Rotate(ctx, "key-001", "manual")
			if werr := r.Wait(ctx); werr != nil {
				t.Fatal(werr)
			}
			check(t, db, res, err)
		})
	}
	for j := 1; j <= legacySteps; j++ {
		t.Run(fmt.Sprintf("ours after legacy step %d", j), func(t *testing.T) {
			db := mongotest.New(t).Database
			seed(t, db, 3, 4, 2)
			r := newRotator(t, db, rotation.Config{NoLegacyRotator: true})
			var res rotation.Result
			var err error
			legacyRotate(t, db, "key-001", func(step int) {
				if step == j {
					res, err = r.Rotate(ctx, "key-001", "manual")
					if werr := r.Wait(ctx); werr != nil {
						t.Error(werr)
					}
				}
			})
			check(t, db, res, err)
		})
	}
}

// Close is called, with an ended context, while rotations answering early
// are under way: every key answered stays live, no command of the rotator
// is sent once Close and every Rotate returned (nothing runs on in the
// background), and recovery completes what Close cut. A guard (it passes).
func TestAdvEarly_CloseRacingRotate(t *testing.T) {
	bg := context.Background()
	mdb := mongotest.New(t)
	db := mdb.Database
	const keys = 6
	seed(t, db, keys+1, keys+1, 2)
	var after sync.Mutex
	closedAll := false
	late := 0
	c := mdb.NewClient(t, options.Client().SetMonitor(&event.CommandMonitor{Started: func(context.Context, *event.CommandStartedEvent) {
		after.Lock()
		defer after.Unlock()
		if closedAll {
			late++
		}
	}}))
	r := newRotator(t, c.Database(mdb.Name), rotation.Config{NoLegacyRotator: true})
	var wg sync.WaitGroup
	results := make([]rotation.Result, keys)
	start := make(chan struct{})
	first := make(chan struct{}, keys)
	for i := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			results[i], _ = r.Rotate(bg, fmt.Sprintf("key-%03d", i), "manual")
			first <- struct{}{}
		}()
	}
	ended, cancel := context.WithCancel(bg)
	cancel()
	close(start)
	<-first // Close once one answer was given, the others under way
	closeErr := r.Close(ended)
	wg.Wait()
	after.Lock()
	closedAll = true
	after.Unlock()
	t.Logf("close: %v", closeErr)
	for i, res := range results {
		if res.Outcome == rotation.Rotated && count(t, db, testPool.KeysCollection, bson.M{"_id": res.NewKeyID}) != 1 {
			t.Errorf("key-%03d: answered %s, not live", i, res.NewKeyID)
		}
	}
	for range 2 {
		if rep, err := newRotator(t, db, rotation.Config{Owner: "next"}).Recover(bg); err != nil || rep.Failed != 0 {
			t.Errorf("recover: %+v, %v", rep, err)
		}
	}
	for i, res := range results {
		if res.Outcome == rotation.Rotated && count(t, db, testPool.KeysCollection, bson.M{"_id": res.NewKeyID}) != 1 {
			t.Errorf("key-%03d: answered %s, not live after recovery", i, res.NewKeyID)
		}
	}
	after.Lock()
	closedAll = false
	sent := late
	after.Unlock()
	if sent != 0 {
		t.Errorf("%d commands sent after Close and every Rotate returned", sent)
	}
	// A last Rotate on the closed rotator answers only once done.
	res, err := r.Rotate(bg, fmt.Sprintf("key-%03d", keys), "manual")
	if err != nil || res.Outcome != rotation.Rotated || count(t, db, rotation.JournalCollection, bson.M{"_id": res.RotationID, "state": "done"}) != 1 {
		t.Errorf("rotate after close: %+v, %v; want rotated and done", res, err)
	}
	checkInvariants(t, db, keys+1)
}

// An entry claimed without the option (no forwardOnly: an older version,
// or a process not told) is recovered by a rotator with the option after
// the proxy's own rotator rotated its key: it was never answered early, so
// it still undoes itself and the pool keeps its size. A guard (it passes).
func TestAdvEarly_EntryWithoutForwardOnlyStillUndone(t *testing.T) {
	ctx := context.Background()
	for _, after := range []rotation.Step{rotation.StepClaim, rotation.StepInsertKey, rotation.StepMarkBackup, rotation.StepActivateKey} {
		t.Run("crash after "+after.String(), func(t *testing.T) {
			db := mongotest.New(t).Database
			seed(t, db, 3, 4, 2)
			r := newRotator(t, db, rotation.Config{AfterStep: crashAfter(after)})
			if _, err := r.Rotate(ctx, "key-001", "manual"); err == nil {
				t.Fatal("want the simulated crash")
			}
			if n := count(t, db, rotation.JournalCollection, bson.M{"forwardOnly": bson.M{"$exists": true}}); n != 0 {
				t.Fatalf("the entry records forwardOnly")
			}
			legacyRotate(t, db, "key-001", nil)
			for range 2 {
				if _, err := newRotator(t, db, rotation.Config{NoLegacyRotator: true}).Recover(ctx); err != nil {
					t.Fatalf("recover: %v", err)
				}
			}
			coexistInvariants(t, db)
		})
	}
}

// answer is what Rotate answered.
type answer struct {
	res rotation.Result
	err error
}

// rotateAsync rotates key in a goroutine of its own and hands the answer
// over once Rotate returns.
func rotateAsync(r *rotation.Rotator, key, reason string) <-chan answer {
	answered := make(chan answer, 1)
	go func() {
		res, err := r.Rotate(context.Background(), key, reason)
		answered <- answer{res, err}
	}()
	return answered
}

// recoverAsync runs r.Recover in a goroutine; its error arrives on the
// channel returned.
func recoverAsync(r *rotation.Rotator) <-chan error {
	recovered := make(chan error, 1)
	go func() {
		_, err := r.Recover(context.Background())
		recovered <- err
	}()
	return recovered
}
