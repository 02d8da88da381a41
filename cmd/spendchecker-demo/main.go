// Command spendchecker-demo runs the real daemon for a few seconds on an
// embedded store (FerretDB on SQLite in a temporary directory) against a
// simulated OpenHands upstream whose keys spend at different rates, then
// prints the status table, the rotation history and verify's verdict.
// It needs no flags and leaves nothing behind. With -provider oneapi it runs
// against a simulated one-api reseller instead: a token over the threshold,
// one whose quota is used up (rotated as exhausted) and an unlimited one
// (no reading). With -provider litellm it runs against a simulated LiteLLM
// proxy with its master key, and the pool refills and retires itself: it
// creates backups upstream and disables the keys it rotates out, which the
// upstream then refuses (litellm.go). With -serve it keeps the store, the upstream and the daemon
// running, with the status page on -listen, until Ctrl-C (serve.go).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
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
	// A second Ctrl-C while the demo shuts down ends it at once.
	go func() { <-ctx.Done(); stop() }()
	os.Exit(demo(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// demo runs the demo its flags ask for; bad usage is one line and exit 2.
func demo(ctx context.Context, args []string, out, errOut io.Writer) int {
	fs := flag.NewFlagSet("spendchecker-demo", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	provider := fs.String("provider", "openhands", "simulated upstream: openhands, oneapi, or litellm (a pool that refills and retires itself)")
	serve := fs.Bool("serve", false, "keep the store, the upstream and the daemon running, with the status page on -listen, until Ctrl-C")
	listen := fs.String("listen", defaultListen, "address of the status page with -serve (port 0: any free port)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(out)
			fs.PrintDefaults()
			return 0
		}
		fmt.Fprintf(errOut, "demo: %v (see -help)\n", err)
		return 2
	}
	listenSet := false
	fs.Visit(func(f *flag.Flag) { listenSet = listenSet || f.Name == "listen" })
	switch {
	case fs.NArg() > 0:
		fmt.Fprintf(errOut, "demo: unexpected argument %q (see -help)\n", fs.Arg(0))
		return 2
	case *serve && *provider != "openhands":
		fmt.Fprintln(errOut, "demo: -serve runs the openhands demo; drop -provider")
		return 2
	case *serve:
		return runServe(ctx, *listen, out, errOut)
	case listenSet:
		fmt.Fprintln(errOut, "demo: -listen needs -serve")
		return 2
	case *provider == "oneapi":
		return runOneAPI(ctx, out, errOut)
	case *provider == "litellm":
		return runLiteLLM(ctx, out, errOut)
	case *provider != "openhands":
		fmt.Fprintln(errOut, "demo: -provider must be openhands, oneapi or litellm")
		return 2
	}
	return run(ctx, out, errOut)
}

type demoKey struct {
	id    string
	spend float64 // USD at start
	rate  float64 // USD per second
	dead  bool    // the upstream rejects it (401)
	// oneapi: budget > 0 is the token's quota (used up: 401 exhausted);
	// unlimited reports no usage at all.
	budget    float64
	unlimited bool
}

// openhandsKeys are the openhands demo's keys: 01-04 cross the threshold
// within seconds, 05 is rejected by the upstream, the others spend slowly.
var openhandsKeys = []demoKey{
	{id: "oh-key-01", spend: 9.80, rate: 0.060, dead: false}, {id: "oh-key-02", spend: 9.55, rate: 0.080, dead: false}, {id: "oh-key-03", spend: 9.20, rate: 0.150, dead: false},
	{id: "oh-key-04", spend: 9.90, rate: 0.020, dead: false}, {id: "oh-key-05", spend: 4.00, rate: 0.005, dead: true}, {id: "oh-key-06", spend: 2.10, rate: 0.004, dead: false},
	{id: "oh-key-07", spend: 6.30, rate: 0.010, dead: false}, {id: "oh-key-08", spend: 0.40, rate: 0.002, dead: false}, {id: "oh-key-09", spend: 7.75, rate: 0.008, dead: false},
	{id: "oh-key-10", spend: 3.30, rate: 0.001, dead: false}, {id: "oh-key-11", spend: 5.05, rate: 0.003, dead: false}, {id: "oh-key-12", spend: 8.60, rate: 0.012, dead: false},
}

// world is what every demo runs on: an embedded store in a temporary
// directory and a simulated upstream.
type world struct {
	dir   string
	store *embedded.Store
	up    *fakeupstream.Server
}

// newWorld starts the store and the upstream; close stops both and removes
// the directory.
func newWorld(kind string) (*world, error) {
	dir, err := os.MkdirTemp("", "spendchecker-demo-")
	if err != nil {
		return nil, err
	}
	store, err := embedded.Start(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &world{dir: dir, store: store, up: fakeupstream.New(kind)}, nil
}

func (w *world) close() error {
	w.up.Close()
	w.store.Close()
	return os.RemoveAll(w.dir)
}

func run(ctx context.Context, out, errOut io.Writer) int {
	w, err := newWorld("openhands")
	if err != nil {
		fmt.Fprintln(errOut, "demo:", err)
		return 1
	}
	defer w.close()
	store, up, keys := w.store, w.up, openhandsKeys
	uri := store.URI() + "fproxy"
	if err := seed(ctx, uri, up, keys, 6); err != nil {
		fmt.Fprintln(errOut, "demo: seed:", err)
		return 1
	}
	fmt.Fprintf(out, "== spendchecker demo: 12 keys, 6 backups, threshold $9.95, simulated upstream at %s\n", up.URL)
	fmt.Fprintf(out, "== running the daemon for %s (keys 01-04 cross the threshold, 05 is rejected by the upstream)\n\n", runFor)

	// The upstream's keys keep spending, new keys included, as traffic would.
	stopSpending := keepSpending(ctx, up, keys)

	common := []string{"--mongo-uri", uri, "--provider-url", up.URL}
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
		if k.budget > 0 {
			up.SetBudget(secret(k.id), k.budget)
		}
		if k.unlimited {
			up.SetUnlimited(secret(k.id))
		}
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

// oneAPIRunFor is longer than runFor: the oneapi provider paces itself to
// one request per 1.1 s per host, under one-api's and new-api's per-IP
// limits, and a check is two requests (docs/providers.md).
const oneAPIRunFor = 20 * time.Second

// runOneAPI is the demo against a simulated one-api reseller.
func runOneAPI(ctx context.Context, out, errOut io.Writer) int {
	w, err := newWorld("oneapi")
	if err != nil {
		fmt.Fprintln(errOut, "demo:", err)
		return 1
	}
	defer w.close()
	store, up := w.store, w.up
	keys := []demoKey{
		{id: "oa-key-01", spend: 9.80, rate: 0.060},
		{id: "oa-key-02", spend: 5.00, budget: 5.00},
		{id: "oa-key-03", spend: 3.00, unlimited: true},
		{id: "oa-key-04", spend: 1.00, rate: 0.001},
	}
	uri := store.URI() + "fproxy"
	if err := seed(ctx, uri, up, keys, 3); err != nil {
		fmt.Fprintln(errOut, "demo: seed:", err)
		return 1
	}
	fmt.Fprintf(out, "== spendchecker demo (oneapi): 4 tokens, 3 backups, threshold $9.95, simulated one-api at %s\n", up.URL)
	fmt.Fprintf(out, "== running the daemon for %s (01 crosses the threshold, 02's quota is used up, 03 is unlimited)\n\n", oneAPIRunFor)
	stopSpending := keepSpending(ctx, up, keys)
	// Each command takes only its own flags: --listen and --instance are
	// the daemon's.
	common := []string{"--mongo-uri", uri, "--provider", "oneapi", "--provider-url", up.URL}
	daemonCtx, cancel := context.WithTimeout(ctx, oneAPIRunFor)
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
		if code := cli.Run(ctx, append([]string{cmd}, quiet...), cli.Env{Stdout: out, Stderr: errOut}); code != cli.ExitOK {
			fmt.Fprintf(errOut, "demo: %s exited with %d\n", cmd, code)
			return 1
		}
	}
	rotated, err := countRotations(ctx, uri)
	if err != nil {
		fmt.Fprintln(errOut, "demo:", err)
		return 1
	}
	fmt.Fprintf(out, "\n== %d rotations\n", rotated)
	if rotated < 2 {
		return 1
	}
	return 0
}

// keepSpending makes the upstream's keys spend at their rates, new keys
// included, as traffic would, until the returned stop is called (it waits).
func keepSpending(ctx context.Context, up *fakeupstream.Server, keys []demoKey) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				for _, k := range keys {
					up.AddSpend(secret(k.id), k.rate/10)
				}
			}
		}
	}()
	return func() { cancel(); <-done }
}
