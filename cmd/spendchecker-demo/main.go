// Command spendchecker-demo runs the real daemon for a few seconds on an
// embedded store (FerretDB on SQLite in a temporary directory) against a
// simulated OpenHands upstream whose keys spend at different rates, then
// prints the status table, the rotation history and verify's verdict.
// It needs no flags and leaves nothing behind.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/cmd/spendchecker/cli"
	"github.com/spendchecker/spendchecker/internal/embedded"
	"github.com/spendchecker/spendchecker/internal/fakeupstream"
	"github.com/spendchecker/spendchecker/internal/fixture"
	"github.com/spendchecker/spendchecker/rotation"
)

const runFor = 10 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Stdout, os.Stderr))
}

type demoKey struct {
	id    string
	spend float64 // USD at start
	rate  float64 // USD per second
	dead  bool    // the upstream rejects it (401)
}

func run(ctx context.Context, out, errOut io.Writer) int {
	dir, err := os.MkdirTemp("", "spendchecker-demo-")
	if err != nil {
		fmt.Fprintln(errOut, "demo:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	store, err := embedded.Start(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		fmt.Fprintln(errOut, "demo:", err)
		return 1
	}
	defer store.Close()
	up := fakeupstream.New("openhands")
	defer up.Close()

	keys := []demoKey{
		{"oh-key-01", 9.80, 0.060, false}, {"oh-key-02", 9.55, 0.080, false}, {"oh-key-03", 9.20, 0.150, false},
		{"oh-key-04", 9.90, 0.020, false}, {"oh-key-05", 4.00, 0.005, true}, {"oh-key-06", 2.10, 0.004, false},
		{"oh-key-07", 6.30, 0.010, false}, {"oh-key-08", 0.40, 0.002, false}, {"oh-key-09", 7.75, 0.008, false},
		{"oh-key-10", 3.30, 0.001, false}, {"oh-key-11", 5.05, 0.003, false}, {"oh-key-12", 8.60, 0.012, false},
	}
	uri := store.URI() + "fproxy"
	if err := seed(ctx, uri, up, keys, 6); err != nil {
		fmt.Fprintln(errOut, "demo: seed:", err)
		return 1
	}
	fmt.Fprintf(out, "== spendchecker demo: 12 keys, 6 backups, threshold $9.95, simulated upstream at %s\n", up.URL)
	fmt.Fprintf(out, "== running the daemon for %s (keys 01-04 cross the threshold, 05 is rejected by the upstream)\n\n", runFor)

	// The upstream's keys keep spending, new keys included, as traffic would.
	spendCtx, stopSpending := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-spendCtx.Done():
				return
			case <-t.C:
				for _, k := range keys {
					up.AddSpend(secret(k.id), k.rate/10)
				}
			}
		}
	}()

	common := []string{"--mongo-uri", uri, "--provider-url", up.URL}
	daemonCtx, cancel := context.WithTimeout(ctx, runFor)
	code := cli.Run(daemonCtx, append([]string{"--interval", "1s", "--min-check-interval", "1s", "--max-check-interval", "5s",
		"--lease-duration", "3s", "--shutdown-grace", "5s", "--log-format", "auto", "--listen", "", "--instance", "demo-1"}, common...), cli.Env{Stdout: out, Stderr: out})
	cancel()
	stopSpending()
	wg.Wait()
	if code != cli.ExitOK {
		fmt.Fprintf(errOut, "demo: daemon exited with %d\n", code)
		return 1
	}
	quiet := append([]string{"--log-level", "error"}, common...)
	fmt.Fprintln(out, "\n== spendchecker status")
	cli.Run(ctx, append([]string{"status"}, quiet...), cli.Env{Stdout: out, Stderr: errOut})
	fmt.Fprintln(out, "\n== spendchecker history")
	cli.Run(ctx, append([]string{"history"}, quiet...), cli.Env{Stdout: out, Stderr: errOut})
	fmt.Fprintln(out, "\n== spendchecker verify")
	vcode := cli.Run(ctx, append([]string{"verify"}, quiet...), cli.Env{Stdout: out, Stderr: errOut})

	rotated, err := countRotations(ctx, uri)
	if err != nil {
		fmt.Fprintln(errOut, "demo:", err)
		return 1
	}
	fmt.Fprintf(out, "\n== %d rotations; verify %s\n", rotated, map[bool]string{true: "clean", false: "FAILED"}[vcode == 0])
	if rotated == 0 || vcode != 0 {
		return 1
	}
	return 0
}

func secret(id string) string { return "sk-demo-5f3a9c1e7b-" + id }

func seed(ctx context.Context, uri string, up *fakeupstream.Server, keys []demoKey, backups int) error {
	client, err := mongo.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		return err
	}
	defer client.Disconnect(context.WithoutCancel(ctx))
	pool, _ := rotation.Preset("openhands")
	f := fixture.Pool{Bindings: 2, CreatedAt: time.Now().UTC()}
	for i, k := range keys {
		f.Keys = append(f.Keys, fixture.Key{ID: k.id, Secret: secret(k.id),
			Fields: bson.M{rotation.FieldTokensUsed: int64(1000 * i), rotation.FieldRequestsCount: int64(10 * i)}})
		up.SetSpend(secret(k.id), k.spend)
		if k.dead {
			up.SetStatus(secret(k.id), 401)
		}
	}
	for i := range backups {
		id := fmt.Sprintf("oh-backup-%02d", i+1)
		f.Backups = append(f.Backups, fixture.Backup{ID: id, Secret: secret(id)})
		up.SetSpend(secret(id), 0)
	}
	return fixture.Write(ctx, client.Database("fproxy"), pool, f)
}

func countRotations(ctx context.Context, uri string) (int64, error) {
	client, err := mongo.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		return 0, err
	}
	defer client.Disconnect(context.WithoutCancel(ctx))
	return client.Database("fproxy").Collection(rotation.JournalCollection).CountDocuments(ctx, bson.M{"state": "done"})
}
