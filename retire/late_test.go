package retire_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/internal/fakeupstream"
	"github.com/spendchecker/spendchecker/keyadmin"
	"github.com/spendchecker/spendchecker/retire"
	"github.com/spendchecker/spendchecker/rotation"
)

// lateHeader marks a held request the upstream delivers late, so the hook
// lets it through.
const lateHeader = "X-Test-Late-Delivery"

// heldDisables makes the fake upstream take disable requests without
// answering them (the connection drops) and apply them only when deliver
// is called: a request whose answer was lost and that the upstream
// carries out later.
type heldDisables struct {
	t      *testing.T
	up     *fakeupstream.Server
	mu     sync.Mutex
	held   []*http.Request
	body   [][]byte
	onHold func() // runs when a disable is held (optional)
	// hold decides whether the n-th disable (from 1) is held; nil holds
	// every one.
	hold func(n int) bool
	seen int
}

func holdDisables(t *testing.T, up *fakeupstream.Server) *heldDisables {
	h := &heldDisables{t: t, up: up}
	up.SetAdminHooks(fakeupstream.AdminHooks{Before: h.before})
	return h
}

func isDisable(r *http.Request, body []byte) bool {
	if r.URL.Path == "/key/block" {
		return true
	}
	return r.Method == http.MethodPatch && bytes.Contains(body, []byte(`"disabled":true`))
}

func (h *heldDisables) before(_ http.ResponseWriter, r *http.Request) bool {
	if r.Header.Get(lateHeader) != "" {
		return false
	}
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	if !isDisable(r, body) {
		return false
	}
	h.mu.Lock()
	h.seen++
	if h.hold != nil && !h.hold(h.seen) {
		h.mu.Unlock()
		return false
	}
	h.held = append(h.held, r.Clone(context.Background()))
	h.body = append(h.body, body)
	onHold := h.onHold
	h.mu.Unlock()
	if onHold != nil {
		onHold()
	}
	// No answer: the client sees the connection drop.
	panic(http.ErrAbortHandler)
}

// count is how many disables are held.
func (h *heldDisables) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.held)
}

// deliver carries the held requests out now, in order.
func (h *heldDisables) deliver() {
	h.t.Helper()
	h.mu.Lock()
	held, bodies := h.held, h.body
	h.held, h.body = nil, nil
	h.mu.Unlock()
	for i, r := range held {
		req, err := http.NewRequest(r.Method, h.up.URL+r.URL.RequestURI(), bytes.NewReader(bodies[i]))
		if err != nil {
			h.t.Fatal(err)
		}
		req.Header = r.Header.Clone()
		req.Header.Set(lateHeader, "1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			h.t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			h.t.Fatalf("late %s %s: %s", r.Method, r.URL.Path, resp.Status)
		}
	}
}

// A disable whose outcome is unknown (its answer lost, or its process
// stopped while it was out), the key put back by hand, the next pass
// finding it live and recording it so, and only then the upstream carrying
// the disable out: the key must not stay disabled.
func TestRetireDisableDeliveredAfterTheKeyWasFoundLive(t *testing.T) {
	for _, kind := range kinds {
		for _, how := range []string{"answer lost", "process stopped"} {
			t.Run(kind+"/"+how, func(t *testing.T) {
				w := newWorld(t, kind, 1, 1)
				w.clock.Advance(time.Hour)
				held := holdDisables(t, w.up)
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				if how == "process stopped" {
					held.onHold = cancel
				}
				rep, err := w.retirer(retire.Config{Owner: "first"}).Run(ctx)
				switch how {
				case "answer lost":
					if err != nil || rep.Failed != 1 {
						t.Fatalf("first pass: %+v, %v", rep, err)
					}
				default:
					if !errors.Is(err, context.Canceled) {
						t.Fatalf("first pass: %+v, %v", rep, err)
					}
				}
				if held.count() == 0 || w.up.Disabled(w.old["k0"]) {
					t.Fatalf("%d disables held, key disabled %v", held.count(), w.up.Disabled(w.old["k0"]))
				}
				// Put back by hand.
				if _, err := w.db.Collection(w.pool.KeysCollection).InsertOne(context.Background(),
					bson.M{"_id": "k0-restored", rotation.FieldAPIKey: w.old["k0"], rotation.FieldStatus: rotation.StatusHealthy}); err != nil {
					t.Fatal(err)
				}
				w.clock.Advance(2 * time.Hour)
				r := w.retirer(retire.Config{Owner: "second"})
				runUntilSettled(t, r)
				if got := w.archive("k0")[retire.FieldOutcome]; got != retire.OutcomeLive {
					t.Fatalf("outcome %v, want live", got)
				}
				// The upstream carries the held disables out only now.
				held.deliver()
				if !w.up.Disabled(w.old["k0"]) {
					t.Fatal("the late disable did not reach the upstream")
				}
				w.clock.Advance(time.Minute)
				rep = runUntilSettled(t, r)
				w.checkInvariants(false)
				if rep.Reenabled != 1 {
					t.Fatalf("report %+v, want the key enabled again once", rep)
				}
				if a := w.archive("k0"); a[retire.FieldReenabledAt] == nil || a[retire.FieldRecheckUntil] == nil {
					t.Fatalf("archive records %v", a)
				}
				// Past the window a late request could still arrive in,
				// the last look ends the watch.
				w.clock.Advance(retire.DefaultLateWithin)
				runUntilSettled(t, r)
				if a := w.archive("k0"); a[retire.FieldRecheckUntil] != nil {
					t.Fatalf("still watched past the window: %v", a)
				}
				var lookups atomic.Int32
				w.up.SetAdminHooks(fakeupstream.AdminHooks{Before: func(_ http.ResponseWriter, r *http.Request) bool {
					if r.Method == http.MethodGet || strings.HasPrefix(r.URL.Path, "/key/info") {
						lookups.Add(1)
					}
					return false
				}})
				if _, err := r.Run(context.Background()); err != nil || lookups.Load() != 0 {
					t.Fatalf("a pass after the watch: %d look-ups, %v", lookups.Load(), err)
				}
				w.checkInvariants(false)
			})
		}
	}
}

// A key not retired OverdueAfter past its grace counts as overdue in the
// pass's report (what the overdue gauge and its alert read); one within
// that bound, or retired, does not.
func TestRetireReportsOverdue(t *testing.T) {
	for _, c := range []struct {
		name    string
		after   time.Duration // past the grace
		failing bool
		want    int
	}{
		{"failing within the bound", retire.OverdueAfter - time.Minute, true, 0},
		{"failing past the bound", retire.OverdueAfter + time.Minute, true, 1},
		{"retired past the bound", retire.OverdueAfter + time.Minute, false, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t, keyadmin.OpenRouter, 1, 1)
			if c.failing {
				w.up.SetAdminHooks(fakeupstream.AdminHooks{Before: func(rw http.ResponseWriter, _ *http.Request) bool {
					rw.WriteHeader(http.StatusBadGateway)
					return true
				}})
			}
			w.clock.Advance(retire.DefaultGrace + c.after)
			rep, err := w.retirer(retire.Config{}).Run(context.Background())
			if err != nil || rep.Overdue != c.want {
				t.Fatalf("report %+v, %v: want %d overdue", rep, err, c.want)
			}
		})
	}
}
