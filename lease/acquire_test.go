package lease_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/lease"
)

// stepClock is a fake clock that says when a loop is about to wait on one
// of its tickers, so a test moves time on only once the loop has finished
// its round, however slow the machine.
type stepClock struct {
	*clockwork.FakeClock
	waiting chan struct{}
}

func newStepClock() *stepClock {
	return &stepClock{FakeClock: clockwork.NewFakeClock(), waiting: make(chan struct{})}
}

func (c *stepClock) NewTicker(d time.Duration) clockwork.Ticker {
	return stepTicker{c.FakeClock.NewTicker(d), c.waiting}
}

type stepTicker struct {
	clockwork.Ticker
	waiting chan struct{}
}

// Chan is read once per round, just before the loop blocks.
func (t stepTicker) Chan() <-chan time.Time {
	t.waiting <- struct{}{}
	return t.Ticker.Chan()
}

// acquire runs l.Acquire on clock; each time Acquire waits for its next
// round, between runs and the clock moves on one retry period.
func acquire(t *testing.T, l *lease.Lease, clock *stepClock, between func()) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- l.Acquire(context.Background()) }()
	for {
		select {
		case err := <-done:
			return err
		case <-clock.waiting:
			between()
			clock.Advance(retry)
		case <-time.After(5 * time.Minute): // a guard against a hang, not a wait
			t.Fatal("Acquire neither returned nor waited for its next round")
		}
	}
}

// Acquire (used by --once) reports a live holder instead of waiting it out,
// takes a released lease at once and a dead holder's after the lease
// duration. Its own attempt that failed half-way (the epoch floor raised
// but the record not written, or the record written and the reply lost, as
// on a slow store) is not another live holder: it waits that out too.
func TestAcquire(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		holder  string // what the lease's other holder does: "", "renews", "released", "crashed"
		fault   mongotest.Fault
		want    error
		minWait time.Duration // of fake time before Acquire returns
	}{
		{name: "live holder", holder: "renews", want: lease.ErrHeld},
		{name: "holder released", holder: "released"},
		{name: "holder crashed", holder: "crashed", minWait: dur},
		{name: "own insert cut before it ran", fault: mongotest.Before, minWait: dur},
		{name: "own insert ran, its reply lost", fault: mongotest.After, minWait: dur},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mdb := mongotest.New(t)
			proxy := mdb.Proxy(t)
			coll := mdb.NewClient(t, options.Client().ApplyURI(proxy.URI())).Database(mdb.Name).Collection(lease.Collection)
			clock := newStepClock()
			between := func() {}
			if tt.holder != "" {
				holder := candidate(t, coll, "holder", clock.FakeClock)
				holder.Tick(ctx)
				if holder.IsLeader(ctx) != nil {
					t.Fatal("setup: the holder does not lead")
				}
				switch tt.holder {
				case "renews":
					between = func() { holder.Tick(ctx) }
				case "released":
					if err := holder.Release(ctx); err != nil {
						t.Fatal(err)
					}
				}
			}
			once := candidate(t, coll, "once", clock)
			if tt.fault != 0 {
				// Acquire's first round: read the newest record, read and
				// raise the epoch floor, insert the record.
				proxy.FailCommand(4, tt.fault)
			}
			start := clock.Now()
			err := acquire(t, once, clock, between)
			if tt.fault != 0 {
				if cmds := proxy.Commands(); len(cmds) < 4 || cmds[3] != "insert leases" {
					t.Fatalf("the cut command was not the insert: %v", cmds)
				}
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Acquire: %v, want %v", err, tt.want)
			}
			if waited := clock.Since(start); waited < tt.minWait {
				t.Errorf("Acquire returned after %v, before %v", waited, tt.minWait)
			}
			if _, leads := once.Epoch(); leads != (tt.want == nil) {
				t.Errorf("after Acquire returned %v, leads %v", err, leads)
			}
		})
	}
}

// On a slow store, every call taking 2 s (within the bound on one store
// call, 6 s here) but a round's calls together more than that, a candidate
// still takes the lease: each call has the bound, not the round.
func TestSlowStore(t *testing.T) {
	if testing.Short() {
		t.Skip("2 s of store latency a command")
	}
	ctx := context.Background()
	mdb := mongotest.New(t)
	proxy := mdb.Proxy(t)
	client := mdb.NewClient(t, options.Client().ApplyURI(proxy.URI()))
	reach(t, client)
	l := candidate(t, client.Database(mdb.Name).Collection(lease.Collection), "a", clockwork.NewFakeClock())
	lease.SetStoreTimeout(l, 6*time.Second)
	proxy.SetLatency(2 * time.Second)
	l.Tick(ctx)
	if _, ok := l.Epoch(); !ok {
		t.Fatalf("not leading after a round on a slow store; commands sent: %v", proxy.Commands())
	}
}
