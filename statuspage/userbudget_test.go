package statuspage

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/checker"
	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation"
)

// Status says which keys are held for a LiteLLM user other keys share, and
// which users are shared, from the rotator's own reading (the real one,
// on the store, not a stand-in).
func TestStatusSaysSharedBudgetUsersHold(t *testing.T) {
	ctx := context.Background()
	db := mongotest.New(t).Database
	pool, _ := rotation.Preset("openhands")
	keys := db.Collection(pool.KeysCollection)
	for _, d := range []bson.M{
		{"_id": "k1", "apiKey": "sk-secret-k1-000000000001", "status": "healthy", "totalSpend": 3.0, rotation.FieldBudgetUser: "u-1"},
		{"_id": "k3", "apiKey": "sk-secret-k3-000000000003", "status": "healthy", "totalSpend": 3.0, rotation.FieldBudgetUser: "u-shared",
			checker.FieldCheckError: checker.CheckUserBudgetShared},
		{"_id": "k4", "apiKey": "sk-secret-k4-000000000004", "status": "healthy", "totalSpend": 3.0, rotation.FieldBudgetUser: "u-shared",
			checker.FieldCheckError: checker.CheckUserBudgetShared},
	} {
		if _, err := keys.InsertOne(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	r, err := rotation.New(db, pool, rotation.Config{})
	if err != nil {
		t.Fatal(err)
	}
	snap := Source{Pools: []Pool{{Name: pool.Name, Keys: keys, Threshold: 9.95, Users: r}}, Now: func() time.Time { return now }}.Read(ctx)
	if len(snap.Errors) != 0 {
		t.Fatal(snap.Errors)
	}
	pv := snap.Pools[0]
	if got := pv.SharedBudgetUsers["u-shared"]; len(pv.SharedBudgetUsers) != 1 || strings.Join(got, ",") != "k3,k4" {
		t.Errorf("shared users %v, want u-shared by k3, k4", pv.SharedBudgetUsers)
	}
	if pv.Keys[1].BudgetUser != "u-shared" || pv.Keys[0].BudgetUser != "u-1" {
		t.Errorf("keys %+v", pv.Keys)
	}
	var out bytes.Buffer
	WriteText(&out, snap)
	for _, want := range []string{"healthy (held: over the budget of user u-shared, which other keys share)",
		"user u-shared is shared by keys k3, k4: a refusal of its personal budget holds them"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status text lacks %q:\n%s", want, out.String())
		}
	}
}
