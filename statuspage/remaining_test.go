package statuspage

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/internal/mongotest"
)

// Issue 16: a balance pool shows what remains (text, JSON and page) and is
// headed by its minimum remaining; a one-api unlimited token says it has no
// reading rather than $0; a balance rotation shows what remained.
func TestRemainingAndNoReading(t *testing.T) {
	db := mongotest.New(t).Database
	ctx := context.Background()
	bal, spent := db.Collection("balance_keys"), db.Collection("oneapi_keys")
	if _, err := bal.InsertMany(ctx, []any{
		bson.M{"_id": "r1", "apiKey": "sk-secret-rrrrrrrrrrrr-0001", "status": "healthy", "spendRemaining": 3.5, "spendCurrency": "CNY",
			"spendRate": 1.0 / 3600, "lastSpendCheck": now.Add(-time.Minute)},
		bson.M{"_id": "r2", "apiKey": "sk-secret-rrrrrrrrrrrr-0002", "status": "healthy", "spendRemaining": 0.5},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := spent.InsertOne(ctx, bson.M{"_id": "u", "apiKey": "sk-secret-uuuuuuuuuuuu-0003", "status": "healthy",
		"spendCheckError": "no_reading", "lastSpendCheck": now.Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	hist := db.Collection("balance_history")
	if _, err := hist.InsertOne(ctx, bson.M{"_id": "h", "keyId": "old", "apiKeyMasked": "sk-se...0009", "spend": 0.0, "remaining": 0.75,
		"currency": "USD", "rotatedAt": now.Add(-time.Hour), "rotationReason": "low_remaining_0.75", "newKeyId": "r1"}); err != nil {
		t.Fatal(err)
	}
	minRem := 1.0
	src := Source{Pools: []Pool{
		{Name: "balance", Keys: bal, History: hist, Threshold: 9.95, MinRemaining: &minRem, Backups: countBackups{n: 2}},
		{Name: "oneapi", Keys: spent, Threshold: 9.95, Backups: countBackups{n: 2}},
	}, Rotations: 5, Now: func() time.Time { return now }}
	snap := src.Read(ctx)

	var b strings.Builder
	WriteText(&b, snap)
	out := b.String()
	for _, want := range []string{
		"pool balance (balance_keys): min remaining 1.00, backups left 2",
		"pool oneapi (oneapi_keys): threshold $9.95, backups left 2",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	lines := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			lines[f[0]] = strings.Join(f[1:], " ")
		}
	}
	for id, want := range map[string]string{
		"r1": "sk-se...0001 healthy left 3.50 CNY - - 1m0s ago due $1.00/h in 2h29m",
		"r2": "sk-se...0002 healthy left 0.50 (currency unknown) - - never due - over",
		"u":  "sk-se...0003 healthy no reading (unlimited) - - 1m0s ago due - -",
	} {
		if lines[id] != want {
			t.Errorf("key %s: %q, want %q", id, lines[id], want)
		}
	}

	js, err := json.Marshal(snap)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"minRemaining":1`, `"remaining":3.5,"currency":"CNY"`, `"noReading":true`, `"remaining":0.75`} {
		if !bytes.Contains(js, []byte(want)) {
			t.Errorf("JSON lacks %s:\n%s", want, js)
		}
	}

	var page bytes.Buffer
	if err := Render(&page, snap, "host-1", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	html := page.String()
	for _, want := range []string{"min remaining 1.00", "left 3.50 CNY", "no reading (unlimited)", "left 0.75 USD", "threshold $9.95"} {
		if !strings.Contains(html, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(html, "upstream: no_reading") {
		t.Error("page shows no_reading as an upstream error")
	}
}
