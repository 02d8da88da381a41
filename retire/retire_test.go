package retire_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/internal/fakeupstream"
	"github.com/spendchecker/spendchecker/keyadmin"
	"github.com/spendchecker/spendchecker/retire"
	"github.com/spendchecker/spendchecker/rotation"
)

var kinds = []string{keyadmin.OpenRouter, keyadmin.LiteLLM}

// A rotated key is disabled upstream once its grace period has passed, not
// before, and the simulated upstream refuses it from then on.
func TestRetireAfterGrace(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			w := newWorld(t, kind, 3, 2)
			r := w.retirer(retire.Config{Grace: time.Minute})
			w.clock.Advance(59 * time.Second)
			if rep, err := r.Run(context.Background()); err != nil || rep.Retired != 0 {
				t.Fatalf("within the grace period: %+v, %v", rep, err)
			}
			for _, s := range w.old {
				if w.up.Disabled(s) {
					t.Fatal("a key was disabled within its grace period")
				}
			}
			w.clock.Advance(2 * time.Second)
			if rep := runUntilSettled(t, r); rep.Retired != 2 {
				t.Fatalf("retired %d, want 2", rep.Retired)
			}
			w.checkInvariants(true)
			if w.up.Disabled(w.liveKey("k2")) {
				t.Fatal("the key never rotated was disabled")
			}
		})
	}
}

// liveKey is the secret of a live key.
func (w *world) liveKey(id string) string {
	var doc struct {
		APIKey string `bson:"apiKey"`
	}
	if err := w.db.Collection(w.pool.KeysCollection).FindOne(context.Background(), bson.M{"_id": id}).Decode(&doc); err != nil {
		w.t.Fatal(err)
	}
	return doc.APIKey
}

