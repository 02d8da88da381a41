package retire_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/internal/fakeupstream"
	"github.com/spendchecker/spendchecker/keyadmin"
	"github.com/spendchecker/spendchecker/retire"
	"github.com/spendchecker/spendchecker/rotation"
)

const (
	childURIEnv  = "SPENDCHECKER_RETIRE_CHILD_URI"
	childDBEnv   = "SPENDCHECKER_RETIRE_CHILD_DB"
	childUpEnv   = "SPENDCHECKER_RETIRE_CHILD_UPSTREAM"
	childKindEnv = "SPENDCHECKER_RETIRE_CHILD_KIND"
	childNowEnv  = "SPENDCHECKER_RETIRE_CHILD_NOW"
)

func TestMain(m *testing.M) {
	if uri := os.Getenv(childURIEnv); uri != "" {
		os.Exit(retireChild(uri, os.Getenv(childDBEnv), os.Getenv(childUpEnv), os.Getenv(childKindEnv), os.Getenv(childNowEnv)))
	}
	os.Exit(m.Run())
}

// retireChild is a separate process running retire passes at a fixed
// time. After every step it prints the step and the rotation, then waits
// for a line on stdin, so the parent kills it exactly there.
func retireChild(uri, dbName, upURL, kind, nowText string) int {
	ctx := context.Background()
	now, err := time.Parse(time.RFC3339Nano, nowText)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	client, err := mongo.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	pool, _ := rotation.Preset("openhands")
	admin, err := keyadmin.New(keyadmin.Config{Kind: kind, BaseURL: upURL, AdminKey: mgmtKey, Timeout: time.Minute, Attempts: 1})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	in := bufio.NewScanner(os.Stdin)
	r, err := retire.New(client.Database(dbName), retire.Config{Pool: pool, Upstream: admin, Owner: fmt.Sprintf("child-%d", os.Getpid()),
		Now: func() time.Time { return now },
		AfterStep: func(_ context.Context, id string, s retire.Step) error {
			fmt.Println("step", s, id)
			if !in.Scan() {
				return io.EOF
			}
			return nil
		}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	for range 3 {
		if _, err := r.Run(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "run:", err)
		}
	}
	return 0
}

// A real process retiring keys is killed with SIGKILL at every step of a
// pass (after the claim, while the disable is out, after the upstream's
// answer and before its record, after the record), at the first and at the
// third of three rotations; a disable the kill left out is carried out
// late, in one case after the key was put back by hand. Another process
// then recovers, and the store and the upstream show: no key disabled
// twice, no live key disabled, every other retired key disabled once and
// recorded so.
func TestSIGKILLAtEveryRetireStep(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const inFlight = "in-flight"
	for _, kind := range kinds {
		for _, step := range []string{retire.StepClaim.String(), inFlight, retire.StepUpstream.String(), retire.StepRecord.String()} {
			for _, at := range []int{0, 2} {
				restores := []bool{false}
				if step == inFlight {
					restores = append(restores, true)
				}
				for _, restore := range restores {
					name := fmt.Sprintf("%s/%s/rotation%d", kind, step, at)
					if restore {
						name += "/put-back"
					}
					t.Run(name, func(t *testing.T) {
						killRetireChild(t, exe, kind, step == inFlight, step, at, restore)
					})
				}
			}
		}
	}
}

func killRetireChild(t *testing.T, exe, kind string, inFlight bool, step string, at int, restore bool) {
	w := newWorld(t, kind, 3, 3)
	w.clock.Advance(time.Hour)
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), childURIEnv+"="+w.mdb.URI, childDBEnv+"="+w.mdb.Name, childUpEnv+"="+w.up.URL,
		childKindEnv+"="+kind, childNowEnv+"="+w.clock.Now().Format(time.RFC3339Nano))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var held *heldDisables
	if inFlight {
		// The upstream takes the chosen disable, the child dies while it
		// is out, and the upstream carries it out later.
		held = holdDisables(t, w.up)
		held.hold = func(n int) bool { return n == at+1 }
		held.onHold = func() { _ = cmd.Process.Signal(syscall.SIGKILL) }
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var order []string
	killedAt := ""
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || f[0] != "step" {
			continue
		}
		if len(order) == 0 || order[len(order)-1] != f[2] {
			order = append(order, f[2])
		}
		if !inFlight && f[1] == step && len(order) == at+1 {
			killedAt = f[2]
			_ = cmd.Process.Signal(syscall.SIGKILL)
			break
		}
		if inFlight && f[1] == retire.StepClaim.String() {
			killedAt = f[2]
		}
		_, _ = io.WriteString(stdin, "\n")
	}
	for sc.Scan() {
	}
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the child was not killed (%v); it stepped through %v", err, order)
	}
	w.up.SetAdminHooks(fakeupstream.AdminHooks{})
	w.checkInvariants(false)
	ctx := context.Background()
	if restore {
		// The key whose disable is out is put back by hand.
		var a struct {
			SourceID string `bson:"sourceId"`
		}
		if err := w.db.Collection(rotation.ArchiveCollection).FindOne(ctx, bson.M{"_id": killedAt}).Decode(&a); err != nil {
			t.Fatal(err)
		}
		if _, err := w.db.Collection(w.pool.KeysCollection).InsertOne(ctx,
			bson.M{"_id": a.SourceID + "-restored", rotation.FieldAPIKey: w.old[a.SourceID], rotation.FieldStatus: rotation.StatusHealthy}); err != nil {
			t.Fatal(err)
		}
		delete(w.old, a.SourceID)
	}
	w.clock.Advance(retire.DefaultStaleAfter)
	r := w.retirer(retire.Config{Owner: "recovering"})
	runUntilSettled(t, r)
	if held != nil {
		if held.count() != 1 {
			t.Fatalf("%d disables held, want 1", held.count())
		}
		held.deliver()
		w.clock.Advance(time.Minute)
		runUntilSettled(t, r)
	}
	w.checkInvariants(true)
	// Each rotation is recorded once: its attempts are the killed one and
	// at most one more.
	for id := range w.old {
		if n := w.archive(id)[retire.FieldAttempts]; n != int32(1) && n != int32(2) {
			t.Errorf("rotation of %s: %v attempts recorded", id, n)
		}
	}
}
