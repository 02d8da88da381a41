package checker_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/checker"
	"github.com/spendchecker/spendchecker/rotation"
	"github.com/spendchecker/spendchecker/rotation/proxyrotate"
)

// personalBudgetRefusal is LiteLLM's refusal of a key without a team for
// its owner's personal budget: litellm/proxy/auth/auth_checks.py,
// common_checks, "4.1 check personal budget, if personal key":
// BudgetExceededError(message=f"ExceededBudget: User={user_object.user_id}
// over budget. Spend={user_spend}, Budget={user_budget}"), in LiteLLM's
// ProxyException envelope (docs/my-website/docs/proxy/users.md, "Expected
// Response": type budget_exceeded, code 400). The figures are the ones the
// proxy's spend checker quotes (goproxy/internal/openhands/spend_checker.go).
func personalBudgetRefusal(user string) string {
	return `{"error":{"message":"ExceededBudget: User=` + user + ` over budget. Spend=10.02107649999999, Budget=10.0","type":"budget_exceeded","param":null,"code":"400"}}`
}

// userWorld is a pool of keys k1..k4 whose upstream refuses each for its
// owner's personal budget: k1 and k2 have users of their own, k3 and k4
// share one.
var keyUsers = map[string]string{"k1": "u-1", "k2": "u-2", "k3": "u-shared", "k4": "u-shared"}

func userWorld(t *testing.T) (*world, string) {
	t.Helper()
	w := newWorld(t, "openhands", map[string]float64{"k1": 3, "k2": 3, "k3": 3, "k4": 3, "k5": 1}, 4)
	users := map[string]string{}
	for k, u := range keyUsers {
		users[secret(k)] = u
	}
	url := w.front(t, func(sec string, rw http.ResponseWriter) bool {
		u, ok := users[sec]
		if !ok {
			return false
		}
		rw.Header().Set("Content-Type", "application/json")
		rw.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(rw, personalBudgetRefusal(u))
		return true
	})
	return w, url
}

// The seeds' upstream gives each key its own LiteLLM user: a key over its
// user's budget rotates at once, in the cycle that sees the refusal. Keys
// naming one user share its budget: both are held, say so in status (the
// check error) and verify, and keep their place; the pool's setting forces
// either way.
func TestPersonalBudgetRefusal(t *testing.T) {
	cases := []struct {
		mode    rotation.UserBudget
		rotated []string
		held    []string
	}{
		{rotation.UserBudgetAuto, []string{"k1", "k2"}, []string{"k3", "k4"}},
		{rotation.UserBudgetRotate, []string{"k1", "k2", "k3", "k4"}, nil},
		{rotation.UserBudgetHold, nil, []string{"k1", "k2", "k3", "k4"}},
	}
	for _, c := range cases {
		t.Run(c.mode.String(), func(t *testing.T) {
			w, url := userWorld(t)
			chk := w.checker(t, func(_ *checker.Config, p *checker.Pool) { p.Provider = w.provider(t, url); p.UserBudget = c.mode })
			ps := cycle(t, chk)
			if ps.Rotated != len(c.rotated) || ps.Held != len(c.held) {
				t.Fatalf("rotated %d, held %d; want %d and %d (errors %q)", ps.Rotated, ps.Held, len(c.rotated), len(c.held), ps.Errors)
			}
			keys := w.db.Collection(openhands.KeysCollection)
			for _, k := range c.rotated {
				if n := countDocs(t, keys, bson.M{"_id": k}); n != 0 {
					t.Errorf("%s is still in the pool", k)
				}
				if n := countDocs(t, w.db.Collection(rotation.JournalCollection), bson.M{"oldKeyId": k, rotation.FieldBudgetUser: keyUsers[k]}); n != 1 {
					t.Errorf("the rotation of %s does not record user %s", k, keyUsers[k])
				}
			}
			for _, k := range c.held {
				var doc bson.M
				if err := keys.FindOne(context.Background(), bson.M{"_id": k}).Decode(&doc); err != nil {
					t.Fatalf("held key %s: %v", k, err)
				}
				if doc[rotation.FieldBudgetUser] != keyUsers[k] || doc[checker.FieldCheckError] != checker.CheckUserBudgetShared {
					t.Errorf("held key %s: budget user %v, check error %v; want %s and %s", k, doc[rotation.FieldBudgetUser], doc[checker.FieldCheckError], keyUsers[k], checker.CheckUserBudgetShared)
				}
			}
			probs, err := chk.Rotators()[0].Verify(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			named := false
			for _, p := range probs {
				named = named || p.Kind == "shared_budget_user"
			}
			if named != (c.mode == rotation.UserBudgetAuto) {
				t.Errorf("verify under %s: %v", c.mode, probs)
			}
		})
	}
}

// The daemon's poll and the proxy's request decide a personal-budget
// refusal alike: on two copies of one pool whose keys have had their users
// recorded (a previous look), the daemon's cycle and the proxy's
// ShouldRotate + Rotate, key by key, rotate and hold the same keys.
func TestPersonalBudgetDaemonAndProxyDecideAlike(t *testing.T) {
	ctx := context.Background()
	outcomes := func(t *testing.T, rotate func(w *world, url string) map[string]string) map[string]string {
		w, url := userWorld(t)
		r, err := rotation.New(w.db, openhands, rotation.Config{Owner: "seed"})
		if err != nil {
			t.Fatal(err)
		}
		for k, u := range keyUsers {
			if err := r.RecordBudgetUser(ctx, k, "", u); err != nil {
				t.Fatal(err)
			}
		}
		return rotate(w, url)
	}
	daemon := outcomes(t, func(w *world, url string) map[string]string {
		chk := w.checker(t, func(_ *checker.Config, p *checker.Pool) { p.Provider = w.provider(t, url) })
		cycle(t, chk)
		out := map[string]string{}
		for k := range keyUsers {
			out[k] = "held"
			if countDocs(t, w.db.Collection(openhands.KeysCollection), bson.M{"_id": k}) == 0 {
				out[k] = "rotated"
			}
		}
		return out
	})
	proxy := outcomes(t, func(w *world, url string) map[string]string {
		out := map[string]string{}
		rot, err := proxyrotate.Open(ctx, w.mdb.URI, w.mdb.Name, "openhands", "proxy", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer rot.Close(ctx)
		for _, k := range []string{"k1", "k2", "k3", "k4"} {
			d, ok := proxyrotate.ShouldRotate(400, personalBudgetRefusal(keyUsers[k]))
			if !ok {
				t.Fatalf("ShouldRotate does not rotate %s", k)
			}
			act, err := rot.Rotate(ctx, k, d)
			if err != nil {
				t.Fatal(err)
			}
			out[k] = act.Outcome
		}
		return out
	})
	for k := range keyUsers {
		if daemon[k] != proxy[k] {
			t.Errorf("%s (user %s): the daemon %s, the proxy %s", k, keyUsers[k], daemon[k], proxy[k])
		}
	}
	if daemon["k1"] != "rotated" || daemon["k3"] != "held" {
		t.Errorf("outcomes %v: want k1 rotated, k3 held", daemon)
	}
}
