package rotation_test

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation"
)

// Keys refused at once for one LiteLLM user's personal budget, each by its
// own caller (proxy processes, the daemon): whatever the interleaving, at
// most one of them rotates — every caller records the user before it looks
// for the others, and looks at the pool before the journal — and the rest
// are held with the user recorded.
func TestSharedBudgetUserRotatesAtMostOnce(t *testing.T) {
	for round := range 3 {
		t.Run(fmt.Sprint("round ", round), func(t *testing.T) {
			mdb := mongotest.New(t)
			db := mdb.Database
			seed(t, db, 6, 6, 1)
			var wg sync.WaitGroup
			start := make(chan struct{})
			outcomes := make(chan rotation.Outcome, 6)
			for i := range 6 {
				r := newRotator(t, mdb.NewClient(t).Database(mdb.Name), rotation.Config{Owner: fmt.Sprint("p", i)})
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					res, err := r.Rotate(context.Background(), fmt.Sprintf("key-%03d", i), "budget_exceeded", rotation.WithBudgetUser("team-user"))
					if err != nil {
						t.Errorf("rotate: %v", err)
					}
					outcomes <- res.Outcome
				}()
			}
			close(start)
			wg.Wait()
			close(outcomes)
			got := map[rotation.Outcome]int{}
			for o := range outcomes {
				got[o]++
			}
			if got[rotation.Rotated] > 1 || got[rotation.Rotated]+got[rotation.Held] != 6 {
				t.Fatalf("outcomes %v: want at most one rotated, the rest held", got)
			}
			if n := count(t, db, testPool.KeysCollection, bson.M{rotation.FieldBudgetUser: "team-user"}); n != int64(got[rotation.Held]) {
				t.Errorf("%d keys record the user, want the %d held ones", n, got[rotation.Held])
			}
			checkInvariants(t, db, 6)
		})
	}
}

// Verify names the users keys share under user-budget auto (their refusals
// are held), counting a key rotated away for the user; status reads the
// same list. Under rotate or hold the sharing changes nothing: not named.
func TestVerifyNamesSharedBudgetUsers(t *testing.T) {
	ctx := context.Background()
	db := mongotest.New(t).Database
	seed(t, db, 4, 2, 1)
	auto := newRotator(t, db, rotation.Config{})
	// key-000 is rotated away for u-a; key-001 names u-a later; key-002 and
	// key-003 have users of their own.
	if res, err := auto.Rotate(ctx, "key-000", "budget_exceeded", rotation.WithBudgetUser("u-a")); err != nil || res.Outcome != rotation.Rotated {
		t.Fatalf("key-000: %+v, %v", res, err)
	}
	if res, err := auto.Rotate(ctx, "key-001", "budget_exceeded", rotation.WithBudgetUser("u-a")); err != nil || res.Outcome != rotation.Held {
		t.Fatalf("key-001: %+v, %v; want held (key-000 was rotated away for u-a)", res, err)
	}
	for _, k := range []string{"key-002", "key-003"} {
		if err := auto.RecordBudgetUser(ctx, k, "", "u-"+k); err != nil {
			t.Fatal(err)
		}
	}
	shared, err := auto.SharedBudgetUsers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string][]string{"u-a": {"key-000", "key-001"}}; !reflect.DeepEqual(shared, want) {
		t.Errorf("shared users %v, want %v", shared, want)
	}
	probs, err := auto.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !hasKind(probs, "shared_budget_user") || len(probs) != 1 {
		t.Errorf("verify under auto: %v, want shared_budget_user alone", probs)
	}
	for _, mode := range []rotation.UserBudget{rotation.UserBudgetRotate, rotation.UserBudgetHold} {
		probs, err := newRotator(t, db, rotation.Config{UserBudget: mode}).Verify(ctx)
		if err != nil || len(probs) != 0 {
			t.Errorf("verify under %s: %v, %v; want nothing", mode, probs, err)
		}
	}
}

func TestParseUserBudget(t *testing.T) {
	for _, c := range []struct {
		in   string
		want rotation.UserBudget
		ok   bool
	}{{"auto", rotation.UserBudgetAuto, true}, {"rotate", rotation.UserBudgetRotate, true}, {"hold", rotation.UserBudgetHold, true}, {"", 0, false}, {"Auto", 0, false}} {
		got, err := rotation.ParseUserBudget(c.in)
		if (err == nil) != c.ok || (c.ok && got != c.want) || (c.ok && got.String() != c.in) {
			t.Errorf("ParseUserBudget(%q) = %v, %v", c.in, got, err)
		}
	}
}
