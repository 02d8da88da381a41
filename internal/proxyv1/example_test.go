package proxyv1_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	bsonv1 "go.mongodb.org/mongo-driver/bson"
	mongov1 "go.mongodb.org/mongo-driver/mongo"
	optionsv1 "go.mongodb.org/mongo-driver/mongo/options"

	"github.com/spendchecker/spendchecker/internal/embedded"
	"github.com/spendchecker/spendchecker/rotation/proxyrotate"
)

// A proxy on mongo-driver v1 adopts the rotator: one v2 client and one
// rotator built at start-up, called where the proxy used to rotate. The
// embedded store stands in for the proxy's MongoDB.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "proxyrotate")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	store, err := embedded.Start(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		panic(err)
	}
	defer store.Close()
	uri, dbName := store.URI(), "fproxy" // the proxy's MONGODB_URI and MONGODB_DB_NAME

	// The proxy's own client (its db package), with two keys and one backup.
	proxyClient, err := mongov1.Connect(ctx, optionsv1.Client().ApplyURI(uri))
	if err != nil {
		panic(err)
	}
	defer proxyClient.Disconnect(ctx)
	proxyDB := proxyClient.Database(dbName)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, id := range []string{"k1", "k2"} {
		if _, err := proxyDB.Collection("openhands_keys").InsertOne(ctx, bsonv1.M{
			"_id": id, "apiKey": "sk-" + id + "-0123456789abcdef", "status": "healthy", "createdAt": now}); err != nil {
			panic(err)
		}
	}
	if _, err := proxyDB.Collection("openhands_backup_keys").InsertOne(ctx, bsonv1.M{
		"_id": "b1", "apiKey": "sk-b1-0123456789abcdef", "isUsed": false, "activated": false, "createdAt": now}); err != nil {
		panic(err)
	}

	// At start-up, next to the v1 client: the shared rotator.
	rot, err := proxyrotate.Open(ctx, uri, dbName, "openhands", "proxy-1", nil)
	if err != nil {
		panic(err)
	}
	defer rot.Close(ctx)

	pool := loadKeys(ctx, proxyDB) // the proxy's in-memory pool
	fmt.Println("pool:", pool)

	// Where the proxy called CheckAndRotateOnError(keyID, status, body).
	onUpstreamError := func(keyID string, status int, body string) {
		d, ok := proxyrotate.ShouldRotate(status, body)
		if !ok {
			fmt.Printf("%s %d: cooldown, no rotation\n", keyID, status)
			return
		}
		act, err := rot.Rotate(ctx, keyID, d)
		if act.Drop {
			pool = slices.DeleteFunc(pool, func(k string) bool { return k == keyID })
		}
		switch {
		case err != nil:
			fmt.Printf("%s %d: stopped part-way, the daemon's recovery finishes it\n", keyID, status)
		case act.SwapTo != "":
			if !slices.Contains(pool, act.SwapTo) {
				pool = append(pool, act.SwapTo)
			}
			fmt.Printf("%s %d: %s to %s, pool %v\n", keyID, status, act.Outcome, act.SwapTo, pool)
		case act.NoBackup:
			// As the proxy does today: keep the key out of service for the operator.
			_, _ = proxyDB.Collection("openhands_keys").UpdateByID(ctx, keyID,
				bsonv1.M{"$set": bsonv1.M{"status": "exhausted"}})
			fmt.Printf("%s %d: %s, pool %v\n", keyID, status, act.Outcome, pool)
		default:
			fmt.Printf("%s %d: %s, pool %v\n", keyID, status, act.Outcome, pool)
		}
	}

	onUpstreamError("k1", 429, `{"error":{"message":"Rate limit exceeded","code":"429"}}`)
	// LiteLLM's answer for a revoked key.
	onUpstreamError("k1", 401, `{"error":{"message":"Authentication Error, Invalid proxy server token passed.","type":"auth_error","code":"401"}}`)
	// A second request that was in flight with k1 gets the same answer later.
	onUpstreamError("k1", 401, `{"error":{"message":"Authentication Error, Invalid proxy server token passed.","type":"auth_error","code":"401"}}`)
	// LiteLLM's budget answer; the only backup is gone.
	onUpstreamError("k2", 400, `{"error":{"message":"Budget has been exceeded! Current cost: 10.01, Max budget: 10.0","type":"budget_exceeded","code":"400"}}`)
	fmt.Println("reloaded:", loadKeys(ctx, proxyDB))

	// Output:
	// pool: [k1 k2]
	// k1 429: cooldown, no rotation
	// k1 401: rotated to b1, pool [k2 b1]
	// k1 401: already_rotated to b1, pool [k2 b1]
	// k2 400: no_backup, pool [b1]
	// reloaded: [b1]
}

// loadKeys is the proxy's LoadKeys: the ids of the keys it may serve.
func loadKeys(ctx context.Context, db *mongov1.Database) []string {
	cur, err := db.Collection("openhands_keys").Find(ctx, bsonv1.M{"status": "healthy"},
		optionsv1.Find().SetSort(bsonv1.M{"_id": 1}))
	if err != nil {
		panic(err)
	}
	var docs []struct {
		ID string `bson:"_id"`
	}
	if err := cur.All(ctx, &docs); err != nil {
		panic(err)
	}
	ids := []string{}
	for _, d := range docs {
		ids = append(ids, d.ID)
	}
	return ids
}
