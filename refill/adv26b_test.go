package refill_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/spendchecker/spendchecker/internal/fakeupstream"
	"github.com/spendchecker/spendchecker/refill"
)

// A deposed leader paused between journaling its slot and sending the
// create: the new leader looks the name up twice, finds nothing and
// decides the slot absent. The old leader then resumes and sends the
// create, which the upstream carries out, but its answer is lost. The key
// exists upstream under the slot's name: it must end up disabled and
// recorded, not enabled and forgotten.
func TestAdv26b_CreateSentAfterTheSlotWasDecidedAbsent(t *testing.T) {
	for _, kind := range kinds {
		for _, where := range []string{"paused before sending", "create held in the network"} {
			t.Run(kind+"/"+where, func(t *testing.T) {
				w := newWorld(t, kind, 1, 0)
				paused, resume := make(chan struct{}), make(chan struct{})
				once := false
				pause := func() {
					if !once {
						once = true
						close(paused)
						<-resume
					}
				}
				cfg := refill.Config{Below: 1, To: 1, Owner: "old-leader"}
				if where == "paused before sending" {
					cfg.AfterStep = func(_ context.Context, _ string, s refill.Step) error {
						if s == refill.StepJournal {
							pause()
						}
						return nil
					}
				} else {
					w.up.SetAdminHooks(fakeupstream.AdminHooks{Before: func(_ http.ResponseWriter, r *http.Request) bool {
						if r.Method == http.MethodPost && !strings.Contains(r.URL.Path, "block") {
							pause()
						}
						return false
					}, AfterCreate: func(http.ResponseWriter, *http.Request, fakeupstream.ManagedKey) bool {
						panic(http.ErrAbortHandler)
					}})
				}
				old := w.refiller(cfg)
				done := make(chan error, 1)
				go func() { _, err := old.Run(context.Background()); done <- err }()
				<-paused
				w.up.SetAdminHooks(fakeupstream.AdminHooks{})
				newer := w.refiller(refill.Config{Below: 1, To: 1, Owner: "new-leader", MaxKeysPerDay: 1})
				absent := 0
				for range 3 {
					w.clock.Advance(refill.DefaultSettleAfter)
					rep, err := newer.Run(context.Background())
					if err != nil {
						t.Fatal(err)
					}
					absent += rep.Absent
				}
				if absent != 1 {
					t.Fatalf("the new leader settled %d slots absent, want 1", absent)
				}
				// The create the old leader sends now is carried out, its
				// answer lost.
				w.up.SetAdminHooks(fakeupstream.AdminHooks{AfterCreate: func(http.ResponseWriter, *http.Request, fakeupstream.ManagedKey) bool {
					panic(http.ErrAbortHandler)
				}})
				close(resume)
				if err := <-done; err != nil {
					t.Fatal(err)
				}
				w.up.SetAdminHooks(fakeupstream.AdminHooks{})
				settle(t, w, newer)
				w.checkInvariants(true)
			})
		}
	}
}
