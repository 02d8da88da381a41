package lease_test

import (
	"context"
	"errors"
	"testing"
	"time"

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
