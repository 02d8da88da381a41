package lease_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/lease"
)

// Adversarial (issue 13 case 4): lease documents deleted by hand while a
// holder leads, and a candidate that starts afterwards, whose only floor is
// the epochs stored with observations (checker.MaxEpoch). That floor lags
// the holder's epoch whenever the holder has not written back yet — its
// first cycle is still running, or with adaptive cadence no key was due —
// or is 0 after the keys' spendEpoch were removed. docs/design.md "Lease" promises
// no two leaders and "epochs never go backwards, whatever is deleted".
func TestAdv13_DeletedRecordsFreshCandidateWithLaggingFloor(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		floor  int64  // highest spendEpoch on the keys
		delete bson.M // what the operator deletes
	}{
		// The previous leader (epoch 3) wrote observations; the holder (4) has not yet.
		{"newest record deleted, floor from the previous leader", 3, bson.M{"epoch": int64(4)}},
		// All lease records deleted and spendEpoch removed from the keys.
		{"all records deleted, no floor", 0, bson.M{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			coll := mongotest.New(t).Database.Collection(lease.Collection)
			clock := clockwork.NewFakeClock()
			a := candidate(t, coll, "a", clock)
			holdEpoch4(t, ctx, a)
			if _, err := coll.DeleteMany(ctx, tt.delete); err != nil {
				t.Fatal(err)
			}
			b := newLease(t, coll, lease.Config{Name: "spendchecker", Instance: "b", LeaseDuration: dur, RenewDeadline: renew, RetryPeriod: retry, Clock: clock,
				Floor: func(context.Context) (int64, error) { return tt.floor, nil }})
			ls := []*lease.Lease{a, b}
			for round := range 20 {
				for _, l := range []*lease.Lease{b, a} {
					l.Tick(ctx)
					if n := leaders(ls); len(n) > 1 {
						ea, _ := a.Epoch()
						eb, _ := b.Epoch()
						t.Fatalf("round %d: a (epoch %d) and b (epoch %d) lead at once", round, ea, eb)
					}
				}
				clock.Advance(retry)
			}
			if e, ok := b.Epoch(); ok && e <= 4 {
				t.Fatalf("b took epoch %d, not above the holder's 4", e)
			}
		})
	}
}

// Adversarial (issue 13 case 5): a record whose leaseDurationMs was edited
// by hand to something absurd (about 31 years). The holder is dead. The
// candidate waits "the longer of its own and the holder's" with no upper
// bound, so nobody ever polls again and every key sails past its budget.
// No setting the CLI accepts is documented anywhere near that; a candidate
// should cap what a record can make it wait.
func TestAdv13_AbsurdRecordedLeaseDurationBlocksFailoverForEver(t *testing.T) {
	ctx := context.Background()
	coll := mongotest.New(t).Database.Collection(lease.Collection)
	clock := clockwork.NewFakeClock()
	a := candidate(t, coll, "a", clock)
	a.Tick(ctx)
	if _, ok := a.Epoch(); !ok {
		t.Fatal("setup: a does not lead")
	}
	if _, err := coll.UpdateOne(ctx, bson.M{"epoch": int64(1)}, bson.M{"$set": bson.M{"leaseDurationMs": int64(1e12)}}); err != nil {
		t.Fatal(err)
	}
	// a crashes: it never ticks again.
	b := candidate(t, coll, "b", clock)
	for range 24 * 6 { // a day, ten minutes at a time (the record never changes)
		b.Tick(ctx)
		if b.IsLeader(ctx) == nil {
			return
		}
		clock.Advance(10 * time.Minute)
	}
	t.Fatal("a day after the holder died, still no leader: a hand-edited leaseDurationMs holds the lease for ever")
}

