package checker_test

// Adversarial tests for issue 16's providers in the checker (adv16a). Each
// states what it shows and what it costs; each fails on the code as
// reviewed.

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/checker"
	"github.com/spendchecker/spendchecker/rotation"
	"github.com/spendchecker/spendchecker/spend"
)

// insertKeys writes key documents in this order (the stream's natural
// order), each with an optional spendAccount.
func insertKeys(t *testing.T, w *world, pool rotation.Pool, ids []string, account map[string]string) {
	t.Helper()
	for _, id := range ids {
		d := bson.M{"_id": id, "apiKey": secret(id), "status": "healthy", "createdAt": time.Now().UTC()}
		if a := account[id]; a != "" {
			d["spendAccount"] = a
		}
		if _, err := w.db.Collection(pool.KeysCollection).InsertOne(context.Background(), d); err != nil {
			t.Fatal(err)
		}
	}
}

func present(t *testing.T, w *world, pool rotation.Pool, id string) bool {
	t.Helper()
	return countDocs(t, w.db.Collection(pool.KeysCollection), bson.M{"_id": id}) == 1
}

// A balance provider shares ONE answer among the keys of an account for the
// cycle — the error answers too. A 401 is a statement about the key that
// was sent (DeepSeek: "Authentication Fails, Your api key: ****abcd is
// invalid"), not about the account: when the operator deletes one key of
// an account at DeepSeek and it is the first of its account asked in the
// cycle, every key of the account is told "rejected", and on the second
// check they are all rotated as unauthorized (4 of 10 keys: under the
// rejection guard's share). Asked the other way round, the dead key gets
// its live neighbours' balance and is never seen as dead.
// Cost: one revoked key burns a backup for every live key of its account
// (here 3 healthy keys rotated, 3 backups), or the dead key stays in the
// pool.
func TestAdv16a_SharedAccountAnswerCarriesOneKeysRejection(t *testing.T) {
	w := newWorld(t, "deepseek", nil, 10)
	for i := range 10 {
		w.up.SetSpend(secret(fmt.Sprintf("%s-backup-%02d", openhands.Name, i)), 50)
	}
	ids := []string{"acme-0-revoked", "acme-1", "acme-2", "acme-3", "solo-0", "solo-1", "solo-2", "solo-3", "solo-4", "solo-5"}
	acct := map[string]string{"acme-0-revoked": "acme", "acme-1": "acme", "acme-2": "acme", "acme-3": "acme"}
	insertKeys(t, w, openhands, ids, acct)
	for _, id := range ids {
		w.up.SetSpend(secret(id), 50) // the account is well funded
	}
	w.up.SetStatus(secret("acme-0-revoked"), http.StatusUnauthorized)
	chk := w.checker(t, func(c *checker.Config, p *checker.Pool) {
		p.MinRemaining = 1
		c.Adaptive = false
		c.Concurrency = 1
	})
	cycle(t, chk)
	w.clock.Advance(time.Minute)
	cycle(t, chk)
	var burnt []string
	for _, id := range []string{"acme-1", "acme-2", "acme-3"} {
		if !present(t, w, openhands, id) {
			burnt = append(burnt, id)
		}
	}
	deadSeen := !present(t, w, openhands, "acme-0-revoked") || balDoc(t, w, "acme-0-revoked")["spendRejectedAt"] != nil
	if len(burnt) > 0 || !deadSeen {
		t.Fatalf("live keys of the account rotated as unauthorized: %v; the revoked key seen as rejected: %v", burnt, deadSeen)
	}
}

// --account labels every key of the pool with one account, and the README
// tells the operator to keep a balance pool's backups in *other* accounts.
// A key rotated in from such a backup carries no spendAccount (the rotator
// never copies one), so it inherits the pool's label and shares the old
// account's answer for the cycle: with a drained key of the old account due
// in the same cycle, either the new key (funded) is read as drained and
// rotated out again, or the drained key is read as funded and kept.
// Cost: a backup burnt per rotation, in a chain, or a drained key left
// serving (its requests fail at the upstream).
func TestAdv16a_PoolAccountMislabelsRotatedInKey(t *testing.T) {
	w := newWorld(t, "deepseek", map[string]float64{"a0": 0.5, "a1": 0.5}, 3)
	for i := range 3 {
		w.up.SetSpend(secret(fmt.Sprintf("%s-backup-%02d", openhands.Name, i)), 40) // another account, funded
	}
	ctx := context.Background()
	// a1 was checked lately and is not due in the first cycle.
	if _, err := w.db.Collection(openhands.KeysCollection).UpdateOne(ctx, bson.M{"_id": "a1"},
		bson.M{"$set": bson.M{"lastSpendCheck": w.clock.Now(), "spendRemaining": 0.6, "spendCurrency": "USD", "nextSpendCheck": w.clock.Now().Add(20 * time.Minute)}}); err != nil {
		t.Fatal(err)
	}
	chk := w.checker(t, func(c *checker.Config, p *checker.Pool) {
		p.MinRemaining = 1
		p.Account = "acme"
	})
	cycle(t, chk) // a0 is drained: rotated to a backup from the funded account
	w.clock.Advance(25 * time.Minute)
	cycle(t, chk) // a1 (drained) and the new key (funded) are both due
	used := countDocs(t, w.db.Collection(openhands.BackupsCollection), bson.M{"isUsed": true})
	if present(t, w, openhands, "a1") || used != 2 {
		t.Fatalf("after two cycles: drained a1 still in the pool: %v; backups used %d, want 2 (a0's and a1's)",
			present(t, w, openhands, "a1"), used)
	}
}

