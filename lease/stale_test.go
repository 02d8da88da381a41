package lease_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readconcern"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/lease"
)

// holdEpoch4 makes a hold epoch 4 (three releases and retakes).
func holdEpoch4(t *testing.T, ctx context.Context, a *lease.Lease) {
	t.Helper()
	for i := range 4 {
		a.Tick(ctx)
		if i < 3 {
			if err := a.Release(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if e, ok := a.Epoch(); !ok || e != 4 {
		t.Fatalf("setup: a at epoch %d leader %v", e, ok)
	}
}

// Issue 13 case 4: the lease documents deleted by hand. The holder steps
// down at its next renewal; no candidate — one that watched the lease, or a
// fresh one that only has the epochs stored with observations (Floor) —
// takes over before the holder can have noticed, and none takes an epoch
// lower than one already used.
func TestDeletedLeaseDocuments(t *testing.T) {
	ctx := context.Background()
	for _, fresh := range []bool{false, true} {
		name := map[bool]string{false: "watching standby", true: "fresh process"}[fresh]
		t.Run(name, func(t *testing.T) {
			coll := mongotest.New(t).Database.Collection(lease.Collection)
			clock := clockwork.NewFakeClock()
			a := candidate(t, coll, "a", clock)
			holdEpoch4(t, ctx, a)
			var b *lease.Lease
			if fresh {
				b = newLease(t, coll, lease.Config{Name: "spendchecker", Instance: "b", LeaseDuration: dur, RenewDeadline: renew, RetryPeriod: retry, Clock: clock,
					Floor: func(context.Context) (int64, error) { return 4, nil }})
			} else {
				b = candidate(t, coll, "b", clock)
				b.Tick(ctx) // b has seen epoch 4
			}
			if _, err := coll.DeleteMany(ctx, bson.M{}); err != nil {
				t.Fatal(err)
			}
			ls := []*lease.Lease{a, b}
			for round := range 20 {
				clock.Advance(retry)
				for _, l := range []*lease.Lease{b, a} {
					l.Tick(ctx)
					if n := leaders(ls); len(n) > 1 {
						t.Fatalf("round %d: a and b lead at once", round)
					}
				}
			}
			if a.IsLeader(ctx) == nil {
				t.Fatal("holder whose record vanished still leads")
			}
			e, ok := b.Epoch()
			if !ok {
				t.Fatal("nobody leads after the lease duration")
			}
			if e <= 4 {
				t.Fatalf("new leader at epoch %d after epoch 4: the epoch went backwards", e)
			}
		})
	}
}

// Issue 13 case 5: a rolling change of the lease duration (15 s → 30 s).
// The holder with 30 s leads until its 20 s renew deadline; a candidate with
// 15 s must wait the holder's duration, not its own.
func TestHolderLeaseDurationIsHonoured(t *testing.T) {
	ctx := context.Background()
	coll := mongotest.New(t).Database.Collection(lease.Collection)
	clock := clockwork.NewFakeClock()
	long := newLease(t, coll, lease.Config{Name: "spendchecker", Instance: "long", LeaseDuration: 30 * time.Second,
		RenewDeadline: 20 * time.Second, RetryPeriod: 4 * time.Second, Clock: clock})
	short := candidate(t, coll, "short", clock)
	long.Tick(ctx)
	short.Tick(ctx)
	stalled := clock.Now() // long stops renewing (its store connection hangs)
	for clock.Since(stalled) < 40*time.Second {
		clock.Advance(retry)
		short.Tick(ctx)
		if long.IsLeader(ctx) == nil && short.IsLeader(ctx) == nil {
			t.Fatalf("both lead %v after the holder's last renewal", clock.Since(stalled))
		}
	}
	if short.IsLeader(ctx) != nil {
		t.Fatal("short never took over")
	}
}

// Issue 12 "Also", the lease's part: its writes ask for w:majority with
// journal and its reads for read concern majority, whatever the URI says.
func TestLeaseCommandsUseMajority(t *testing.T) {
	ctx := context.Background()
	mdb := mongotest.New(t)
	var mu sync.Mutex
	cmds := map[string]bson.Raw{}
	mon := &event.CommandMonitor{Started: func(_ context.Context, e *event.CommandStartedEvent) {
		mu.Lock()
		defer mu.Unlock()
		if _, seen := cmds[e.CommandName]; !seen {
			cmds[e.CommandName] = append(bson.Raw(nil), e.Command...)
		}
	}}
	seed(t, mdb.Database.Collection(lease.Collection)) // not through the monitored client
	client := mdb.NewClient(t, options.Client().SetMonitor(mon).SetWriteConcern(writeconcern.W1()).SetReadConcern(readconcern.Local()))
	coll := client.Database(mdb.Name).Collection(lease.Collection)
	l := candidate(t, coll, "a", clockwork.NewFakeClock())
	l.Tick(ctx)
	l.Tick(ctx)
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := l.Epoch(); ok {
		t.Fatal("still leading after release")
	}
	mu.Lock()
	defer mu.Unlock()
	for _, name := range []string{"insert", "update"} {
		c, ok := cmds[name]
		if !ok {
			t.Fatalf("no %s command seen", name)
		}
		w, _ := c.Lookup("writeConcern", "w").StringValueOK()
		j, _ := c.Lookup("writeConcern", "j").BooleanOK()
		if w != "majority" || !j {
			t.Errorf("%s write concern %v, want w:majority j:true", name, c.Lookup("writeConcern"))
		}
	}
	if c, ok := cmds["find"]; !ok || c.Lookup("readConcern", "level").String() != `"majority"` {
		t.Errorf("find read concern %v, want majority", cmds["find"].Lookup("readConcern"))
	}
}

// A first start on an empty lease collection cannot be told from every
// record deleted under a live holder: it leads after one lease duration of
// seeing nothing, not before (docs/design.md "Lease").
func TestFirstStartWaitsLeaseDuration(t *testing.T) {
	ctx := context.Background()
	coll := mongotest.New(t).Database.Collection(lease.Collection)
	clock := clockwork.NewFakeClock()
	l := newLease(t, coll, lease.Config{Name: "spendchecker", Instance: "a", LeaseDuration: dur, RenewDeadline: renew, RetryPeriod: retry, Clock: clock})
	start := clock.Now()
	for clock.Since(start) < dur {
		l.Tick(ctx)
		if l.IsLeader(ctx) == nil {
			t.Fatalf("led %v after a first start, before the lease duration", clock.Since(start))
		}
		clock.Advance(retry)
	}
	l.Tick(ctx)
	if e, ok := l.Epoch(); !ok || e != 1 {
		t.Fatalf("after the lease duration: epoch %d leader %v, want epoch 1", e, ok)
	}
}
