package retire_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/keyadmin"
	"github.com/spendchecker/spendchecker/retire"
	"github.com/spendchecker/spendchecker/rotation"
)

// lostAnswer disables upstream and reports a timeout, as a request whose
// answer never came back.
type lostAnswer struct{ retire.Upstream }

func (l lostAnswer) Disable(ctx context.Context, id string) error {
	if err := l.Upstream.Disable(ctx, id); err != nil {
		return err
	}
	return &keyadmin.Error{Op: "disable", Msg: "context deadline exceeded"}
}

// A disable that reached the upstream without its outcome recorded (the
// process died after the answer, or the answer was lost), then the key
// put back by hand: the next pass finds it live and must not leave it
// disabled upstream.
func TestRetireDisabledUnrecordedThenRestored(t *testing.T) {
	for _, kind := range kinds {
		for _, how := range []string{"crash after the answer", "answer lost"} {
			t.Run(kind+"/"+how, func(t *testing.T) {
				w := newWorld(t, kind, 1, 1)
				w.clock.Advance(time.Hour)
				cfg := retire.Config{Owner: "first"}
				if how == "answer lost" {
					cfg.Upstream = lostAnswer{w.admin}
				} else {
					cfg.AfterStep = func(_ context.Context, _ string, s retire.Step) error {
						if s == retire.StepUpstream {
							return errCrash
						}
						return nil
					}
				}
				_, err := w.retirer(cfg).Run(context.Background())
				if how != "answer lost" && !errors.Is(err, errCrash) {
					t.Fatalf("the pass did not crash: %v", err)
				}
				if !w.up.Disabled(w.old["k0"]) {
					t.Fatal("the disable did not reach the upstream")
				}
				// Restored by hand from the archive under its old id.
				if _, err := w.db.Collection(w.pool.KeysCollection).InsertOne(context.Background(),
					bson.M{"_id": "k0-restored", rotation.FieldAPIKey: w.old["k0"], rotation.FieldStatus: rotation.StatusHealthy}); err != nil {
					t.Fatal(err)
				}
				w.clock.Advance(2 * time.Hour)
				runUntilSettled(t, w.retirer(retire.Config{Owner: "second"}))
				if got := w.archive("k0")[retire.FieldOutcome]; got != retire.OutcomeLive {
					t.Fatalf("outcome %v, want live", got)
				}
				w.checkInvariants(false)
			})
		}
	}
}

// The pool's upstream-key-ids naming one upstream id for the rotated key
// and for a live key (a copied line): disabling that id would cut the live
// key, so it is live.
func TestRetireMappedIDOfALiveKey(t *testing.T) {
	w := newWorld(t, keyadmin.OpenRouter, 2, 0)
	ctx := context.Background()
	for _, id := range []string{"k0", "k1"} {
		_, _ = w.db.Collection(w.pool.KeysCollection).UpdateOne(ctx, bson.M{"_id": id}, bson.M{"$unset": bson.M{rotation.FieldUpstreamKeyID: ""}})
	}
	var k1 string
	if err := w.db.Collection(w.pool.KeysCollection).FindOne(ctx, bson.M{"_id": "k1"}).Decode(&struct {
		APIKey *string `bson:"apiKey"`
	}{&k1}); err != nil {
		t.Fatal(err)
	}
	w.rotateKey("k0")
	// k1's line copied for k0: both name k1's hash.
	ids := map[string]string{"k0": w.upstreamID(k1), "k1": w.upstreamID(k1)}
	w.clock.Advance(time.Hour)
	runUntilSettled(t, w.retirer(retire.Config{IDs: ids}))
	if w.up.Disabled(k1) {
		t.Fatal("the live key k1 was disabled through the rotated key's mapped id")
	}
	if got := w.archive("k0")[retire.FieldOutcome]; got != retire.OutcomeLive {
		t.Fatalf("outcome %v, want live", got)
	}
}

// A rotation finished by a process whose clock is behind this one's (a
// proxy replica's rotator, on another machine) carries a finishedAt
// already past the grace when the retirer first sees it: the grace still
// runs from when it was seen, so requests holding the key are not cut.
func TestRetireGraceUnderASlowRotatorClock(t *testing.T) {
	for _, behind := range []time.Duration{10 * time.Minute, 24 * time.Hour} {
		t.Run(behind.String(), func(t *testing.T) {
			w := newWorld(t, keyadmin.OpenRouter, 2, 0)
			r := w.retirer(retire.Config{Grace: time.Minute})
			w.clock.Advance(48 * time.Hour)
			if _, err := r.Run(context.Background()); err != nil {
				t.Fatal(err)
			}
			w.clock.Advance(30 * time.Second)
			slow, err := rotation.New(w.db, w.pool, rotation.Config{Owner: "proxy", Now: func() time.Time { return w.clock.Now().Add(-behind) }})
			if err != nil {
				t.Fatal(err)
			}
			var doc struct {
				APIKey string `bson:"apiKey"`
			}
			if err := w.db.Collection(w.pool.KeysCollection).FindOne(context.Background(), bson.M{"_id": "k0"}).Decode(&doc); err != nil {
				t.Fatal(err)
			}
			if res, err := slow.Rotate(context.Background(), "k0", "threshold"); err != nil || res.Outcome != rotation.Rotated {
				t.Fatalf("rotate: %v %v", res.Outcome, err)
			}
			w.clock.Advance(10 * time.Second)
			if _, err := r.Run(context.Background()); err != nil {
				t.Fatal(err)
			}
			if w.up.Disabled(doc.APIKey) {
				t.Fatal("the key was disabled 10s after its rotation, within its 1m grace")
			}
			w.clock.Advance(time.Minute)
			w.old["k0"] = doc.APIKey
			runUntilSettled(t, r)
			w.checkInvariants(true)
		})
	}
}

// The rotated key put back by hand as a backup, then claimed by another
// key's rotation still in progress (the backup reserved: isUsed, no
// usedAt; the key not inserted yet): it is about to go live, so it is
// never disabled.
func TestRetireKeyPutBackAndClaimedByARotationInProgress(t *testing.T) {
	w := newWorld(t, keyadmin.OpenRouter, 2, 1)
	ctx := context.Background()
	backups := w.db.Collection(w.pool.BackupsCollection)
	if _, err := backups.DeleteMany(ctx, bson.M{rotation.FieldIsUsed: bson.M{"$ne": true}}); err != nil {
		t.Fatal(err)
	}
	if _, err := backups.InsertOne(ctx, bson.M{"_id": "readded", rotation.FieldAPIKey: w.old["k0"], rotation.FieldIsUsed: false,
		rotation.FieldUpstreamKeyID: w.upstreamID(w.old["k0"]), rotation.FieldCreatedAt: w.clock.Now()}); err != nil {
		t.Fatal(err)
	}
	crashing, err := rotation.New(w.db, w.pool, rotation.Config{Owner: "crashing", Now: w.clock.Now,
		AfterStep: func(_ context.Context, _ string, s rotation.Step) error {
			if s == rotation.StepClaim {
				return errCrash
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := crashing.Rotate(ctx, "k1", "threshold"); !errors.Is(err, errCrash) {
		t.Fatalf("the rotation did not stop after its claim: %v", err)
	}
	w.clock.Advance(time.Hour)
	runUntilSettled(t, w.retirer(retire.Config{}))
	if w.up.Disabled(w.old["k0"]) {
		t.Fatal("the key claimed by a rotation in progress was disabled")
	}
	if _, err := w.rot.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if w.liveKey("readded") != w.old["k0"] {
		t.Fatal("the rotation did not bring the key in")
	}
	w.checkInvariants(false)
}
