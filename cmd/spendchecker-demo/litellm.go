package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/cmd/spendchecker/cli"
	"github.com/spendchecker/spendchecker/rotation"
	keysecret "github.com/spendchecker/spendchecker/rotation/secret"
)

// demoMasterKey is the simulated LiteLLM proxy's master key.
const demoMasterKey = "sk-demo-litellm-master-0123456789"

// runLiteLLM is the demo of a pool that refills and retires itself
// (docs/refill.md), against a simulated LiteLLM proxy with its master key:
// the pool starts with 2 backups and asks for at least 3, so the daemon
// creates keys upstream as backups; each key it rotates out is disabled
// upstream 2 s later, and the upstream refuses it from then on.
func runLiteLLM(ctx context.Context, out, errOut io.Writer) int {
	w, err := newWorld("litellm")
	if err != nil {
		fmt.Fprintln(errOut, "demo:", err)
		return 1
	}
	defer w.close()
	up := w.up
	up.EnableAdmin(demoMasterKey)
	keys := append([]demoKey(nil), openhandsKeys[:6]...)
	keys[4].dead = false // every key here is alive until retired
	uri := w.store.URI() + demoDatabase
	if err := seed(ctx, uri, up, keys, 2); err != nil {
		fmt.Fprintln(errOut, "demo: seed:", err)
		return 1
	}
	// The seeded keys are the proxy's own: registered with it, each with
	// its spend so far.
	for _, k := range keys {
		up.AddManagedKey(k.id, secret(k.id), 10)
		up.SetSpend(secret(k.id), k.spend)
	}
	for i := range 2 {
		id := fmt.Sprintf("oh-backup-%02d", i+1)
		up.AddManagedKey(id, secret(id), 10)
	}
	keyFile := filepath.Join(w.dir, "litellm-master-key")
	config := filepath.Join(w.dir, "config.json")
	if err := os.WriteFile(keyFile, []byte(demoMasterKey), 0o600); err != nil {
		fmt.Fprintln(errOut, "demo:", err)
		return 1
	}
	if err := os.WriteFile(config, fmt.Appendf(nil, `{"pools": [{"pool": "openhands", "provider": "litellm", "provider-url": %q,
 "refill-below": 3, "refill-to": 4, "retire": true, "retire-grace": "2s", "management-key-file": %q}]}`, up.URL, keyFile), 0o600); err != nil {
		fmt.Fprintln(errOut, "demo:", err)
		return 1
	}
	fmt.Fprintf(out, "== spendchecker demo (refill and retire): 6 keys, 2 backups, simulated LiteLLM proxy at %s\n", up.URL)
	fmt.Fprintf(out, "== the pool refills below 3 unused backups, up to 4, and disables each rotated-out key upstream 2 s after its rotation\n")
	fmt.Fprintf(out, "== running the daemon for %s (keys 01-04 cross the threshold)\n\n", runFor)
	stopSpending := keepSpending(ctx, up, keys)
	common := []string{"--mongo-uri", uri, "--config", config}
	daemonCtx, cancel := context.WithTimeout(ctx, runFor)
	code := cli.Run(daemonCtx, append([]string{"--interval", "1s", "--min-check-interval", "1s", "--max-check-interval", "5s",
		"--lease-duration", "3s", "--shutdown-grace", "5s", "--log-format", "auto", "--listen", "", "--instance", "demo-1"}, common...), cli.Env{Stdout: out, Stderr: out})
	cancel()
	stopSpending()
	if code != cli.ExitOK {
		fmt.Fprintf(errOut, "demo: daemon exited with %d\n", code)
		return 1
	}
	quiet := append([]string{"--log-level", "error"}, common...)
	for _, cmd := range []string{"status", "history"} {
		fmt.Fprintln(out, "\n== spendchecker "+cmd)
		cli.Run(ctx, append([]string{cmd}, quiet...), cli.Env{Stdout: out, Stderr: errOut})
	}
	retired, created, err := upstreamView(ctx, uri, up.URL, out)
	if err != nil {
		fmt.Fprintln(errOut, "demo:", err)
		return 1
	}
	fmt.Fprintln(out, "\n== spendchecker verify")
	vcode := cli.Run(ctx, append([]string{"verify"}, quiet...), cli.Env{Stdout: out, Stderr: errOut})
	fmt.Fprintf(out, "\n== %d keys created upstream as backups, %d rotated-out keys refused by the upstream; verify %s\n",
		created, retired, map[bool]string{true: "clean", false: "FAILED"}[vcode == 0])
	if created == 0 || retired == 0 || vcode != 0 {
		return 1
	}
	return 0
}

// upstreamView prints what the upstream says of each rotated-out key (as
// a client holding it would ask) and lists the backups refill created.
func upstreamView(ctx context.Context, uri, upURL string, out io.Writer) (refused, created int, err error) {
	client, err := mongo.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		return 0, 0, err
	}
	defer client.Disconnect(context.WithoutCancel(ctx))
	db := client.Database(demoDatabase)
	cur, err := db.Collection(rotation.ArchiveCollection).Find(ctx, bson.M{"retireOutcome": bson.M{"$exists": true}})
	if err != nil {
		return 0, 0, err
	}
	var archived []struct {
		ID       string `bson:"_id"`
		Outcome  string `bson:"retireOutcome"`
		Document struct {
			ID     string `bson:"_id"`
			APIKey string `bson:"apiKey"`
		} `bson:"document"`
	}
	if err := cur.All(ctx, &archived); err != nil {
		return 0, 0, err
	}
	fmt.Fprintln(out, "\n== the upstream, asked with each rotated-out key")
	for _, a := range archived {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, upURL+"/key/info", nil)
		if err != nil {
			return 0, 0, err
		}
		req.Header.Set("Authorization", "Bearer "+a.Document.APIKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, 0, err
		}
		resp.Body.Close()
		fmt.Fprintf(out, "   %s (%s): %s upstream, answers HTTP %d\n", a.Document.ID, keysecret.Mask(a.Document.APIKey), a.Outcome, resp.StatusCode)
		if resp.StatusCode == http.StatusUnauthorized {
			refused++
		}
	}
	pool, _ := rotation.Preset("openhands")
	backups := db.Collection(pool.BackupsCollection)
	n, err := backups.CountDocuments(ctx, bson.M{"refillSlot": bson.M{"$exists": true}})
	if err != nil {
		return 0, 0, err
	}
	used, err := backups.CountDocuments(ctx, bson.M{"refillSlot": bson.M{"$exists": true}, "isUsed": true})
	if err != nil {
		return 0, 0, err
	}
	fmt.Fprintf(out, "\n== backups the pool created upstream: %d (%d of them rotated in since)\n", n, used)
	return refused, int(n), nil
}
