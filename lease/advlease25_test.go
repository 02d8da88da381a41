package lease_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/lease"
)

// acquireFor runs l.Acquire on clock for at most rounds retry periods (of
// fake time), running between while Acquire waits for each next round; past
// that it cancels Acquire, which then returns context.Canceled.
func acquireFor(t *testing.T, l *lease.Lease, clock *stepClock, rounds int, between func()) error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- l.Acquire(ctx) }()
	for n := 0; ; n++ {
		select {
		case err := <-done:
			return err
		case <-clock.waiting:
			if n >= rounds {
				cancel() // Acquire sees it in the select it is entering
				continue
			}
			between()
			clock.Advance(retry)
		case <-time.After(5 * time.Minute): // a guard against a hang, not a wait
			t.Fatal("Acquire neither returned nor waited for its next round")
		}
	}
}

// Two processes can share an instance id: the default is hostname-pid, and
// containers on the host network share the host's name and all run as pid 1
// (a --once cron job beside the daemon, say). When both go for the same
// epoch and the other one's insert wins (this one's lost the race, or was
// cut before it ran), the record of the epoch this one tried carries its
// instance id but is the other's live lease, renewed every retry period:
// Acquire must report it held, as it did before it learned to skip its own
// half-done attempt, not wait it out until its caller gives up.
func TestAdvLease25_SameInstanceLiveHolderIsNotOwnAttempt(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name  string
		fault mongotest.Fault // on this candidate's insert; none: it loses on the unique _id
	}{
		{name: "own insert lost the race"},
		{name: "own insert cut before it ran", fault: mongotest.Before},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mdb := mongotest.New(t)
			direct := mdb.Database.Collection(lease.Collection)
			seed(t, direct)
			proxy := mdb.Proxy(t)
			coll := mdb.NewClient(t, options.Client().ApplyURI(proxy.URI())).Database(mdb.Name).Collection(lease.Collection)
			clock := newStepClock()
			other := candidate(t, direct, "shared", clock.FakeClock)
			raced := false
			// The caller's floor is read after the lease record and the
			// floor document, before the floor is raised: the other
			// process runs its whole round right there, so both go for
			// the same epoch and its insert comes first.
			once := newLease(t, coll, lease.Config{Name: "spendchecker", Instance: "shared", LeaseDuration: dur, RenewDeadline: renew, RetryPeriod: retry, Clock: clock,
				Floor: func(context.Context) (int64, error) {
					if !raced {
						raced = true
						other.Tick(ctx)
					}
					return 0, nil
				}})
			if tt.fault != 0 {
				// read the record, read the floor, raise it, insert
				proxy.FailCommand(4, tt.fault)
			}
			bothLed := false
			err := acquireFor(t, once, clock, int(3*dur/retry), func() {
				other.Tick(ctx)
				if _, ok := other.Epoch(); ok && once.IsLeader(ctx) == nil {
					bothLed = true
				}
			})
			if !raced {
				t.Fatal("setup: the other process never ran its round")
			}
			if e, ok := other.Epoch(); !ok || e != 1 {
				t.Fatalf("setup: the other process holds epoch %d (leads %v), want it leading epoch 1", e, ok)
			}
			if cmds := proxy.Commands(); len(cmds) < 4 || cmds[3] != "insert leases" {
				t.Fatalf("setup: the fourth command was not the insert: %v", cmds)
			}
			if bothLed {
				t.Fatal("both processes led at once")
			}
			if !errors.Is(err, lease.ErrHeld) {
				t.Fatalf("Acquire against a live holder renewing every retry period for %v: %v, want %v", 3*dur, err, lease.ErrHeld)
			}
		})
	}
}

// pauseClock is a fake clock whose next Since, once armed, runs pause after
// reading the time and before returning it: the process stops right after a
// check of how long ago something happened, as a GC pause or SIGSTOP would.
// When late is set, an AfterFunc's function runs only once late is closed,
// as when the goroutine a timer starts has not been scheduled yet (a
// resumed process runs its own goroutines and its timers' in any order).
type pauseClock struct {
	*clockwork.FakeClock
	pause chan func()
	late  chan struct{}
}

func (c pauseClock) Since(t time.Time) time.Duration {
	d := c.FakeClock.Since(t)
	select {
	case f := <-c.pause:
		f()
	default:
	}
	return d
}

func (c pauseClock) AfterFunc(d time.Duration, f func()) clockwork.Timer {
	if c.late == nil {
		return c.FakeClock.AfterFunc(d, f)
	}
	return c.FakeClock.AfterFunc(d, func() { <-c.late; f() })
}