// Adversarial ("records ... edited by hand", missing or mistyped fields):
// one field of the newest record with the wrong type makes Latest fail to
// decode it, every round, for ever. The candidate treats that as the store
// being unreachable (one warn line, then debug) and never takes over from
// a dead holder: no replica polls again and every key sails past its
// budget. A record it cannot read should count as a used epoch it waits
// out (or skips), not as an outage.
func TestAdv13_MistypedRecordFieldBlocksFailoverForEver(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		set  bson.M
	}{
		{"epoch as a string", bson.M{"epoch": "1"}},
		{"released as a string", bson.M{"released": "no"}},
		{"holder as a number", bson.M{"holder": 7}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			coll := mongotest.New(t).Database.Collection(lease.Collection)
			clock := clockwork.NewFakeClock()
			a := candidate(t, coll, "a", clock)
			a.Tick(ctx)
			if _, ok := a.Epoch(); !ok {
				t.Fatal("setup: a does not lead")
			}
			// a crashes; an operator edits its record.
			if _, err := coll.UpdateOne(ctx, bson.M{"_id": "spendchecker/00000000000000000001"}, bson.M{"$set": tt.set}); err != nil {
				t.Fatal(err)
			}
			b := candidate(t, coll, "b", clock)
			for range 24 * 6 {
				b.Tick(ctx)
				if b.IsLeader(ctx) == nil {
					return
				}
				clock.Advance(10 * time.Minute)
			}
			t.Fatal("a day after the holder died, still no leader")
		})
	}
}

// Adversarial ("a record with a huge epoch"): an operator sets the newest
// record's epoch to the largest int64. The next epoch, epoch+1, wraps to a
// negative number: the candidate takes a negative epoch — backwards, and a
// fencing token below every one stored with observations, so all its
// write-backs over keys fenced at any positive epoch are refused. It must
// never lead with an epoch at or below one already used.
func TestAdv13_HugeEpochWrapsNegative(t *testing.T) {
	ctx := context.Background()
	coll := mongotest.New(t).Database.Collection(lease.Collection)
	clock := clockwork.NewFakeClock()
	if _, err := coll.InsertOne(ctx, lease.Record{ID: "spendchecker/huge", Name: "spendchecker", Epoch: math.MaxInt64, Holder: "x",
		AcquiredAt: clock.Now(), RenewedAt: clock.Now(), Released: true}); err != nil {
		t.Fatal(err)
	}
	b := candidate(t, coll, "b", clock)
	for range 30 {
		b.Tick(ctx)
		if e, ok := b.Epoch(); ok && e <= 0 {
			t.Fatalf("b leads at epoch %d, after epoch %d was used", e, int64(math.MaxInt64))
		}
		clock.Advance(retry)
	}
}

// Adversarial (issue 13 cases 4 and 5 together): during a rolling change
// the holder runs with a 30 s lease / 25 s renew deadline, the standby with
// 15 s / 10 s. The holder's renewals are failing (a stalled process or a
// partition: it never reaches the store), so it still leads until 25 s
// after its last renewal. The lease records are then deleted by hand. The
// standby saw the holder's epoch and waits "the lease duration" for the
// vanished records — its own 15 s, since the record that carried the
// holder's 30 s is gone — and leads while the holder still does.
func TestAdv13_VanishedRecordWaitIgnoresHolderDuration(t *testing.T) {
	ctx := context.Background()
	coll := mongotest.New(t).Database.Collection(lease.Collection)
	clock := clockwork.NewFakeClock()
	seed(t, coll) // a first start would wait the lease duration (docs/design.md "Lease")
	a := newLease(t, coll, lease.Config{Name: "spendchecker", Instance: "a", LeaseDuration: 30 * time.Second, RenewDeadline: 25 * time.Second, RetryPeriod: retry, Clock: clock})
	a.Tick(ctx)
	start := clock.Now()
	b := candidate(t, coll, "b", clock) // 15 s / 10 s
	b.Tick(ctx)                         // b has seen a's record (leaseDurationMs 30000)
	if _, err := coll.DeleteMany(ctx, bson.M{}); err != nil {
		t.Fatal(err)
	}
	// a's renewals never reach the store from now on: it does not tick.
	for range 20 {
		clock.Advance(retry)
		b.Tick(ctx)
		if a.IsLeader(ctx) == nil && b.IsLeader(ctx) == nil {
			ea, _ := a.Epoch()
			eb, _ := b.Epoch()
			t.Fatalf("a (epoch %d, leads until its 25 s renew deadline) and b (epoch %d) lead at once, %v after a's last renewal", ea, eb, clock.Since(start))
		}
	}
}
