package refill_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/internal/fakeupstream"
	"github.com/spendchecker/spendchecker/keyadmin"
	"github.com/spendchecker/spendchecker/refill"
	"github.com/spendchecker/spendchecker/rotation"
)

const (
	childURIEnv  = "SPENDCHECKER_REFILL_CHILD_URI"
	childDBEnv   = "SPENDCHECKER_REFILL_CHILD_DB"
	childUpEnv   = "SPENDCHECKER_REFILL_CHILD_UPSTREAM"
	childKindEnv = "SPENDCHECKER_REFILL_CHILD_KIND"
	childTo      = 6
)

func TestMain(m *testing.M) {
	if uri := os.Getenv(childURIEnv); uri != "" {
		os.Exit(refillChild(uri, os.Getenv(childDBEnv), os.Getenv(childUpEnv), os.Getenv(childKindEnv)))
	}
	os.Exit(m.Run())
}

// refillChild is a separate process refilling the pool, printing a line
// after every step so the parent can kill it at a chosen moment.
func refillChild(uri, dbName, upURL, kind string) int {
	ctx := context.Background()
	client, err := mongo.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	pool, _ := rotation.Preset("openhands")
	admin, err := keyadmin.New(keyadmin.Config{Kind: kind, BaseURL: upURL, AdminKey: mgmtKey, Timeout: time.Minute})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	r, err := refill.New(client.Database(dbName), refill.Config{Pool: pool, Upstream: admin, Below: childTo, To: childTo, Limit: 10,
		MaxKeysPerDay: refill.MaxKeysPerDay, MaxUSDPerDay: 1e6, Owner: fmt.Sprintf("child-%d", os.Getpid()),
		AfterStep: func(_ context.Context, id string, s refill.Step) error {
			fmt.Println("step", s, id)
			return nil
		}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	for range 20 {
		if _, err := r.Run(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "run:", err)
		}
	}
	return 0
}

// Real processes refilling the pool are killed with SIGKILL at random
// moments, answers of the upstream lost in half the rounds; after each,
// another process settles what the kill left, and the invariants hold: no
// slot created two keys, every created key is a backup or disabled and
// recorded, none disabled live.
func TestSIGKILLDuringRefills(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			w := newWorld(t, kind, 1, 0)
			const rounds = 10
			open := 0
			for round := range rounds {
				if round%2 == 1 {
					w.up.SetAdminHooks(fakeupstream.AdminHooks{AfterCreate: badGateway})
				}
				cmd := exec.Command(exe)
				cmd.Env = append(os.Environ(), childURIEnv+"="+w.mdb.URI, childDBEnv+"="+w.mdb.Name, childUpEnv+"="+w.up.URL, childKindEnv+"="+kind)
				cmd.Stderr = os.Stderr
				out, err := cmd.StdoutPipe()
				if err != nil {
					t.Fatal(err)
				}
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				killAfter := 1 + rand.IntN(4*childTo)
				sc := bufio.NewScanner(out)
				for n := 0; n < killAfter && sc.Scan(); n++ {
				}
				_ = cmd.Process.Signal(syscall.SIGKILL)
				for sc.Scan() {
				}
				_ = cmd.Wait()
				w.up.SetAdminHooks(fakeupstream.AdminHooks{})
				w.checkInvariants(false)
				if n, _ := w.db.Collection(refill.Collection).CountDocuments(context.Background(), bson.M{"kind": "slot", "state": "pending"}); n > 0 {
					open++
				}
				// Another process, later, settles what the kill left.
				w.clock.mu.Lock()
				w.clock.now = time.Now().Add(time.Duration(round+1) * time.Hour)
				w.clock.mu.Unlock()
				settle(t, w, w.refiller(refill.Config{Below: childTo, To: childTo, MaxKeysPerDay: refill.MaxKeysPerDay, MaxUSDPerDay: 1e6, Owner: "recovering"}))
				w.checkInvariants(true)
				if u := w.unused(); u != childTo {
					t.Fatalf("round %d: %d unused backups after recovery, want %d", round, u, childTo)
				}
				// Rotations use the backups up before the next round.
				if _, err := w.db.Collection(w.pool.BackupsCollection).UpdateMany(context.Background(), bson.M{rotation.FieldIsUsed: false},
					bson.M{"$set": bson.M{rotation.FieldIsUsed: true}}); err != nil {
					t.Fatal(err)
				}
			}
			t.Logf("%d rounds, %d left open slots behind, %d slots", rounds, open, len(w.slots()))
			if open == 0 {
				t.Fatal("no kill left a slot open: the test proved nothing")
			}
		})
	}
}
