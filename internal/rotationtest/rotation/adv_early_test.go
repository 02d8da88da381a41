package rotation_test

import (
	"context"
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
			type answer struct {
				res rotation.Result
				err error
			}
			answered := make(chan answer, 1)
			go func() {
				res, err := o.Rotate(bg, "key-002", "unauthorized")
				answered <- answer{res, err}
			}()
			<-claimed

			// The recoverer pauses right before its reservation.
			r, rgate := gatedRotator(t, mdb, rotation.Config{Owner: "r"}, onColl("findAndModify", testPool.BackupsCollection))
			recovered := make(chan error, 1)
			go func() {
				_, err := r.Recover(bg)
				recovered <- err
			}()
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
	type answer struct {
		res rotation.Result
		err error
	}
	answered := make(chan answer, 1)
	go func() {
		res, err := o.Rotate(bg, "key-002", "unauthorized")
		answered <- answer{res, err}
	}()
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
	recovered := make(chan error, 1)
	go func() {
		_, err := r.Recover(bg)
		recovered <- err
	}()
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
