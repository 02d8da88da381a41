package cli

import (
	"context"
	"log/slog"
	"net/http"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation"
)

// A request for a key whose rotation another replica (or the proxy's
// library) has under way answers in_progress with the new key as soon as
// it is in the pool, so the proxy can retry with it at once.
func TestRotateAPIInProgressNamesTheNewKey(t *testing.T) {
	db := mongotest.New(t).Database
	apiSeed(t, db, apiPool, 2, 2)
	arrived, resume := make(chan struct{}), make(chan struct{})
	owner, err := rotation.New(db, apiPool, rotation.Config{Owner: "proxy", AfterStep: func(ctx context.Context, _ string, s rotation.Step) error {
		if s == rotation.StepActivateKey {
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
		res, err := owner.Rotate(context.Background(), "k0", "unauthorized")
		if err != nil {
			t.Errorf("owner: %v", err)
		}
		done <- res
	}()
	<-arrived
	api := newRotateAPI(testToken, testRotators(t, db, "r1", "openhands"), false, slog.New(slog.DiscardHandler))
	a := apiCall(t, api, "Bearer "+testToken, `{"keyId":"k0","reason":"unauthorized"}`)
	close(resume)
	if a.status != http.StatusAccepted || a.body.Outcome != "in_progress" || a.body.NewKeyID != "b0" {
		t.Errorf("got %d %s, want 202 in_progress with newKeyId b0", a.status, a.raw)
	}
	if res := <-done; res.Outcome != rotation.Rotated || res.NewKeyID != "b0" {
		t.Errorf("owner: %+v", res)
	}
}

// A proxy on Way 2 passes the user of a personal-budget refusal: a user no
// other key names rotates; a shared one holds the key (409 held), which
// stays in the pool with the user recorded.
func TestRotateAPIBudgetUser(t *testing.T) {
	db := mongotest.New(t).Database
	apiSeed(t, db, apiPool, 3, 3)
	api := newRotateAPI(testToken, testRotators(t, db, "r1", "openhands"), false, slog.New(slog.DiscardHandler))
	steps := []struct {
		body, outcome string
		status        int
	}{
		{`{"keyId":"k0","reason":"budget_exceeded","budgetUser":"u-0"}`, "rotated", http.StatusOK},
		{`{"keyId":"k1","reason":"budget_exceeded","budgetUser":"u-shared"}`, "rotated", http.StatusOK},
		{`{"keyId":"k2","reason":"budget_exceeded","budgetUser":"u-shared"}`, "held", http.StatusConflict},
	}
	for _, s := range steps {
		a := apiCall(t, api, "Bearer "+testToken, s.body)
		if a.status != s.status || a.body.Outcome != s.outcome {
			t.Errorf("%s: got %d %s, want %d %s", s.body, a.status, a.raw, s.status, s.outcome)
		}
	}
	if n := apiCount(t, db, apiPool.KeysCollection, bson.M{"_id": "k2", rotation.FieldBudgetUser: "u-shared"}); n != 1 {
		t.Error("the held key left the pool or lacks its user")
	}
	a := apiCall(t, api, "Bearer "+testToken, `{"keyId":"k2","reason":"budget_exceeded","budgetUser":"x\u0000"}`)
	if a.status != http.StatusBadRequest {
		t.Errorf("a budgetUser with NUL: %d %s, want 400", a.status, a.raw)
	}
}
