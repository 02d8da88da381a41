package rotation_test

import (
	"context"
	"errors"
	"testing"

	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation"
)

// Ours rotates key-001 onto backup-000 and is paused after moving the
// bindings; the legacy proxy rotates key-001 whole onto backup-001 (which
// gets no bindings: ours moved them). A recovery pass Y, whose step on our
// rotation fails (a transient error), goes on to its clean-up of foreign
// duplicates: it sees backup-000 (ours) and backup-001 (foreign, unbound)
// both live and deletes backup-001 - that delete is held in the network.
// Ours resumes, finds key-001 gone and backup-001 live, and undoes itself
// (deletes backup-000). Then Y's delete lands: both replacements are gone,
// the pool lost a key, and backup-001 is marked used by no key, for good.
func TestAdv12_UndoRacesForeignDuplicateRemoval(t *testing.T) {
	bg := context.Background()
	errTransient := errors.New("transient")
	// run plays the interleaving; hold (1-based) holds Y's hold-th command,
	// 0 records Y's commands instead.
	run := func(t *testing.T, hold int) (*mongotest.DB, []string) {
		mdb := mongotest.New(t)
		db := mdb.Database
		seed(t, db, 3, 4, 2)
		proxy := mdb.Proxy(t)
		var held *mongotest.Held
		var ycmds []string
		hooked := false
		p := newRotator(t, db, rotation.Config{Owner: "p", AfterStep: func(_ context.Context, _ string, s rotation.Step) error {
			if s != rotation.StepMoveBindings || hooked {
				return nil
			}
			hooked = true
			legacyRotate(t, db, "key-001", nil)
			y := newRotator(t, mdb.NewClient(t, options.Client().ApplyURI(proxy.URI())).Database(mdb.Name), rotation.Config{Owner: "y",
				AfterStep: func(context.Context, string, rotation.Step) error { return errTransient }})
			if hold <= 0 {
				proxy.ResetCommands()
				rep, err := y.Recover(bg)
				t.Logf("y (clean): %+v, %v", rep, err)
				ycmds = proxy.Commands()
				if hold < 0 {
					return nil // Y ran whole; ours resumes
				}
				return errCrash // dry run: stop here
			}
			held = proxy.HoldCommand(hold)
			ctx, cancel := context.WithCancel(bg)
			defer cancel()
			done := make(chan struct{})
			go func() { defer close(done); _, _ = y.Recover(ctx) }()
			select {
			case <-held.Arrived():
				cancel()
			case <-done:
				t.Fatalf("y ended without command %d", hold)
			}
			<-done
			return nil // ours resumes
		}})
		res, err := p.Rotate(bg, "key-001", "manual")
		t.Logf("ours: %+v, %v", res, err)
		if hold > 0 {
			if _, err := held.Deliver(bg); err != nil {
				t.Fatal(err)
			}
			t.Logf("held %s delivered", held.Command)
		}
		return mdb, ycmds
	}
	_, cmds := run(t, 0)
	k := -1
	for i, c := range cmds {
		if c == "delete "+testPool.KeysCollection {
			k = i
			break
		}
	}
	hold := k + 1
	if k < 0 {
		// Y leaves the duplicates alone while ours is unfinished (fix12):
		// nothing to hold; Y runs whole and ours resumes after it.
		t.Logf("recovery Y deletes no key in the clean run: %v", cmds)
		hold = -1
	}
	mdb, _ := run(t, hold)
	db := mdb.Database
	for _, owner := range []string{"next", "next2"} {
		rep, err := newRotator(t, db, rotation.Config{Owner: owner}).Recover(bg)
		t.Logf("recover: %+v, %v", rep, err)
	}
	coexistInvariants(t, db)
}
