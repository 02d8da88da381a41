package refill_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/spendchecker/spendchecker/internal/fakeupstream"
	"github.com/spendchecker/spendchecker/keyadmin"
	"github.com/spendchecker/spendchecker/refill"
)

// verify names a slot left unsettled an hour after its request (its
// create's answer lost and the list failing since), and nothing before.
func TestRefillVerify(t *testing.T) {
	w := newWorld(t, keyadmin.OpenRouter, 1, 0)
	w.up.SetAdminHooks(fakeupstream.AdminHooks{
		AfterCreate: badGateway,
		Before: func(rw http.ResponseWriter, r *http.Request) bool {
			if r.Method != http.MethodGet {
				return false
			}
			rw.WriteHeader(http.StatusBadGateway)
			fmt.Fprint(rw, `{"error":{"message":"list down"}}`)
			return true
		},
	})
	r := w.refiller(refill.Config{Below: 1, To: 1})
	ctx := context.Background()
	_, _ = r.Run(ctx)
	if probs, err := r.Verify(ctx); err != nil || len(probs) != 0 {
		t.Fatalf("at once: %q, %v", probs, err)
	}
	w.clock.Advance(refill.UnsettledAfter)
	_, _ = r.Run(ctx)
	probs, err := r.Verify(ctx)
	if err != nil || len(probs) != 1 || !strings.HasPrefix(probs[0], "refill_slot_unsettled: slot openhands/2026-03-01/0 ") || !strings.Contains(probs[0], "list down") {
		t.Fatalf("an hour later: %q, %v", probs, err)
	}
	w.up.SetAdminHooks(fakeupstream.AdminHooks{})
	settle(t, w, r)
	if probs, _ := r.Verify(ctx); len(probs) != 0 {
		t.Fatalf("settled: %q", probs)
	}
	w.checkInvariants(true)
}
