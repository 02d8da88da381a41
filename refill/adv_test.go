package refill_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/internal/fakeupstream"
	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/keyadmin"
	"github.com/spendchecker/spendchecker/refill"
)

// An upstream that answers a create with a key it does not have (gone
// before the answer): that key never becomes a backup, the slot is
// settled, and a later slot refills the pool.
func TestRefillCreateAnsweredForNoKey(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			w := newWorld(t, kind, 1, 0)
			admin, err := keyadmin.New(keyadmin.Config{Kind: kind, BaseURL: w.up.URL, AdminKey: mgmtKey, Wait: noWait})
			if err != nil {
				t.Fatal(err)
			}
			lying := true
			w.up.SetAdminHooks(fakeupstream.AdminHooks{AfterCreate: func(_ http.ResponseWriter, r *http.Request, k fakeupstream.ManagedKey) bool {
				if lying {
					if err := admin.Delete(r.Context(), k.ID); err != nil {
						t.Error(err)
					}
				}
				return false
			}})
			r := w.refiller(refill.Config{Below: 1, To: 1})
			rep, err := r.Run(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if w.unused() != 0 {
				t.Fatalf("a key the upstream does not have became a backup: %+v", rep)
			}
			lying = false
			settle(t, w, r)
			w.checkInvariants(true)
			if w.unused() != 1 {
				t.Fatalf("%d unused backups, want 1", w.unused())
			}
		})
	}
}

// A LiteLLM proxy that ignores the proposed key and makes its own: the key
// it answered is the backup; with the answer lost, the key found under the
// slot's name is not the one proposed, so it is disabled and recorded.
func TestRefillLiteLLMIgnoresTheProposedKey(t *testing.T) {
	for _, crash := range []bool{false, true} {
		t.Run(fmt.Sprintf("crash=%v", crash), func(t *testing.T) {
			w := newWorld(t, keyadmin.LiteLLM, 1, 0)
			w.up.SetAdminHooks(fakeupstream.AdminHooks{Before: func(_ http.ResponseWriter, r *http.Request) bool {
				if r.URL.Path == "/key/generate" {
					var in map[string]any
					b, _ := io.ReadAll(r.Body)
					_ = json.Unmarshal(b, &in)
					delete(in, "key")
					b, _ = json.Marshal(in)
					r.Body = io.NopCloser(bytes.NewReader(b))
				}
				return false
			}})
			crashed := false
			r := w.refiller(refill.Config{Below: 1, To: 1, AfterStep: func(_ context.Context, _ string, s refill.Step) error {
				if crash && s == refill.StepCreate && !crashed {
					crashed = true
					return errCrash
				}
				return nil
			}})
			if _, err := r.Run(context.Background()); err != nil && !errors.Is(err, errCrash) {
				t.Fatal(err)
			}
			settle(t, w, w.refiller(refill.Config{Below: 1, To: 1, Owner: "recovering"}))
			w.checkInvariants(true)
			if w.unused() != 1 {
				t.Fatalf("%d unused backups, want 1", w.unused())
			}
		})
	}
}

// OpenRouter answers a create with the new key's hash but not its secret,
// and its list skips that key: the hash the answer named is enough to
// disable it, so it is not left enabled and unrecorded.
func TestRefillNoSecretAndTheListMissesIt(t *testing.T) {
	w := newWorld(t, keyadmin.OpenRouter, 1, 0)
	hidden := ""
	w.up.SetAdminHooks(fakeupstream.AdminHooks{
		Before: func(rw http.ResponseWriter, r *http.Request) bool {
			if r.Method == http.MethodGet && strings.TrimSuffix(r.URL.Path, "/") == "/api/v1/keys" && hidden != "" {
				// A list page that skips the hidden key.
				rw.WriteHeader(http.StatusOK)
				fmt.Fprint(rw, `{"data":[]}`)
				return true
			}
			return false
		},
		AfterCreate: func(rw http.ResponseWriter, r *http.Request, k fakeupstream.ManagedKey) bool {
			if hidden != "" {
				return false
			}
			hidden = k.ID
			return noSecret(keyadmin.OpenRouter)(rw, r, k)
		},
	})
	r := w.refiller(refill.Config{Below: 1, To: 1})
	for range 4 {
		if _, err := r.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		w.clock.Advance(refill.DefaultSettleAfter + time.Hour)
	}
	w.up.SetAdminHooks(fakeupstream.AdminHooks{})
	settle(t, w, r)
	w.checkInvariants(true)
}

