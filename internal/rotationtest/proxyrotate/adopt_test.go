package proxyrotate_test

import (
	"context"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation"
	"github.com/spendchecker/spendchecker/rotation/proxyrotate"
)

// A proxy request that finds its key's rotation under way (another proxy
// process, or the daemon, owns it) is told the new key as soon as it is in
// the pool, and retries with it at once instead of serving one key short
// until the next reload.
func TestInProgressSwapsToTheNewKey(t *testing.T) {
	ctx := context.Background()
	m := mongotest.New(t)
	adv18Seed(t, m.Database, []string{"k1", "k2"}, []string{"b1", "b2"})
	pool, _ := rotation.Preset("openhands")
	arrived, resume := make(chan struct{}), make(chan struct{})
	owner, err := rotation.New(m.Database, pool, rotation.Config{Owner: "proxy-b", AfterStep: func(ctx context.Context, _ string, s rotation.Step) error {
		if s == rotation.StepMoveBindings {
			close(arrived)
			select {
			case <-resume:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan rotation.Result, 1)
	go func() {
		res, err := owner.Rotate(ctx, "k1", "unauthorized")
		if err != nil {
			t.Errorf("owner: %v", err)
		}
		done <- res
	}()
	<-arrived
	proxy := adv18Open(t, m, "proxy-a")
	d, ok := proxyrotate.ShouldRotate(401, `{"error":{"message":"Authentication Error, Invalid proxy server token passed.","type":"auth_error","param":"None","code":"401"}}`)
	if !ok {
		t.Fatal("a 401 with LiteLLM's error does not rotate")
	}
	act, err := proxy.Rotate(ctx, "k1", d)
	close(resume)
	if err != nil {
		t.Fatal(err)
	}
	if act.Outcome != "in_progress" || act.SwapTo != "b1" || !act.Drop {
		t.Errorf("concurrent proxy request: %+v, want in_progress with SwapTo b1", act)
	}
	if res := <-done; res.Outcome != rotation.Rotated || res.NewKeyID != "b1" {
		t.Errorf("owner: %+v, want rotated to b1", res)
	}
}

// LiteLLM refuses a key without a team for its owner's personal budget
// (litellm/proxy/auth/auth_checks.py, common_checks: "4.1 check personal
// budget, if personal key" raises BudgetExceededError(message=
// f"ExceededBudget: User={user_object.user_id} over budget.
// Spend={user_spend}, Budget={user_budget}"), answered 400 budget_exceeded
// in LiteLLM's ProxyException envelope (docs/my-website/docs/proxy/users.md,
// "Expected Response"). The proxy's main upstream gives each key its own
// user: the refusal rotates the key. Two keys naming one user share its
// budget: the second is held, not rotated, and keeps its place in the pool;
// the pool's setting forces either way.
func TestPersonalBudgetRefusalThroughTheProxy(t *testing.T) {
	refusal := func(user string) string {
		return `{"error":{"message":"ExceededBudget: User=` + user + ` over budget. Spend=10.02107649999999, Budget=10.0","type":"budget_exceeded","param":null,"code":"400"}}`
	}
	cases := []struct {
		name   string
		mode   rotation.UserBudget
		users  map[string]string // key → the user its refusal names, in order k1, k2, k3
		want   map[string]string // key → outcome
		backup int               // backups used
	}{
		{"one user per key: each rotates", rotation.UserBudgetAuto,
			map[string]string{"k1": "u-1", "k2": "u-2", "k3": "u-3"},
			map[string]string{"k1": "rotated", "k2": "rotated", "k3": "rotated"}, 3},
		{"a shared user: the second key is held", rotation.UserBudgetAuto,
			map[string]string{"k1": "u-1", "k2": "u-shared", "k3": "u-shared"},
			map[string]string{"k1": "rotated", "k2": "rotated", "k3": "held"}, 2},
		{"rotate: sharing ignored", rotation.UserBudgetRotate,
			map[string]string{"k1": "u-shared", "k2": "u-shared", "k3": "u-shared"},
			map[string]string{"k1": "rotated", "k2": "rotated", "k3": "rotated"}, 3},
		{"hold: never rotated", rotation.UserBudgetHold,
			map[string]string{"k1": "u-1", "k2": "u-2", "k3": "u-3"},
			map[string]string{"k1": "held", "k2": "held", "k3": "held"}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			m := mongotest.New(t)
			adv18Seed(t, m.Database, []string{"k1", "k2", "k3"}, []string{"b1", "b2", "b3", "b4"})
			r, err := proxyrotate.Open(ctx, m.URI, m.Name, "openhands", "proxy-a", nil, proxyrotate.WithUserBudget(c.mode))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close(ctx)
			for _, k := range []string{"k1", "k2", "k3"} {
				d, ok := proxyrotate.ShouldRotate(400, refusal(c.users[k]))
				if !ok || d.Reason != "budget_exceeded" || d.BudgetUser != c.users[k] {
					t.Fatalf("ShouldRotate(%s) = %+v, %v; want budget_exceeded naming %s", c.users[k], d, ok, c.users[k])
				}
				act, err := r.Rotate(ctx, k, d)
				if err != nil {
					t.Fatal(err)
				}
				if act.Outcome != c.want[k] {
					t.Errorf("%s (user %s): %s, want %s", k, c.users[k], act.Outcome, c.want[k])
				}
				if act.Outcome == "held" {
					var doc bson.M
					if err := m.Database.Collection("openhands_keys").FindOne(ctx, bson.M{"_id": k}).Decode(&doc); err != nil {
						t.Fatalf("held key %s left the pool: %v", k, err)
					}
					if doc[rotation.FieldBudgetUser] != c.users[k] {
						t.Errorf("held key %s records budget user %v, want %s", k, doc[rotation.FieldBudgetUser], c.users[k])
					}
				}
			}
			n, err := m.Database.Collection("openhands_backup_keys").CountDocuments(ctx, bson.M{"isUsed": true})
			if err != nil {
				t.Fatal(err)
			}
			if int(n) != c.backup {
				t.Errorf("%d backups used, want %d", n, c.backup)
			}
		})
	}
}