// Rotations that undid themselves or are still in progress are never
// retired, nor are rotations finished before retire was turned on, nor an
// undone rotation a late journal mark left done (its archived copy is
// marked undone: the rotation deleted nothing).
func TestRetireOnlyDoneRotations(t *testing.T) {
	w := newWorld(t, keyadmin.OpenRouter, 0, 0)
	ctx := context.Background()
	journal := w.db.Collection(rotation.JournalCollection)
	archive := w.db.Collection(rotation.ArchiveCollection)
	for _, c := range []struct {
		id, state string
		finished  time.Time
		undone    bool // the archived copy is marked undone
	}{
		{"rot_undone", "undone", t0, true},
		{"rot_claimed", "claimed", t0, false},
		{"rot_before", "done", t0.Add(-time.Hour), false},
		{"rot_undone_marked_done", "done", t0, true},
		{"rot_done", "done", t0, false},
	} {
		k := w.up.AddManagedKey(c.id, "", 10)
		doc := bson.M{"_id": "key-" + c.id, rotation.FieldAPIKey: k.Secret, rotation.FieldUpstreamKeyID: k.ID}
		if _, err := journal.InsertOne(ctx, bson.M{"_id": c.id, "pool": w.pool.Name, "oldKeyId": "key-" + c.id, "state": c.state, "finishedAt": c.finished}); err != nil {
			t.Fatal(err)
		}
		a := bson.M{"_id": c.id, "sourceId": "key-" + c.id, "document": doc, "metadata": bson.M{"pool": w.pool.Name, "rotationId": c.id}}
		if c.undone {
			a[rotation.FieldArchiveUndoneAt] = t0
		}
		if _, err := archive.InsertOne(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	w.clock.Advance(time.Hour)
	if rep := runUntilSettled(t, w.retirer(retire.Config{})); rep.Retired != 1 {
		t.Fatalf("retired %d, want only rot_done", rep.Retired)
	}
	for _, k := range w.up.ManagedKeys() {
		if k.Disabled != (k.Name == "rot_done") {
			t.Errorf("%s: disabled %v", k.Name, k.Disabled)
		}
	}
}

// A secret live again (put back by hand under another id, or an unused
// backup) is never disabled, nor is the upstream id a live key names
// (a copied upstreamKeyId).
func TestRetireNeverDisablesALiveKey(t *testing.T) {
	for _, where := range []string{"key", "backup", "upstream id"} {
		t.Run(where, func(t *testing.T) {
			w := newWorld(t, keyadmin.OpenRouter, 2, 2)
			coll, doc := w.pool.KeysCollection, bson.M{"_id": "restored", rotation.FieldAPIKey: w.old["k0"]}
			switch where {
			case "backup":
				coll, doc = w.pool.BackupsCollection, bson.M{"_id": "readded", rotation.FieldAPIKey: w.old["k0"], rotation.FieldIsUsed: false}
			case "upstream id":
				doc = bson.M{"_id": "copied", rotation.FieldAPIKey: "sk-another-key-0123456789", rotation.FieldUpstreamKeyID: w.upstreamID(w.old["k0"])}
			}
			if _, err := w.db.Collection(coll).InsertOne(context.Background(), doc); err != nil {
				t.Fatal(err)
			}
			w.clock.Advance(time.Hour)
			rep := runUntilSettled(t, w.retirer(retire.Config{}))
			if rep.Retired != 1 || rep.Skipped != 1 {
				t.Fatalf("report %+v, want k1 retired and k0 skipped", rep)
			}
			if w.up.Disabled(w.old["k0"]) || w.archive("k0")[retire.FieldOutcome] != retire.OutcomeLive {
				t.Fatal("the live key was disabled, or not recorded live")
			}
			w.checkInvariants(false)
		})
	}
}

// The secret put back while the disable was out is enabled again.
func TestRetireUndoesADisableRacingARestore(t *testing.T) {
	w := newWorld(t, keyadmin.OpenRouter, 1, 1)
	restore := &hookUpstream{Upstream: w.admin, afterDisable: func() {
		_, _ = w.db.Collection(w.pool.KeysCollection).InsertOne(context.Background(), bson.M{"_id": "restored", rotation.FieldAPIKey: w.old["k0"]})
	}}
	w.clock.Advance(time.Hour)
	runUntilSettled(t, w.retirer(retire.Config{Upstream: restore}))
	if w.up.Disabled(w.old["k0"]) {
		t.Fatal("the key put back during its disable stays disabled")
	}
	w.checkInvariants(false)
}

// hookUpstream wraps an Upstream with hooks around Disable.
type hookUpstream struct {
	retire.Upstream
	beforeDisable, afterDisable func()
}

func (h *hookUpstream) Disable(ctx context.Context, id string) error {
	if h.beforeDisable != nil {
		h.beforeDisable()
	}
	err := h.Upstream.Disable(ctx, id)
	if h.afterDisable != nil {
		h.afterDisable()
	}
	return err
}

// Failed attempts are recorded on the archive and retried after a backoff
// (at least the upstream's Retry-After), by the same process or a new one.
func TestRetireBacksOff(t *testing.T) {
	for _, c := range []struct {
		name, retryAfter string
		status           int
		wantNext         time.Duration
	}{
		{"5xx", "", http.StatusBadGateway, time.Minute},
		{"429", "3600", http.StatusTooManyRequests, time.Hour},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t, keyadmin.OpenRouter, 1, 1)
			var mu sync.Mutex
			failing, calls := true, 0
			w.up.SetAdminHooks(fakeupstream.AdminHooks{Before: func(rw http.ResponseWriter, _ *http.Request) bool {
				mu.Lock()
				defer mu.Unlock()
				calls++
				if !failing {
					return false
				}
				if c.retryAfter != "" {
					rw.Header().Set("Retry-After", c.retryAfter)
				}
				rw.WriteHeader(c.status)
				fmt.Fprint(rw, `{"error":{"message":"try later"}}`)
				return true
			}})
			w.clock.Advance(time.Hour)
			rep, err := w.retirer(retire.Config{}).Run(context.Background())
			if err != nil || rep.Failed != 1 {
				t.Fatalf("first pass: %+v, %v", rep, err)
			}
			a := w.archive("k0")
			next, _ := a[retire.FieldNextAt].(bson.DateTime)
			if a[retire.FieldAttempts] != int32(1) || !strings.Contains(fmt.Sprint(a[retire.FieldLastError]), "try later") ||
				next.Time().Before(w.clock.Now().Add(c.wantNext)) {
				t.Fatalf("archive records %v", a)
			}
			// A restarted process waits out the backoff too.
			mu.Lock()
			failing, calls = false, 0
			mu.Unlock()
			r := w.retirer(retire.Config{})
			if rep, _ := r.Run(context.Background()); rep.Retired != 0 || calls != 0 {
				t.Fatalf("retried within the backoff: %+v, %d calls", rep, calls)
			}
			w.clock.Advance(c.wantNext)
			if rep := runUntilSettled(t, r); rep.Retired != 1 {
				t.Fatalf("after the backoff: %+v", rep)
			}
			w.checkInvariants(true)
			if a := w.archive("k0"); a[retire.FieldAttempts] != int32(2) || a[retire.FieldLastError] != nil {
				t.Fatalf("archive records %v", a)
			}
		})
	}
}

