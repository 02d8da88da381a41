package cli

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation"
)

// `recover --dry-run` names the rotations a real run would complete or undo
// and writes nothing; the real run then completes them.
func TestRecoverDryRunWritesNothing(t *testing.T) {
	mdb := mongotest.New(t)
	apiSeed(t, mdb.Database, apiPool, 2, 1)
	cut := errors.New("cut")
	r, err := rotation.New(mdb.Database, apiPool, rotation.Config{Owner: "crashed",
		AfterStep: func(_ context.Context, _ string, s rotation.Step) error {
			if s == rotation.StepInsertKey {
				return cut
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.EnsureIndexes(context.Background()); err != nil {
		t.Fatal(err)
	}
	res, err := r.Rotate(context.Background(), "k0", "manual")
	if !errors.Is(err, cut) {
		t.Fatalf("rotate: %+v %v, want the injected cut", res, err)
	}
	args := []string{"recover", "--mongo-uri", mdb.URI, "--database", mdb.Name}
	before := storeDump(t, mdb.Database)
	code, out, stderr := runCLI(t, append(args, "--dry-run")...)
	if code != ExitOK || !strings.Contains(out, res.RotationID) {
		t.Errorf("dry run: exit %d, stdout %q, stderr %q; want exit 0 naming %s", code, out, stderr, res.RotationID)
	}
	if after := storeDump(t, mdb.Database); after != before {
		t.Errorf("the dry run wrote:\nbefore %s\nafter  %s", before, after)
	}
	if code, out, stderr := runCLI(t, args...); code != ExitOK || !strings.Contains(out, "completed 1") {
		t.Errorf("real run: exit %d, stdout %q, stderr %q; want it to complete the rotation", code, out, stderr)
	}
}
