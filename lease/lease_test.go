package lease_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-co-op/gocron/v2"
	"github.com/jonboulle/clockwork"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/lease"
)

var _ gocron.Elector = (*lease.Lease)(nil)

const (
	dur   = 15 * time.Second
	renew = 10 * time.Second
	retry = 2 * time.Second
)

// skewed is a clock whose wall time is off by a fixed amount; durations
// measured on it are unchanged, as on a machine with a wrong clock.
type skewed struct {
	*clockwork.FakeClock
	off time.Duration
}

func (s skewed) Now() time.Time                  { return s.FakeClock.Now().Add(s.off) }
func (s skewed) Since(t time.Time) time.Duration { return s.Now().Sub(t) }

func candidate(t testing.TB, coll *mongo.Collection, name string, clock clockwork.Clock) *lease.Lease {
	t.Helper()
	seed(t, coll)
	return newLease(t, coll, lease.Config{
		Name: "spendchecker", Instance: name, LeaseDuration: dur, RenewDeadline: renew, RetryPeriod: retry, Clock: clock,
	})
}

// newLease is lease.New for tests on a fake clock: each store call may take
// up to a minute of real time, which the fake clock does not see, so a busy
// machine cannot fail a round the test's timings say is instant.
func newLease(t testing.TB, coll *mongo.Collection, cfg lease.Config) *lease.Lease {
	t.Helper()
	l, err := lease.New(coll, cfg)
	if err != nil {
		t.Fatal(err)
	}
	lease.SetStoreTimeout(l, time.Minute)
	return l
}

// seed gives an empty lease collection a released epoch 0, as a previous
// deployment would have left it: a candidate that finds no record at all
// cannot tell a first start from records deleted under a live holder, and
// waits the lease duration first (docs/design.md "Lease"). Most tests start from
// a lease nobody holds.
func seed(t testing.TB, coll *mongo.Collection) {
	t.Helper()
	ctx := context.Background()
	n, err := coll.CountDocuments(ctx, bson.M{})
	if err != nil {
		t.Fatal(err)
	}
	if n > 0 {
		return
	}
	if _, err := coll.InsertOne(ctx, lease.Record{ID: "spendchecker/00000000000000000000", Name: "spendchecker", Holder: "seed", Released: true}); err != nil {
		t.Fatal(err)
	}
}

func leaders(ls []*lease.Lease) []int {
	var out []int
	for i, l := range ls {
		if l.IsLeader(context.Background()) == nil {
			out = append(out, i)
		}
	}
	return out
}

// Five candidates over many rounds, with crashes, releases and restarts:
// never two leaders at once, and every epoch has exactly one holder.
func TestFiveCandidatesNeverOverlap(t *testing.T) {
	ctx := context.Background()
	rounds := 400
	if testing.Short() {
		rounds = 80 // a fifth: still several hand-overs
	}
	for _, concurrent := range []bool{false, true} {
		t.Run(fmt.Sprintf("concurrent=%v", concurrent), func(t *testing.T) {
			coll := mongotest.New(t).Database.Collection(lease.Collection)
			clock := clockwork.NewFakeClock()
			var ls []*lease.Lease
			for i := range 5 {
				ls = append(ls, candidate(t, coll, fmt.Sprintf("c%d", i), clock))
			}
			down := make([]int, 5) // rounds a candidate stays crashed
			holder := map[int64]int{}
			check := func(round int) {
				ld := leaders(ls)
				if len(ld) > 1 {
					t.Fatalf("round %d: candidates %v lead at once", round, ld)
				}
				for _, i := range ld {
					e, _ := ls[i].Epoch()
					if h, ok := holder[e]; ok && h != i {
						t.Fatalf("epoch %d held by %d and %d", e, h, i)
					}
					holder[e] = i
				}
			}
			rng := rand.New(rand.NewPCG(1, 2))
			for round := range rounds {
				clock.Advance(retry)
				order := rng.Perm(5)
				var wg sync.WaitGroup
				for _, i := range order {
					if down[i] > 0 {
						down[i]--
						continue
					}
					if concurrent {
						wg.Add(1)
						go func() { defer wg.Done(); ls[i].Tick(ctx) }()
						continue
					}
					ls[i].Tick(ctx)
					check(round)
				}
				wg.Wait()
				check(round)
				if ld := leaders(ls); len(ld) == 1 {
					switch p := rng.IntN(20); {
					case p == 0: // crash: stop ticking for a while
						down[ld[0]] = 3 + rng.IntN(12)
					case p == 1:
						if err := ls[ld[0]].Release(ctx); err != nil {
							t.Fatal(err)
						}
					}
				}
			}
			if len(holder) < rounds/40 {
				t.Fatalf("only %d epochs in %d rounds: leadership barely changed hands", len(holder), rounds)
			}
		})
	}
}

