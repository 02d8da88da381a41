package retire_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/keyadmin"
	"github.com/spendchecker/spendchecker/retire"
	"github.com/spendchecker/spendchecker/rotation"
)

// lateOps holds the disables or enables it is told to: each answers a
// timeout without reaching the upstream, which carries it out only when
// deliver is called (a request the network delivers late).
type lateOps struct {
	retire.Upstream
	mu                      sync.Mutex
	holdDisable, holdEnable bool
	heldDisable, heldEnable []string
}

func (l *lateOps) Disable(ctx context.Context, id string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.holdDisable {
		l.heldDisable = append(l.heldDisable, id)
		return &keyadmin.Error{Op: "disable", Msg: "context deadline exceeded"}
	}
	return l.Upstream.Disable(ctx, id)
}

func (l *lateOps) Enable(ctx context.Context, id string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.holdEnable {
		l.heldEnable = append(l.heldEnable, id)
		return &keyadmin.Error{Op: "enable", Msg: "context deadline exceeded"}
	}
	return l.Upstream.Enable(ctx, id)
}

func (l *lateOps) set(disable, enable bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.holdDisable, l.holdEnable = disable, enable
}

// deliver carries the held requests out now.
func (l *lateOps) deliver(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	d, e := l.heldDisable, l.heldEnable
	l.heldDisable, l.heldEnable = nil, nil
	l.mu.Unlock()
	for _, id := range d {
		if err := l.Upstream.Disable(context.Background(), id); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range e {
		if err := l.Upstream.Enable(context.Background(), id); err != nil {
			t.Fatal(err)
		}
	}
}

// A key rotated out, put back by hand while its disable's outcome was
// unknown, so retire sends an enable for it; that enable's answer is lost.
// The key is then rotated out again and both rotations retire it. Only
// then does the upstream carry the enable out: a key rotated out must not
// stay enabled upstream.
func TestAdv26b_EnableDeliveredAfterTheKeyWasRotatedOutAgain(t *testing.T) {
	for _, kind := range kinds {
		for _, path := range []string{"enable before a retry", "enable of the watch"} {
			t.Run(kind+"/"+path, func(t *testing.T) {
				ctx := context.Background()
				w := newWorld(t, kind, 2, 1)
				late := &lateOps{Upstream: w.admin}
				r := w.retirer(retire.Config{Upstream: late})
				secret := w.old["k0"]
				w.clock.Advance(time.Hour)
				if path == "enable before a retry" {
					// The first disable is carried out, its answer lost.
					if _, err := w.retirer(retire.Config{Upstream: lostAnswer{w.admin}}).Run(ctx); err != nil {
						t.Fatal(err)
					}
				} else {
					late.set(true, false)
					if _, err := r.Run(ctx); err != nil {
						t.Fatal(err)
					}
				}
				// Put back by hand, with its upstream id.
				var upID string
				for _, k := range w.up.ManagedKeys() {
					if k.Secret == secret {
						upID = k.ID
					}
				}
				if _, err := w.db.Collection(w.pool.KeysCollection).InsertOne(ctx, bson.M{"_id": "k0-restored",
					rotation.FieldAPIKey: secret, rotation.FieldStatus: rotation.StatusHealthy, rotation.FieldUpstreamKeyID: upID}); err != nil {
					t.Fatal(err)
				}
				w.clock.Advance(2 * time.Hour)
				if path == "enable before a retry" {
					late.set(false, true) // the enable that undoes the lost disable is held
					if rep, err := r.Run(ctx); err != nil || rep.Failed != 1 {
						t.Fatalf("pass: %+v, %v", rep, err)
					}
				} else {
					late.set(false, false)
					runUntilSettled(t, r)
					if got := w.archive("k0")[retire.FieldOutcome]; got != retire.OutcomeLive {
						t.Fatalf("outcome %v, want live", got)
					}
					late.deliver(t) // the first disable, carried out late
					late.set(false, true)
					w.clock.Advance(time.Minute)
					if _, err := r.Run(ctx); err != nil {
						t.Fatal(err)
					}
				}
				late.mu.Lock()
				held := len(late.heldEnable)
				late.mu.Unlock()
				if held != 1 || !w.up.Disabled(secret) {
					t.Fatalf("%d enables held, key disabled %v", held, w.up.Disabled(secret))
				}
				// Rotated out again; retired by both rotations.
				late.set(false, false)
				w.rotateKey("k0-restored")
				w.clock.Advance(2 * time.Hour)
				runUntilSettled(t, r)
				if !w.up.Disabled(secret) {
					t.Fatal("the key rotated out again is not disabled")
				}
				// The held enable arrives now.
				late.deliver(t)
				w.clock.Advance(time.Minute)
				runUntilSettled(t, r)
				if !w.up.Disabled(secret) {
					t.Fatalf("a key rotated out is enabled upstream by a late enable (archives: %v / %v)",
						w.archive("k0")[retire.FieldOutcome], w.archive("k0-restored")[retire.FieldOutcome])
				}
				w.clock.Advance(retire.DefaultLateWithin + time.Minute)
				runUntilSettled(t, r)
				for _, id := range []string{"k0", "k0-restored"} {
					if a := w.archive(id); a[retire.FieldRecheckUntil] != nil {
						t.Fatalf("%s still watched past the window: %v", id, a)
					}
				}
			})
		}
	}
}