// A one-api token found exhausted while no backup is left stays in service,
// and its observation is written back from the exhausted Result, whose
// Spend is 0: the key's totalSpend (the proxy's admin pages, status) drops
// from its last reading to $0.00, as if a fresh key. The unauthorized path
// keeps the last spend (res.Spend = k.spend); the exhausted one does not.
// Cost: status and the admin pages show a used-up key as unused; its plan
// is made with a full threshold of headroom.
func TestAdv16a_ExhaustedWithoutBackupWritesSpendZero(t *testing.T) {
	w := newWorld(t, "oneapi", map[string]float64{"k": 8}, 0)
	chk := w.checker(t, func(c *checker.Config, p *checker.Pool) { c.Adaptive = false })
	cycle(t, chk)
	if got := balDoc(t, w, "k")["totalSpend"]; got != 8.0 {
		t.Fatalf("first reading %v", got)
	}
	w.up.SetBudget(secret("k"), 8) // one-api now refuses it: 该令牌额度已用尽
	w.clock.Advance(time.Minute)
	ps := cycle(t, chk)
	if ps.NoBackup != 1 {
		t.Fatalf("cycle %+v: want the exhausted key kept for want of a backup", ps)
	}
	if got := balDoc(t, w, "k")["totalSpend"]; got != 8.0 {
		t.Fatalf("an exhausted key's totalSpend written as %v (last reading 8)", got)
	}
}

// The configured provider's exhausted-statuses rotate at once, before the
// body is looked at when exhausted-match is empty (README: "empty: any
// body"), and exhausted rotations bypass the guard that stops a cycle from
// rotating a pool whose every key is refused at once. A CDN/WAF in front of
// the upstream answering every key 403 with its HTML block page — which the
// built-in rules say is "not a statement about the key" — rotates the whole
// pool in one cycle.
// Cost: every key rotated, every backup burnt, in one cycle.
func TestAdv16a_CustomExhaustedStatusBypassesRejectionGuard(t *testing.T) {
	w := newWorld(t, "litellm", tenKeys("k", 1), 10)
	cdn := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "text/html")
		rw.WriteHeader(http.StatusForbidden)
		fmt.Fprint(rw, `<!DOCTYPE html><html><head><title>Attention Required! | Cloudflare</title></head><body>Sorry, you have been blocked</body></html>`)
	}))
	t.Cleanup(cdn.Close)
	prov, err := spend.NewCustom(spend.CustomSpec{URL: cdn.URL + "/v1/me", Spend: "data.used", ExhaustedStatuses: []int{403}},
		&spend.Client{MaxAttempts: 1, Now: w.clock.Now, Wait: func(context.Context, time.Duration) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	chk := w.checker(t, func(c *checker.Config, p *checker.Pool) { p.Provider = prov })
	ps := cycle(t, chk)
	if ps.Rotated != 0 {
		t.Fatalf("a block page on every key rotated %d of 10 keys in one cycle", ps.Rotated)
	}
}

// Account labels are shared across the pools of one process: the memo's id
// is provider + base URL + label, not the pool. Two pools on the same
// balance provider whose keys are labelled alike (the same --account given
// on the command line or in the environment wins over every pool's entry,
// or two teams both call their account "main") get ONE balance per cycle:
// the funded pool's keys are rotated on the drained pool's balance, or the
// drained pool's keys kept on the funded one's.
// Cost: a pool's keys rotated for another pool's balance (all backups of
// the pool), or a drained pool left serving.
func TestAdv16a_AccountLabelSharedAcrossPools(t *testing.T) {
	factory, err := rotation.Preset("factory")
	if err != nil {
		t.Fatal(err)
	}
	w := newWorld(t, "deepseek", map[string]float64{"oh-0": 50, "oh-1": 50}, 2)
	seedPool(t, w.db, w.up, factory, map[string]float64{"fa-0": 0.5, "fa-1": 0.5}, 2)
	for _, p := range []rotation.Pool{openhands, factory} {
		for i := range 2 {
			w.up.SetSpend(secret(fmt.Sprintf("%s-backup-%02d", p.Name, i)), 50)
		}
	}
	prov, err := spend.New("deepseek", w.up.URL, &spend.Client{MaxAttempts: 2, Now: w.clock.Now, Wait: func(context.Context, time.Duration) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	cfg := checker.Config{Instance: "test", Clock: w.clock, Adaptive: true, Concurrency: 4, Logger: slog.New(slog.NewJSONHandler(w.logs, nil))}
	for _, pl := range []rotation.Pool{openhands, factory} {
		cfg.Pools = append(cfg.Pools, checker.Pool{Pool: pl, Provider: prov, Threshold: 9.95, RotateUnauthorized: true, MinRemaining: 1, Account: "main"})
	}
	two, err := checker.New(w.db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := two.EnsureIndexes(context.Background()); err != nil {
		t.Fatal(err)
	}
	sum, err := two.Cycle(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	oh, fa := sum.Pools[0], sum.Pools[1]
	if oh.Rotated != 0 || fa.Rotated != 2 {
		t.Fatalf("openhands (funded, 50) rotated %d, factory (drained, 0.5) rotated %d; want 0 and 2", oh.Rotated, fa.Rotated)
	}
}
