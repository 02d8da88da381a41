package rotation_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation"
)

const (
	childURIEnv = "SPENDCHECKER_ROTATION_CHILD_URI"
	childDBEnv  = "SPENDCHECKER_ROTATION_CHILD_DB"
)

func TestMain(m *testing.M) {
	if uri := os.Getenv(childURIEnv); uri != "" {
		os.Exit(rotationChild(uri, os.Getenv(childDBEnv)))
	}
	os.Exit(m.Run())
}

// rotationChild is a separate process that recovers, then rotates random
// keys from three goroutines, printing a line after every saga step so the
// parent can kill it at a chosen moment.
func rotationChild(uri, dbName string) int {
	ctx := context.Background()
	client, err := mongo.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	db := client.Database(dbName)
	var mu sync.Mutex
	r, err := rotation.New(db, testPool, rotation.Config{
		Owner: fmt.Sprintf("child-%d", os.Getpid()),
		AfterStep: func(_ context.Context, _ string, s rotation.Step) error {
			mu.Lock()
			defer mu.Unlock()
			fmt.Println("step", s)
			return nil
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if _, err := r.Recover(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "recover:", err)
	}
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				var ids []struct {
					ID string `bson:"_id"`
				}
				cur, err := db.Collection(testPool.KeysCollection).Find(ctx, bson.M{}, options.Find().SetProjection(bson.M{"_id": 1}))
				if err == nil {
					err = cur.All(ctx, &ids)
				}
				if err != nil || len(ids) == 0 {
					fmt.Fprintln(os.Stderr, "list keys:", err)
					return
				}
				res, err := r.Rotate(ctx, ids[rand.IntN(len(ids))].ID, "manual")
				if err != nil {
					fmt.Fprintln(os.Stderr, "rotate:", err)
				}
				if res.Outcome == rotation.NoBackup {
					return
				}
			}
		}()
	}
	wg.Wait()
	return 0
}

// Real processes rotating keys are killed with SIGKILL at random moments,
// two at a time, 30 rounds; then recovery, and the invariants must hold.
func TestSIGKILLDuringRotations(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	ctx := context.Background()
	mdb := mongotest.New(t)
	seed(t, mdb.Database, 20, 250, 2)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const rounds = 30
	killedMidway := 0
	for round := range rounds {
		var wg sync.WaitGroup
		for c := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cmd := exec.Command(exe)
				cmd.Env = append(os.Environ(), childURIEnv+"="+mdb.URI, childDBEnv+"="+mdb.Name)
				cmd.Stderr = os.Stderr
				out, err := cmd.StdoutPipe()
				if err != nil {
					t.Error(err)
					return
				}
				if err := cmd.Start(); err != nil {
					t.Error(err)
					return
				}
				killAfter := 1 + rand.IntN(40)
				sc := bufio.NewScanner(out)
				for n := 0; n < killAfter && sc.Scan(); n++ {
				}
				if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Logf("round %d child %d: already exited: %v", round, c, err)
				}
				for sc.Scan() {
				}
				_ = cmd.Wait()
			}()
		}
		wg.Wait()
		if n := count(t, mdb.Database, rotation.JournalCollection, bson.M{"state": "claimed"}); n > 0 {
			killedMidway++
		}
		// The pool never shrinks, whatever instant the kill hit.
		if n := count(t, mdb.Database, testPool.KeysCollection, bson.M{}); n < 20 {
			t.Fatalf("round %d: pool shrank to %d", round, n)
		}
	}
	rep, err := newRotator(t, mdb.Database, rotation.Config{}).Recover(ctx)
	if err != nil {
		t.Fatalf("final recover: %+v, %v", rep, err)
	}
	done := count(t, mdb.Database, rotation.JournalCollection, bson.M{"state": "done"})
	t.Logf("%d rounds, %d left unfinished rotations behind, %d rotations done, final recovery %+v", rounds, killedMidway, done, rep)
	if killedMidway == 0 || done == 0 {
		t.Fatalf("no kill landed inside a rotation (%d done): the test proved nothing", done)
	}
	checkInvariants(t, mdb.Database, 20)
}
