package retire_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spendchecker/spendchecker/internal/fakeupstream"
	"github.com/spendchecker/spendchecker/keyadmin"
	"github.com/spendchecker/spendchecker/retire"
)

// verify names a retirement overdue (from the store) and a retired key the
// upstream shows enabled again (asked with a look-up); nothing when all is
// well.
func TestRetireVerify(t *testing.T) {
	w := newWorld(t, keyadmin.OpenRouter, 2, 2)
	r := w.retirer(retire.Config{})
	ctx := context.Background()
	w.clock.Advance(time.Hour)
	runUntilSettled(t, r)
	if probs, err := r.Verify(ctx, w.admin.Lookup); err != nil || len(probs) != 0 {
		t.Fatalf("all retired: %v, %v", probs, err)
	}
	// k1's key enabled again by hand upstream.
	for _, k := range w.up.ManagedKeys() {
		if k.Secret == w.old["k1"] {
			if err := w.admin.Enable(ctx, k.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	// k2 rotates while the upstream fails every request.
	w.up.SetAdminHooks(fakeupstream.AdminHooks{Before: func(rw http.ResponseWriter, req *http.Request) bool {
		if req.Method == http.MethodGet {
			return false // look-ups answer
		}
		rw.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(rw, `{"error":{"message":"down"}}`)
		return true
	}})
	fresh := newKey(t, w, "k2")
	w.rotateKey(fresh)
	w.clock.Advance(retire.DefaultGrace + retire.OverdueAfter - time.Second)
	_, _ = r.Run(ctx)
	probs, err := r.Verify(ctx, w.admin.Lookup)
	if err != nil || len(probs) != 1 || !strings.HasPrefix(probs[0], "retired_key_enabled: key k1 ") {
		t.Fatalf("before the bound: %q, %v", probs, err)
	}
	w.clock.Advance(2 * time.Second)
	probs, err = r.Verify(ctx, w.admin.Lookup)
	if err != nil || len(probs) != 2 || !strings.HasPrefix(probs[0], "retire_overdue: key k2 ") || !strings.Contains(probs[0], "(1 attempts)") {
		t.Fatalf("past the bound: %q, %v", probs, err)
	}
}
