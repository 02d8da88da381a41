package rotation_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/internal/embedded"
	"github.com/spendchecker/spendchecker/rotation"
)

// A proxy adopts the rotator (docs/proxy.md, "Running next to the proxy"): one
// Rotator per pool, built at start-up; on an upstream answer that says the
// key is spent (LiteLLM's budget_exceeded) or dead (401), Rotate, and branch
// on the outcome. Recover completes what a crashed caller left unfinished;
// the daemon runs it every cycle, a proxy without the daemon runs it at
// start-up. The embedded store stands in for the proxy's MongoDB.
func Example() {
	ctx := context.Background()
	db, done := exampleStore(ctx)
	defer done()

	pool, _ := rotation.Preset("openhands")
	seedProxyPool(ctx, db, pool, []string{"k1", "k2", "k3"}, []string{"b1", "b2"})

	// At start-up.
	rot, err := rotation.New(db, pool, rotation.Config{Owner: "proxy-1"})
	if err != nil {
		panic(err)
	}
	if err := rot.EnsureIndexes(ctx); err != nil { // its guarantees rest on them
		panic(err)
	}

	// Where the proxy handles an upstream error for the key it used.
	serving := map[string]bool{"k1": true, "k2": true, "k3": true}
	onUpstreamError := func(keyID string, status int, body string) {
		reason := ""
		switch {
		case strings.Contains(body, "budget_exceeded"):
			reason = "budget_exceeded"
		case status == 401:
			reason = "unauthorized"
		default:
			fmt.Printf("%s %d: not about the key; retry later\n", keyID, status)
			return
		}
		res, err := rot.Rotate(ctx, keyID, reason)
		if err != nil {
			// Stopped part-way (the store went away): nothing is lost,
			// Recover finishes the rotation. Stop serving the key now.
			delete(serving, keyID)
			fmt.Printf("%s: stopped part-way: %v\n", keyID, err)
			return
		}
		switch res.Outcome {
		case rotation.Rotated, rotation.AlreadyRotated, rotation.InProgress:
			// Exactly one caller rotated; every caller learns the new key
			// (a rotation under way names it once it is in the pool).
			delete(serving, keyID)
			if res.NewKeyID != "" {
				serving[res.NewKeyID] = true
			}
		case rotation.NoBackup:
			// Nothing written: keep the key out of service, tell an operator.
			delete(serving, keyID)
		case rotation.NotFound:
			delete(serving, keyID)
		}
		fmt.Printf("%s %d: %s", keyID, status, res.Outcome)
		if res.NewKeyID != "" {
			fmt.Printf(", serve %s", res.NewKeyID)
		}
		fmt.Println()
	}

	budget := `{"error":{"message":"Budget has been exceeded! Current cost: 10.01, Max budget: 10.0","type":"budget_exceeded","code":"400"}}`
	onUpstreamError("k1", 429, `{"error":{"message":"Rate limit exceeded","code":"429"}}`)
	onUpstreamError("k1", 400, budget)
	onUpstreamError("k1", 400, budget) // a request that was in flight with k1
	onUpstreamError("k2", 401, `{"error":{"message":"Authentication Error","type":"auth_error","code":"401"}}`)
	onUpstreamError("k3", 400, budget) // both backups used

	// A caller that dies part-way (here: after inserting the new key)
	// leaves its rotation in the journal; Recover completes it.
	seedProxyPool(ctx, db, pool, nil, []string{"b3"})
	crashing, _ := rotation.New(db, pool, rotation.Config{Owner: "proxy-2",
		AfterStep: func(_ context.Context, _ string, s rotation.Step) error {
			if s == rotation.StepInsertKey {
				return errors.New("killed")
			}
			return nil
		}})
	_, err = crashing.Rotate(ctx, "b1", "budget_exceeded")
	fmt.Println("crashed:", err != nil)
	rep, err := rot.Recover(ctx)
	fmt.Printf("recover: completed %d, failed %d, err %v\n", rep.Completed, rep.Failed, err)
	res, _ := rot.Rotate(ctx, "b1", "budget_exceeded")
	fmt.Printf("b1: %s, serve %s\n", res.Outcome, res.NewKeyID)

	// Output:
	// k1 429: not about the key; retry later
	// k1 400: rotated, serve b1
	// k1 400: already_rotated, serve b1
	// k2 401: rotated, serve b2
	// k3 400: no_backup
	// crashed: true
	// recover: completed 1, failed 0, err <nil>
	// b1: already_rotated, serve b3
}

// seedProxyPool inserts keys and unused backups as the proxy stores them.
func seedProxyPool(ctx context.Context, db *mongo.Database, p rotation.Pool, keys, backups []string) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, id := range keys {
		if _, err := db.Collection(p.KeysCollection).InsertOne(ctx, bson.M{
			"_id": id, "apiKey": "sk-" + id + "-0123456789abcdef", "status": "healthy", "createdAt": at}); err != nil {
			panic(err)
		}
	}
	for _, id := range backups {
		if _, err := db.Collection(p.BackupsCollection).InsertOne(ctx, bson.M{
			"_id": id, "apiKey": "sk-" + id + "-0123456789abcdef", "isUsed": false, "activated": false, "createdAt": at}); err != nil {
			panic(err)
		}
	}
}

// exampleStore starts the embedded store in a temporary directory.
func exampleStore(ctx context.Context) (*mongo.Database, func()) {
	dir, err := os.MkdirTemp("", "rotation-example")
	if err != nil {
		panic(err)
	}
	store, err := embedded.Start(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		panic(err)
	}
	client, err := mongo.Connect(options.Client().ApplyURI(store.URI()))
	if err != nil {
		panic(err)
	}
	return client.Database("fproxy"), func() {
		_ = client.Disconnect(ctx)
		store.Close()
		_ = os.RemoveAll(dir)
	}
}
