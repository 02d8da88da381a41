package rotation_test

import (
	"context"
	"fmt"
	"strings"
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

// tripMeter counts the commands a client sends and how many of them a
// caller waits for one after another: a command's depth is one more than
// the deepest command that had completed when it started, so commands sent
// together count once. Each command is delayed by latency before it is
// sent (a remote store), which also keeps commands sent together from
// completing before their siblings start. The commands of a rotation's
// background completion run on a context with a deadline (FinishWithin),
// the caller's here on one without: those are counted apart (fg*).
type tripMeter struct {
	latency time.Duration
	mu      sync.Mutex
	depth   map[int64]int
	fg      map[int64]bool
	done    int // the deepest completed command
	cmds    []string
	ended   int // completed commands
	fgDone  int // the deepest completed command sent by the caller
	fgEnded int
}

func newTripMeter(latency time.Duration) *tripMeter {
	m := &tripMeter{latency: latency}
	m.reset()
	return m
}

func (m *tripMeter) monitor() *event.CommandMonitor {
	end := func(id int64) {
		m.mu.Lock()
		defer m.mu.Unlock()
		m.done = max(m.done, m.depth[id])
		m.ended++
		if m.fg[id] {
			m.fgDone = max(m.fgDone, m.depth[id])
			m.fgEnded++
		}
	}
	return &event.CommandMonitor{
		Started: func(ctx context.Context, e *event.CommandStartedEvent) {
			coll, _ := e.Command.Lookup(e.CommandName).StringValueOK()
			_, background := ctx.Deadline()
			m.mu.Lock()
			m.depth[e.RequestID] = m.done + 1
			m.fg[e.RequestID] = !background
			m.cmds = append(m.cmds, fmt.Sprintf("%d %s %s", m.done+1, e.CommandName, coll))
			m.mu.Unlock()
			if m.latency > 0 {
				time.Sleep(m.latency) // the simulated network, not a wait for an event
			}
		},
		Succeeded: func(_ context.Context, e *event.CommandSucceededEvent) { end(e.RequestID) },
		Failed:    func(_ context.Context, e *event.CommandFailedEvent) { end(e.RequestID) },
	}
}

// reset starts a new measurement.
func (m *tripMeter) reset() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.depth, m.fg, m.done, m.cmds, m.ended, m.fgDone, m.fgEnded = map[int64]int{}, map[int64]bool{}, 0, nil, 0, 0, 0
}

// read returns the completed commands and their sequential round trips:
// all of them, and those the caller sent (its answer).
func (m *tripMeter) read() (commands, sequential, caller, callerSeq int, list []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ended, m.done, m.fgEnded, m.fgDone, append([]string(nil), m.cmds...)
}

// meteredDB returns a database whose client goes through m, with enough
// connections open that commands sent together do not wait for one.
func meteredDB(t testing.TB, mdb *mongotest.DB, m *tripMeter) *mongo.Database {
	t.Helper()
	c := mdb.NewClient(t, options.Client().SetMonitor(m.monitor()))
	db := c.Database(mdb.Name)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := db.RunCommand(context.Background(), bson.M{"ping": 1}).Err(); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	return db
}

// TestRotateRoundTrips bounds the store commands of one uncontended
// rotation, and the round trips the caller waits for one after another
// (commands sent together count once), to its answer and in total, with
// and without the early answer. The list is logged with each command's
// depth, so a change shows which command came or went.
func TestRotateRoundTrips(t *testing.T) {
	type bound struct{ answerCmds, answerSeq, totalCmds, totalSeq int }
	cases := []struct {
		name string
		// replaced: the key was itself brought in by a rotation (the steady
		// state), so its rotation also looks for an unfinished arrival.
		replaced, warm, withDoc bool
		def, early              bound
	}{
		{name: "cold", def: bound{17, 14, 17, 14}, early: bound{10, 7, 17, 14}},
		{name: "cold-replaced", replaced: true, def: bound{17, 14, 17, 14}, early: bound{10, 7, 17, 14}},
		{name: "warm", warm: true, def: bound{16, 14, 16, 14}, early: bound{9, 7, 16, 14}},
		{name: "warm-replaced", warm: true, replaced: true, def: bound{16, 14, 16, 14}, early: bound{9, 7, 16, 14}},
		{name: "checker", warm: true, withDoc: true, def: bound{15, 14, 15, 14}, early: bound{8, 7, 15, 14}},
	}
	for _, tc := range cases {
		for _, early := range []bool{false, true} {
			want := tc.def
			if early {
				want = tc.early
			}
			t.Run(fmt.Sprintf("%s early=%v", tc.name, early), func(t *testing.T) {
				ctx := context.Background()
				mdb := mongotest.New(t)
				m := newTripMeter(20 * time.Millisecond)
				db := meteredDB(t, mdb, m)
				seed(t, mdb.Database, 3, 3, 2)
				r := newRotator(t, db, rotation.Config{NoLegacyRotator: early})
				if tc.warm {
					// A first rotation fills the rotator's cache of backups.
					if res, err := r.Rotate(ctx, "key-002", "manual"); err != nil || res.Outcome != rotation.Rotated {
						t.Fatalf("first rotation: %+v %v", res, err)
					}
					if err := r.Wait(ctx); err != nil {
						t.Fatal(err)
					}
				}
				if tc.replaced {
					if _, err := mdb.Database.Collection(testPool.KeysCollection).UpdateOne(ctx,
						bson.M{"_id": "key-000"}, bson.M{"$set": bson.M{"replacedKey": "gen0"}}); err != nil {
						t.Fatal(err)
					}
				}
				var opts []rotation.RotateOption
				if tc.withDoc {
					doc, err := mdb.Database.Collection(testPool.KeysCollection).FindOne(ctx, bson.M{"_id": "key-000"}).Raw()
					if err != nil {
						t.Fatal(err)
					}
					opts = append(opts, rotation.WithKeyDocument(doc))
				}
				m.reset()
				res, err := r.Rotate(ctx, "key-000", "manual", opts...)
				if err != nil || res.Outcome != rotation.Rotated {
					t.Fatalf("rotate: %+v %v", res, err)
				}
				if n := count(t, mdb.Database, testPool.KeysCollection, bson.M{"_id": res.NewKeyID}); n != 1 {
					t.Errorf("answered %s, which is not live", res.NewKeyID)
				}
				if err := r.Wait(ctx); err != nil {
					t.Fatal(err)
				}
				totalCmds, totalSeq, answerCmds, answerSeq, list := m.read()
				got := bound{answerCmds, answerSeq, totalCmds, totalSeq}
				msg := fmt.Sprintf("answer after %d commands, %d sequential round trips; finished after %d commands, %d sequential:\n%s",
					got.answerCmds, got.answerSeq, got.totalCmds, got.totalSeq, strings.Join(list, "\n"))
				if got.answerCmds > want.answerCmds || got.answerSeq > want.answerSeq || got.totalCmds > want.totalCmds || got.totalSeq > want.totalSeq {
					t.Errorf("want at most %+v; %s", want, msg)
				} else {
					t.Log(msg)
				}
				checkInvariants(t, mdb.Database, 3)
			})
		}
	}
}