// A holder pauses inside a renewal, after checking its renew deadline and
// before its store calls (each with its own bound); a candidate waits out
// the lease duration and decides to take over; the holder's renewal then
// lands, before the candidate's insert, so no newer epoch is there to see.
// The holder must not count that renewal: it came after its renew deadline,
// and counting it would make it lead alongside the new holder; whether the
// timer that ends its leader context has run yet must not matter.
func TestAdvLease25_RenewalPausedPastItsDeadlineLandsBeforeTakeover(t *testing.T) {
	ctx := context.Background()
	for _, timerLate := range []bool{false, true} {
		t.Run(fmt.Sprintf("deadline timer late=%v", timerLate), func(t *testing.T) {
			coll := mongotest.New(t).Database.Collection(lease.Collection)
			fake := clockwork.NewFakeClock()
			clock := pauseClock{FakeClock: fake, pause: make(chan func(), 1)}
			if timerLate {
				clock.late = make(chan struct{})
				defer close(clock.late)
			}
			holder := candidate(t, coll, "holder", clock)
			paused, resume, renewed := make(chan struct{}), make(chan struct{}), make(chan struct{})
			// The candidate reads the floor only once it has decided to
			// take over, between its read of the record and its insert:
			// the holder's renewal runs right there.
			cand := newLease(t, coll, lease.Config{Name: "spendchecker", Instance: "cand", LeaseDuration: dur, RenewDeadline: renew, RetryPeriod: retry, Clock: fake,
				Floor: func(context.Context) (int64, error) {
					if !isClosed(resume) {
						close(resume)
						<-renewed
					}
					return 0, nil
				}})
			holder.Tick(ctx)
			cand.Tick(ctx)
			if holder.IsLeader(ctx) != nil {
				t.Fatal("setup: the holder does not lead")
			}
			fake.Advance(renew - retry)
			clock.pause <- func() { close(paused); <-resume }
			go func() { holder.Tick(ctx); close(renewed) }()
			<-paused
			start := fake.Now()
			for !isClosed(resume) {
				if fake.Since(start) > 2*dur {
					close(resume)
					<-renewed
					t.Fatal("the candidate never took over")
				}
				fake.Advance(retry)
				if holder.IsLeader(ctx) == nil {
					t.Fatal("the paused holder leads past its renew deadline")
				}
				cand.Tick(ctx)
			}
			<-renewed
			e, ok := cand.Epoch()
			if !ok {
				t.Fatal("the candidate did not take over")
			}
			if he, hok := holder.Epoch(); hok {
				t.Fatalf("the holder (epoch %d) and the candidate (epoch %d) both lead", he, e)
			}
			if lctx, ok := holder.LeaderContext(); ok {
				t.Fatalf("the holder has a leader context (ended: %v) beside the candidate's epoch %d", lctx.Err(), e)
			}
		})
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// A candidate's insert is held in the network until after it gave up on it
// (its floor already raised), then delivered: before anyone took over, or
// after another candidate took a newer epoch. The late record is nobody's
// lease: at no point do two candidates lead, and one leads in the end.
func TestAdvLease25_LateInsertAfterGivingUp(t *testing.T) {
	ctx := context.Background()
	for _, deliverAfterTakeover := range []bool{false, true} {
		t.Run(fmt.Sprintf("delivered after a takeover=%v", deliverAfterTakeover), func(t *testing.T) {
			mdb := mongotest.New(t)
			direct := mdb.Database.Collection(lease.Collection)
			seed(t, direct)
			proxy := mdb.Proxy(t)
			coll := mdb.NewClient(t, options.Client().ApplyURI(proxy.URI())).Database(mdb.Name).Collection(lease.Collection)
			clock := clockwork.NewFakeClock()
			a := candidate(t, coll, "a", clock)
			// The held insert is never answered: a's call ends at this
			// bound, however long it is, so a short one only saves time.
			lease.SetStoreTimeout(a, 2*time.Second)
			b := candidate(t, direct, "b", clock)
			held := proxy.HoldCommand(4) // read the record, read the floor, raise it, insert
			a.Tick(ctx)
			select {
			case <-held.Arrived():
			default:
				t.Fatalf("setup: no command held; commands: %v", proxy.Commands())
			}
			if held.Command != "insert leases" {
				t.Fatalf("setup: held %q, not the insert", held.Command)
			}
			if a.IsLeader(ctx) == nil {
				t.Fatal("a leads without an answer to its insert")
			}
			lease.SetStoreTimeout(a, time.Minute)
			deliver := func() {
				if _, err := held.Deliver(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if !deliverAfterTakeover {
				deliver()
			}
			ls := []*lease.Lease{a, b}
			led := false
			for round := range int(4 * dur / retry) {
				clock.Advance(retry)
				for _, l := range ls {
					l.Tick(ctx)
				}
				n := len(leaders(ls))
				if n > 1 {
					t.Fatalf("round %d: both lead", round)
				}
				if n == 1 && !led {
					led = true
					if deliverAfterTakeover {
						deliver()
					}
				}
			}
			if !led {
				t.Fatal("nobody took over")
			}
			if len(leaders(ls)) != 1 {
				t.Fatal("the leader lost the lease to the late record")
			}
		})
	}
}