// The leader crashes (stops renewing): the standby leads after the lease
// duration, within one retry period more, never sooner; wall-clock skew of an
// hour either way changes nothing.
func TestTakeoverAfterCrash(t *testing.T) {
	ctx := context.Background()
	for _, skew := range []time.Duration{0, time.Hour, -time.Hour} {
		t.Run(fmt.Sprintf("skew %v", skew), func(t *testing.T) {
			coll := mongotest.New(t).Database.Collection(lease.Collection)
			clock := clockwork.NewFakeClock()
			a := candidate(t, coll, "a", clock)
			b := candidate(t, coll, "b", skewed{clock, skew})
			for range 4 {
				a.Tick(ctx)
				b.Tick(ctx)
				clock.Advance(retry)
			}
			a.Tick(ctx) // last renewal
			b.Tick(ctx)
			if a.IsLeader(ctx) != nil || b.IsLeader(ctx) == nil {
				t.Fatal("a should lead, b follow")
			}
			crashed := clock.Now()
			for b.IsLeader(ctx) != nil {
				clock.Advance(retry)
				b.Tick(ctx)
				if a.IsLeader(ctx) == nil && b.IsLeader(ctx) == nil {
					t.Fatal("two leaders")
				}
				if clock.Since(crashed) > dur+2*retry {
					t.Fatal("standby never took over")
				}
			}
			took := clock.Since(crashed)
			if took < dur || took > dur+retry {
				t.Errorf("takeover after %v, want between %v and %v", took, dur, dur+retry)
			}
			if a.IsLeader(ctx) == nil {
				t.Error("crashed leader still believes it leads")
			}
		})
	}
}

func TestTakeoverAfterRelease(t *testing.T) {
	ctx := context.Background()
	coll := mongotest.New(t).Database.Collection(lease.Collection)
	clock := clockwork.NewFakeClock()
	a, b := candidate(t, coll, "a", clock), candidate(t, coll, "b", clock)
	a.Tick(ctx)
	b.Tick(ctx)
	first, _ := a.Epoch()
	lctx, ok := a.LeaderContext()
	if !ok {
		t.Fatal("a should lead")
	}
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if lctx.Err() == nil || a.IsLeader(ctx) == nil {
		t.Fatal("release left a leading")
	}
	clock.Advance(retry)
	b.Tick(ctx)
	if e, ok := b.Epoch(); !ok || e != first+1 {
		t.Fatalf("b after one retry period: epoch %d leader %v; want epoch %d", e, ok, first+1)
	}
}

func TestSimultaneousStart(t *testing.T) {
	ctx := context.Background()
	db := mongotest.New(t).Database
	for trial := range 20 {
		coll := db.Collection(fmt.Sprintf("leases_%d", trial))
		clock := clockwork.NewFakeClock()
		ls := []*lease.Lease{candidate(t, coll, "a", clock), candidate(t, coll, "b", clock)}
		var wg sync.WaitGroup
		for _, l := range ls {
			wg.Add(1)
			go func() { defer wg.Done(); l.Tick(ctx) }()
		}
		wg.Wait()
		if n := len(leaders(ls)); n != 1 {
			t.Fatalf("trial %d: %d leaders", trial, n)
		}
	}
}