// Keys the upstream cannot be asked about are recorded and left alone; a
// key gone upstream counts as retired.
func TestRetireWithoutUpstreamIDOrKey(t *testing.T) {
	w := newWorld(t, keyadmin.OpenRouter, 2, 0)
	ctx := context.Background()
	// k0 has no hash; k1 was deleted upstream by hand.
	_, _ = w.db.Collection(w.pool.KeysCollection).UpdateOne(ctx, bson.M{"_id": "k0"}, bson.M{"$unset": bson.M{rotation.FieldUpstreamKeyID: ""}})
	w.rotateKey("k0")
	w.rotateKey("k1")
	for _, k := range w.up.ManagedKeys() {
		if k.Secret == w.old["k1"] {
			if err := w.admin.Delete(ctx, k.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	w.clock.Advance(time.Hour)
	rep := runUntilSettled(t, w.retirer(retire.Config{}))
	if rep.Skipped != 1 || rep.NotFound != 1 {
		t.Fatalf("report %+v", rep)
	}
	if got := w.archive("k0")[retire.FieldOutcome]; got != retire.OutcomeNoUpstreamID {
		t.Fatalf("k0 records %v", got)
	}
	if got := w.archive("k1")[retire.FieldOutcome]; got != retire.OutcomeNotFound {
		t.Fatalf("k1 records %v", got)
	}
	// The pool's upstream-key-ids names k0 for a new deployment; the
	// recorded outcome is final, though.
	w2 := newWorld(t, keyadmin.OpenRouter, 1, 0)
	_, _ = w2.db.Collection(w2.pool.KeysCollection).UpdateOne(ctx, bson.M{"_id": "k0"}, bson.M{"$unset": bson.M{rotation.FieldUpstreamKeyID: ""}})
	w2.rotateKey("k0")
	ids := map[string]string{}
	for _, k := range w2.up.ManagedKeys() {
		if k.Secret == w2.old["k0"] {
			ids["k0"] = k.ID
		}
	}
	w2.clock.Advance(time.Hour)
	if rep := runUntilSettled(t, w2.retirer(retire.Config{IDs: ids})); rep.Retired != 1 {
		t.Fatalf("with upstream-key-ids: %+v", rep)
	}
}

// Disabled keys are deleted upstream after DeleteAfter.
func TestRetireDeletesAfter(t *testing.T) {
	w := newWorld(t, keyadmin.LiteLLM, 1, 1)
	r := w.retirer(retire.Config{DeleteAfter: 7 * 24 * time.Hour})
	w.clock.Advance(time.Hour)
	runUntilSettled(t, r)
	if rep, _ := r.Run(context.Background()); rep.Deleted != 0 {
		t.Fatal("deleted before DeleteAfter")
	}
	w.clock.Advance(7 * 24 * time.Hour)
	if rep := runUntilSettled(t, r); rep.Deleted != 1 {
		t.Fatalf("report %+v", rep)
	}
	if a := w.archive("k0"); a[retire.FieldDeletedAt] == nil {
		t.Fatalf("archive %v", a)
	}
	for _, k := range w.up.ManagedKeys() {
		if k.Secret == w.old["k0"] && !k.Deleted {
			t.Fatal("not deleted upstream")
		}
	}
}

// A dry run says what it would disable and changes nothing.
func TestRetireDryRun(t *testing.T) {
	w := newWorld(t, keyadmin.OpenRouter, 2, 2)
	w.clock.Advance(time.Hour)
	rep, err := w.retirer(retire.Config{DryRun: true}).Run(context.Background())
	if err != nil || len(rep.Would) != 2 || rep.Would[0].Action != "disable" {
		t.Fatalf("dry run: %+v, %v", rep, err)
	}
	for _, s := range w.old {
		if w.up.Disabled(s) {
			t.Fatal("a dry run disabled a key")
		}
	}
	if n, _ := w.db.Collection(retire.Collection).CountDocuments(context.Background(), bson.M{"op": bson.M{"$exists": true}}); n != 0 {
		t.Fatalf("a dry run claimed %d attempts", n)
	}
}

// Several replicas retiring at once disable each key once, with one
// request.
func TestRetireReplicas(t *testing.T) {
	w := newWorld(t, keyadmin.OpenRouter, 12, 12)
	w.clock.Advance(time.Hour)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := range 4 {
		r := w.retirer(retire.Config{Owner: fmt.Sprintf("replica-%d", i)})
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 3 {
				if _, err := r.Run(context.Background()); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	runUntilSettled(t, w.retirer(retire.Config{}))
	w.checkInvariants(true)
	for _, k := range w.up.ManagedKeys() {
		if k.DisableCalls > 1 {
			t.Errorf("%s: %d disable requests", k.Name, k.DisableCalls)
		}
	}
}

// A deposed leader paused inside its disable, resumed after another
// replica took the stale attempt over, disables and records nothing twice.
func TestRetireDeposedLeaderResumes(t *testing.T) {
	w := newWorld(t, keyadmin.OpenRouter, 1, 1)
	w.clock.Advance(time.Hour)
	entered, release := make(chan struct{}), make(chan struct{})
	paused := &hookUpstream{Upstream: w.admin, beforeDisable: func() { close(entered); <-release }}
	old := w.retirer(retire.Config{Upstream: paused, Owner: "old-leader"})
	done := make(chan error)
	go func() { _, err := old.Run(context.Background()); done <- err }()
	<-entered
	w.clock.Advance(retire.DefaultStaleAfter)
	if rep := runUntilSettled(t, w.retirer(retire.Config{Owner: "new-leader"})); rep.Retired != 1 {
		t.Fatalf("the new leader: %+v", rep)
	}
	at := w.archive("k0")[retire.FieldRetiredAt]
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	w.checkInvariants(true)
	if got := w.archive("k0")[retire.FieldRetiredAt]; got != at {
		t.Fatalf("the deposed leader recorded again: %v, was %v", got, at)
	}
}

var errCrash = errors.New("crash")

// A crash at every step of a pass (at each of several rotations) is
// recovered by a later pass of another process: every old key disabled
// once and recorded, no live key disabled.
func TestRetireCrashAtEveryStep(t *testing.T) {
	for _, kind := range kinds {
		for _, step := range []retire.Step{retire.StepClaim, retire.StepUpstream, retire.StepRecord} {
			for _, at := range []int{0, 2} {
				if testing.Short() && at != 0 {
					continue // every step at the first rotation; a later one is the long run's
				}
				t.Run(fmt.Sprintf("%s/%s/rotation%d", kind, step, at), func(t *testing.T) {
					w := newWorld(t, kind, 3, 3)
					w.clock.Advance(time.Hour)
					seen := map[string]bool{}
					crash := w.retirer(retire.Config{Owner: "crashing", AfterStep: func(_ context.Context, id string, s retire.Step) error {
						seen[id] = true
						if s == step && len(seen) == at+1 {
							return errCrash
						}
						return nil
					}})
					if _, err := crash.Run(context.Background()); !errors.Is(err, errCrash) {
						t.Fatalf("the pass did not crash: %v", err)
					}
					w.checkInvariants(false)
					w.clock.Advance(retire.DefaultStaleAfter)
					runUntilSettled(t, w.retirer(retire.Config{Owner: "recovering"}))
					w.checkInvariants(true)
				})
			}
		}
	}
}

// upstreamID is the upstream's id of the key with this secret.
func (w *world) upstreamID(secret string) string {
	for _, k := range w.up.ManagedKeys() {
		if k.Secret == secret {
			return k.ID
		}
	}
	w.t.Fatal("no such key upstream")
	return ""
}
