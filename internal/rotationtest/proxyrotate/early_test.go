package proxyrotate_test

import (
	"context"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation"
	"github.com/spendchecker/spendchecker/rotation/proxyrotate"
)

// A proxy that declares the old rotator gone is answered once the new key
// is live; Close lets the rotation finish before it disconnects.
func TestNoLegacyRotatorAnswersEarlyAndCloseFinishes(t *testing.T) {
	ctx := context.Background()
	m := mongotest.New(t)
	adv18Seed(t, m.Database, []string{"k1", "k2"}, []string{"b1", "b2"})
	r, err := proxyrotate.Open(ctx, m.URI, m.Name, "openhands", "proxy-a", nil, proxyrotate.WithNoLegacyRotator())
	if err != nil {
		t.Fatal(err)
	}
	act, err := r.Rotate(ctx, "k1", proxyrotate.Decision{Reason: "unauthorized"})
	if err != nil || act.Outcome != "rotated" || act.SwapTo != "b1" {
		t.Fatalf("rotate: %+v, %v; want rotated to b1", act, err)
	}
	if n, err := m.Database.Collection("openhands_keys").CountDocuments(ctx, bson.M{"_id": "b1"}); err != nil || n != 1 {
		t.Fatalf("answered key b1 not live: %d %v", n, err)
	}
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
	n, err := m.Database.Collection(rotation.JournalCollection).CountDocuments(ctx, bson.M{"oldKeyId": "k1", "state": "done", "forwardOnly": true})
	if err != nil || n != 1 {
		t.Errorf("rotation of k1 not done (forward-only) after Close: %d %v", n, err)
	}
	if n, _ := m.Database.Collection("openhands_keys").CountDocuments(ctx, bson.M{"_id": "k1"}); n != 0 {
		t.Errorf("k1 still live after Close")
	}
}
