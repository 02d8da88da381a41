package cli

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation"
)

// The guide for the library says "leave recovery to the daemon: the proxy
// never calls Recover", and to build one rotator per pool, "factory" for
// factory_keys. Here a proxy's factory rotation stopped part-way (its
// process died after inserting the new key): the journal is claimed, the
// pool has one key too many and the binding still points at the old key.
// The operator runs `spendchecker recover --pool factory` — a command that
// never talks to any upstream — and it must complete the rotation. It exits
// 2 instead ("no built-in provider serves its upstream"), and so do verify
// and status: the factory pool's unfinished rotations can be finished only
// by naming a spend provider the pool does not have.
func TestAdv18_FactoryPoolRecoverAndVerifyNeedNoProvider(t *testing.T) {
	mdb := mongotest.New(t)
	db := mdb.Database
	factory, _ := rotation.Preset("factory")
	apiSeed(t, db, factory, 2, 1)

	// The proxy's library rotation dies right after inserting the new key.
	crash := errors.New("proxy process killed")
	proxyRot, err := rotation.New(db, factory, rotation.Options{Owner: "proxy-1",
		AfterStep: func(_ context.Context, _ string, s rotation.Step) error {
			if s == rotation.StepInsertKey {
				return crash
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := proxyRot.Rotate(context.Background(), "k0", "unauthorized"); !errors.Is(err, crash) {
		t.Fatalf("setup: want the saga cut after insert_key, got %v", err)
	}
	if n := apiCount(t, db, rotation.JournalCollection, bson.M{"state": "claimed"}); n != 1 {
		t.Fatalf("setup: %d claimed rotations, want 1", n)
	}

	t.Setenv("SPENDCHECKER_PROVIDER", "")
	for _, cmd := range [][]string{{"verify"}, {"status"}, {"recover"}} {
		t.Run(cmd[0], func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append(append([]string{}, cmd...), "--mongo-uri", mdb.URI, "--database", mdb.Name, "--pool", "factory")
			code := Run(context.Background(), args, Env{Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" }})
			if code == ExitUsage {
				t.Fatalf("spendchecker %s --pool factory: exit 2: %s", cmd[0], stderr.String())
			}
		})
	}
	if n := apiCount(t, db, rotation.JournalCollection, bson.M{"state": "done"}); n != 1 {
		t.Errorf("the factory rotation is still unfinished after recover: %d done", n)
	}
	if n := apiCount(t, db, factory.KeysCollection, bson.M{}); n != 2 {
		t.Errorf("factory pool has %d keys, want 2", n)
	}
}

// One daemon serves both pools on /v1/rotate. Their backups live in two
// collections whose ids are typed by hand in the proxy's admin pages
// (backend openhands.service.ts createBackupKey: _id = data.id), so "b0"
// can exist in both. The journal's backupId index is unique across pools,
// so once the openhands pool used its b0, the factory pool's own unused b0
// can never be claimed: its key gets 409 no_backup while the factory pool
// has a backup left (and BackupsAvailable counts it). Same key id k0 in both
// pools, too. Want: the factory k0 rotated onto the factory b0.
func TestAdv18_RotateAPISameIDsInTwoPools(t *testing.T) {
	db := mongotest.New(t).Database
	factory, _ := rotation.Preset("factory")
	apiSeed(t, db, apiPool, 1, 1)
	apiSeed(t, db, factory, 1, 1)
	api := newRotateAPI(testToken, testRotators(t, db, "r1", "openhands", "factory"), false, slog.New(slog.DiscardHandler))

	oh := apiCall(t, api, "Bearer "+testToken, `{"pool":"openhands","keyId":"k0","reason":"unauthorized"}`)
	if oh.status != 200 || oh.body.Outcome != "rotated" || oh.body.NewKeyID != "b0" {
		t.Fatalf("openhands k0: %d %s", oh.status, oh.raw)
	}
	fa := apiCall(t, api, "Bearer "+testToken, `{"pool":"factory","keyId":"k0","reason":"unauthorized"}`)
	if fa.status != 200 || fa.body.Outcome != "rotated" || fa.body.NewKeyID != "b0" || fa.body.RotationID == oh.body.RotationID {
		t.Errorf("factory k0: %d %s, want 200 rotated onto the factory pool's own unused b0", fa.status, fa.raw)
	}
	if n := apiCount(t, db, factory.BackupsCollection, bson.M{"isUsed": true}); n != 1 {
		t.Errorf("factory pool: %d backups used, want 1", n)
	}
}