// A second deployment whose database was restored from the first one's
// (its name token copied) refills the same pool on the same upstream
// account: an unclear create of its own must never disable the first
// deployment's backup found under the same name.
func TestRefillClonedDeploymentSharesTheUpstream(t *testing.T) {
	a := newWorld(t, keyadmin.OpenRouter, 1, 0)
	ra := a.refiller(refill.Config{Below: 1, To: 1, Owner: "production"})
	mdb := mongotest.New(t)
	b := &world{t: t, db: mdb.Database, mdb: mdb, pool: a.pool, up: a.up, kind: a.kind, clock: a.clock, timeout: a.timeout}
	var tok bson.M
	if err := a.db.Collection(refill.Collection).FindOne(context.Background(), bson.M{"_id": "token"}).Decode(&tok); err != nil {
		t.Fatal(err)
	}
	if _, err := b.db.Collection(refill.Collection).InsertOne(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	if rep, err := ra.Run(context.Background()); err != nil || rep.Created != 1 {
		t.Fatalf("production: %+v, %v", rep, err)
	}
	var backup struct {
		APIKey string `bson:"apiKey"`
	}
	if err := a.db.Collection(a.pool.BackupsCollection).FindOne(context.Background(), bson.M{}).Decode(&backup); err != nil {
		t.Fatal(err)
	}
	a.up.SetAdminHooks(fakeupstream.AdminHooks{AfterCreate: badGateway})
	rb := b.refiller(refill.Config{Below: 1, To: 1, Owner: "staging"})
	if _, err := rb.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	a.up.SetAdminHooks(fakeupstream.AdminHooks{})
	settle(t, b, rb)
	if a.up.Disabled(backup.APIKey) {
		t.Fatal("the other deployment's backup was disabled upstream")
	}
	// Staging's own key: its backup, or disabled and recorded.
	names := map[string]slotDoc{}
	for _, s := range b.slots() {
		names[s.Name] = s
	}
	backups := b.backups()
	for _, k := range a.up.ManagedKeys() {
		s, ok := names[k.Name]
		if !ok {
			continue
		}
		if bk, isBackup := backups[k.Name]; !(isBackup && bk.APIKey == k.Secret) && !(k.Disabled && s.State == "orphaned") {
			t.Errorf("staging's key %s: disabled %v, slot %s", k.Name, k.Disabled, s.State)
		}
	}
}

// A clock set forward across midnight (a host keeping local time as UTC)
// and then corrected: the keys created under the next day's name count
// against the day the clock returns to, so the correction opens no second
// allowance within the same hours.
func TestRefillCapsAcrossAClockCorrectedBack(t *testing.T) {
	w := newWorld(t, keyadmin.LiteLLM, 1, 0)
	w.clock.Advance(8 * time.Hour) // 20:00 UTC
	useAll := func() {
		if _, err := w.db.Collection(w.pool.BackupsCollection).UpdateMany(context.Background(), bson.M{},
			bson.M{"$set": bson.M{"isUsed": true, "usedAt": w.clock.Now()}}); err != nil {
			t.Fatal(err)
		}
	}
	r := w.refiller(refill.Config{Below: 3, To: 3, MaxKeysPerDay: 3, MaxUSDPerDay: 1000})
	w.clock.Advance(10 * time.Hour) // the clock 10h ahead: 06:00 the next day
	if rep, err := r.Run(context.Background()); err != nil || rep.Created != 3 {
		t.Fatalf("ahead: %+v, %v", rep, err)
	}
	useAll()
	w.clock.Advance(-10*time.Hour + 5*time.Minute) // corrected: 20:05 the first day
	rep, err := r.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Created != 0 || !rep.Capped {
		t.Fatalf("the corrected clock opened another allowance: %+v (%d slots)", rep, len(w.slots()))
	}
	// The next day's allowance was spent ahead; the day after brings one.
	useAll()
	w.clock.Advance(24 * time.Hour)
	if rep, err := r.Run(context.Background()); err != nil || rep.Created != 0 {
		t.Fatalf("the next day: %+v, %v", rep, err)
	}
	w.clock.Advance(24 * time.Hour)
	if rep, err := r.Run(context.Background()); err != nil || rep.Created != 3 {
		t.Fatalf("the day after: %+v, %v", rep, err)
	}
	w.checkInvariants(true)
}

// OpenRouter answers a create with the hash of another key of the account
// (someone else's, under another name): that key is neither adopted nor
// disabled; the slot's own key, found by name, is disabled and recorded.
func TestRefillCreateAnsweredWithAnotherKeysHash(t *testing.T) {
	w := newWorld(t, keyadmin.OpenRouter, 1, 0)
	other := w.up.AddManagedKey("someone-elses-key", "", 10)
	w.up.SetAdminHooks(fakeupstream.AdminHooks{AfterCreate: func(rw http.ResponseWriter, _ *http.Request, k fakeupstream.ManagedKey) bool {
		if k.Name == "someone-elses-key" || strings.Contains(k.Name, "-1-") {
			return false
		}
		rw.WriteHeader(http.StatusCreated)
		fmt.Fprintf(rw, `{"data":{"hash":%q,"name":%q,"disabled":false},"key":%q}`, other.ID, k.Name, k.Secret)
		return true
	}})
	r := w.refiller(refill.Config{Below: 1, To: 1})
	settle(t, w, r)
	if w.up.Disabled(other.Secret) {
		t.Fatal("someone else's key, named by the lying answer, was disabled")
	}
	for _, b := range w.backups() {
		if b.UpstreamID == other.ID || b.APIKey == other.Secret {
			t.Fatal("someone else's key became a backup")
		}
	}
	w.checkInvariants(true)
}

// A LiteLLM proxy answering a create with a key it already had, one
// without an alias that is live in the pool: it never becomes a backup
// (the pool would hold one secret twice), and is not disabled.
func TestRefillCreateAnsweredWithALiveKeyWithoutAlias(t *testing.T) {
	w := newWorld(t, keyadmin.LiteLLM, 1, 0)
	live := w.up.AddManagedKey("", "", 10)
	if _, err := w.db.Collection(w.pool.KeysCollection).InsertOne(context.Background(),
		bson.M{"_id": "no-alias", "apiKey": live.Secret, "status": "healthy"}); err != nil {
		t.Fatal(err)
	}
	lie := true
	w.up.SetAdminHooks(fakeupstream.AdminHooks{AfterCreate: func(rw http.ResponseWriter, _ *http.Request, k fakeupstream.ManagedKey) bool {
		if !lie {
			return false
		}
		lie = false
		fmt.Fprintf(rw, `{"key":%q,"key_alias":%q,"max_budget":10}`, live.Secret, k.Name)
		return true
	}})
	settle(t, w, w.refiller(refill.Config{Below: 1, To: 1}))
	for _, b := range w.backups() {
		if b.APIKey == live.Secret {
			t.Fatal("a live key became a backup")
		}
	}
	if w.up.Disabled(live.Secret) {
		t.Fatal("the live key was disabled")
	}
	w.checkInvariants(true)
}