func TestStoreUnreachable(t *testing.T) {
	ctx := context.Background()
	mdb := mongotest.New(t)
	proxy := mdb.Proxy(t)
	client := mdb.NewClient(t, options.Client().ApplyURI(proxy.URI()).SetServerSelectionTimeout(200*time.Millisecond).SetTimeout(10*time.Second))
	coll := client.Database(mdb.Name).Collection(lease.Collection)
	reach(t, client)
	seed(t, coll)
	clock := clockwork.NewFakeClock()
	var changes []bool
	l := newLease(t, coll, lease.Config{Name: "spendchecker", Instance: "a", LeaseDuration: dur, RenewDeadline: renew, RetryPeriod: retry, Clock: clock,
		OnChange: func(leader bool, _ int64) { changes = append(changes, leader) }})
	l.Tick(ctx)
	first, ok := l.Epoch()
	if !ok {
		t.Fatal("no leader at start")
	}
	lctx, _ := l.LeaderContext()
	proxy.Pause()
	cut := clock.Now()
	for clock.Since(cut) < renew {
		if l.IsLeader(ctx) != nil {
			t.Fatalf("stepped down after %v, before the renew deadline", clock.Since(cut))
		}
		clock.Advance(retry)
		l.Tick(ctx)
	}
	if l.IsLeader(ctx) == nil || lctx.Err() == nil {
		t.Fatalf("still leader %v after the renew deadline", clock.Since(cut))
	}
	proxy.Resume()
	reach(t, client)
	back := clock.Now()
	for l.IsLeader(ctx) != nil {
		clock.Advance(retry)
		l.Tick(ctx)
		if clock.Since(back) > 2*dur {
			t.Fatal("leadership not re-established after the store returned")
		}
	}
	if e, _ := l.Epoch(); e <= first {
		t.Errorf("re-established with epoch %d, want > %d", e, first)
	}
	if fmt.Sprint(changes) != "[true false true]" {
		t.Errorf("leadership changes %v", changes)
	}
}

// reach waits until client finds the store: its driver does so on its own
// time, not the fake clock's, and a round spent before (in no fake time)
// would fail for want of a server, not of the lease.
func reach(t *testing.T, client *mongo.Client) {
	t.Helper()
	for start := time.Now(); client.Ping(context.Background(), nil) != nil; {
		if time.Since(start) > 5*time.Minute { // a guard against a hang, not a wait
			t.Fatal("the store does not answer")
		}
	}
}

// A scheduler gated by the lease runs its job only on the leader.
func TestSchedulerRunsOnlyOnLeader(t *testing.T) {
	ctx := context.Background()
	coll := mongotest.New(t).Database.Collection(lease.Collection)
	clock := clockwork.NewFakeClock() // lease time stands still: leadership only changes on release
	ls := []*lease.Lease{candidate(t, coll, "a", clock), candidate(t, coll, "b", clock)}
	var runs [2]atomic.Int64
	ran := [2]chan struct{}{make(chan struct{}, 100), make(chan struct{}, 100)}
	for i, l := range ls {
		s, err := gocron.NewScheduler(gocron.WithDistributedElector(l))
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.NewJob(gocron.DurationJob(5*time.Millisecond), gocron.NewTask(func() {
			runs[i].Add(1)
			select {
			case ran[i] <- struct{}{}:
			default:
			}
		}), gocron.WithSingletonMode(gocron.LimitModeReschedule))
		if err != nil {
			t.Fatal(err)
		}
		s.Start()
		t.Cleanup(func() { _ = s.Shutdown() })
	}
	wait := func(i int) {
		for range 5 {
			select {
			case <-ran[i]:
			case <-time.After(5 * time.Minute): // a guard against a hang, not a wait
				t.Fatalf("candidate %d's job did not run while leader", i)
			}
		}
	}
	ls[0].Tick(ctx)
	ls[1].Tick(ctx)
	wait(0)
	if n := runs[1].Load(); n != 0 {
		t.Fatalf("follower ran its job %d times", n)
	}
	if err := ls[0].Release(ctx); err != nil {
		t.Fatal(err)
	}
	atRelease := runs[0].Load()
	clock.Advance(retry)
	ls[1].Tick(ctx)
	wait(1)
	if n := runs[0].Load() - atRelease; n > 1 {
		t.Fatalf("released leader ran its job %d more times", n)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  lease.Config
		ok   bool
	}{
		{"defaults", lease.Config{Name: "n", Instance: "i", LeaseDuration: dur, RenewDeadline: renew, RetryPeriod: retry}, true},
		{"renew >= duration", lease.Config{Name: "n", Instance: "i", LeaseDuration: dur, RenewDeadline: dur, RetryPeriod: retry}, false},
		{"retry >= renew", lease.Config{Name: "n", Instance: "i", LeaseDuration: dur, RenewDeadline: renew, RetryPeriod: renew}, false},
		{"no instance", lease.Config{Name: "n", LeaseDuration: dur, RenewDeadline: renew, RetryPeriod: retry}, false},
	}
	for _, tt := range tests {
		if err := tt.cfg.Validate(); (err == nil) != tt.ok {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
}
