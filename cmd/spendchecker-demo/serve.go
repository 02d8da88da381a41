package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/cmd/spendchecker/cli"
	"github.com/spendchecker/spendchecker/internal/fakeupstream"
	"github.com/spendchecker/spendchecker/internal/fixture"
	"github.com/spendchecker/spendchecker/rotation"
)

// defaultListen is the daemon's own default, so the page is where the
// operating docs say it is.
const defaultListen = "127.0.0.1:9090"

// demoDatabase is the database the demo seeds, the proxy's default.
const demoDatabase = "fproxy"

// minBackups is how many unused backups serve mode keeps in stock, as an
// operator would: without them rotations would stop once the first six ran
// out.
const minBackups = 3

// slowKey is a key the printed `rotate` command can name: at its rate it
// reaches the threshold only after more than an hour.
const slowKey = "oh-key-08"

// runServe runs the openhands demo until ctx ends (Ctrl-C): the daemon
// with its status page on listen, keys that keep spending and backups that
// are restocked. It then stops the daemon (which releases its lease),
// closes the store and removes its directory.
func runServe(ctx context.Context, listen string, out, errOut io.Writer) int {
	// Refuse a taken address before the store's start-up, not after it.
	addr, err := claimAddr(listen)
	if err != nil {
		fmt.Fprintln(errOut, "demo:", err)
		return 2
	}
	w, err := newWorld("openhands")
	if err != nil {
		fmt.Fprintln(errOut, "demo:", err)
		return 1
	}
	code := serve(ctx, w, addr, out, errOut)
	if err := w.close(); err != nil {
		fmt.Fprintln(errOut, "demo: removing the store:", err)
		return 1
	}
	if code == 0 {
		fmt.Fprintf(out, "== stopped: daemon stopped, lease released, store closed, %s removed\n", w.dir)
	}
	return code
}

func serve(ctx context.Context, w *world, addr string, out, errOut io.Writer) int {
	uri := w.store.URI()
	if err := seed(ctx, uri, w.up, openhandsKeys, 6); err != nil {
		if ctx.Err() != nil {
			return 0 // Ctrl-C while starting
		}
		fmt.Fprintln(errOut, "demo: seed:", err)
		return 1
	}
	client, err := mongo.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		fmt.Fprintln(errOut, "demo:", err)
		return 1
	}
	defer client.Disconnect(context.WithoutCancel(ctx))
	pool, _ := rotation.Preset("openhands")
	stopSpending := keepPoolSpending(ctx, client.Database(demoDatabase), pool, w.up, errOut)
	defer stopSpending()

	// Every cycle is on the page; the terminal keeps one line per rotation,
	// the lease's changes and any warning.
	// Its lines wait until the URL and the commands are printed.
	logs := &dropLines{w: out, drop: []byte("cycle done"), held: true}
	format := "json"
	if f, ok := out.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			format = "text"
		}
	}
	store := []string{"--mongo-uri", uri, "--database", demoDatabase}
	done := make(chan int, 1)
	go func() {
		done <- cli.Run(ctx, append([]string{"--interval", "1s", "--min-check-interval", "1s", "--max-check-interval", "5s",
			"--lease-duration", "3s", "--shutdown-grace", "5s", "--log-format", format, "--listen", addr, "--instance", "demo-1",
			"--provider-url", w.up.URL}, store...), cli.Env{Stdout: out, Stderr: logs})
	}()
	url := "http://" + addr + "/"
	if err := waitListening(ctx, url, done); err != nil {
		logs.release()
		if ctx.Err() != nil && <-done == cli.ExitOK {
			return 0 // Ctrl-C while starting
		}
		fmt.Fprintln(errOut, "demo:", err)
		return 1
	}
	fmt.Fprintf(out, "== spendchecker demo: 12 keys, threshold $9.95, simulated upstream at %s, store in %s\n", w.up.URL, w.dir)
	fmt.Fprintf(out, "== status page: %s\n", url)
	fmt.Fprintln(out, "== try, in another terminal in this directory:")
	for _, c := range [][]string{{"status"}, {"history"}, {"rotate", slowKey}, {"verify"}} {
		fmt.Fprintf(out, "   go run ./cmd/spendchecker %s\n", strings.Join(append(c, store...), " "))
	}
	fmt.Fprintf(out, "== keys keep spending and backups are restocked: a rotation every 10-20 s, one line each below; Ctrl-C stops it all\n\n")
	logs.release()
	if code := <-done; code != cli.ExitOK {
		fmt.Fprintf(errOut, "demo: daemon exited with %d\n", code)
		return 1
	}
	return 0
}

// claimAddr checks that listen is free, in one line if not, and resolves
// a port of 0 to a free one.
func claimAddr(listen string) (string, error) {
	ln, err := net.Listen("tcp", listen)
	if errors.Is(err, syscall.EADDRINUSE) {
		return "", fmt.Errorf("%s is taken (another demo or spendchecker?); choose a free address with -listen, e.g. -listen 127.0.0.1:9091", listen)
	}
	if err != nil {
		return "", fmt.Errorf("cannot listen on -listen %s: %w", listen, err)
	}
	addr := ln.Addr().String()
	return addr, ln.Close()
}

// waitListening returns once the daemon answers HTTP on url, or with an
// error when it exits first. The daemon listens before it touches the
// store, so this takes milliseconds.
func waitListening(ctx context.Context, url string, done <-chan int) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"healthz", nil)
		if err != nil {
			return err
		}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case code := <-done:
			return fmt.Errorf("daemon exited with %d before serving its page", code)
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// keepPoolSpending makes every key in the pool spend, keys rotated in
// included, as traffic would, and keeps minBackups unused backups in stock,
// until the returned stop is called (it waits).
func keepPoolSpending(ctx context.Context, db *mongo.Database, pool rotation.Pool, up *fakeupstream.Server, errOut io.Writer) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		const tick = 500 * time.Millisecond
		t := time.NewTicker(tick)
		defer t.Stop()
		next := 7 // oh-backup-07 is the first restocked backup
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			secrets, err := poolSecrets(ctx, db, pool)
			if err == nil {
				for _, s := range secrets {
					up.AddSpend(s, serveRate(s)*tick.Seconds())
				}
				err = restock(ctx, db, pool, up, &next)
			}
			if err != nil && ctx.Err() == nil {
				fmt.Fprintln(errOut, "demo: simulated traffic:", err)
			}
		}
	}()
	return func() { cancel(); <-done }
}

// serveRate is a key's spend rate in serve mode: 3 to 8 cents a second,
// so a fresh key lasts 2 to 5½ minutes and, with 12 keys, one rotates
// about every 15 s; slowKey keeps its slow rate.
func serveRate(s string) float64 {
	if s == secret(slowKey) {
		return 0.002
	}
	h := fnv.New32a()
	h.Write([]byte(s))
	return 0.03 + 0.05*float64(h.Sum32()%1000)/1000
}

func poolSecrets(ctx context.Context, db *mongo.Database, pool rotation.Pool) ([]string, error) {
	cur, err := db.Collection(pool.KeysCollection).Find(ctx, bson.M{},
		options.Find().SetProjection(bson.M{rotation.FieldAPIKey: 1}))
	if err != nil {
		return nil, err
	}
	var docs []struct {
		APIKey string `bson:"apiKey"`
	}
	if err := cur.All(ctx, &docs); err != nil {
		return nil, err
	}
	secrets := make([]string, 0, len(docs))
	for _, d := range docs {
		secrets = append(secrets, d.APIKey)
	}
	return secrets, nil
}

// restock adds backups, oh-backup-<next> on, until minBackups are unused.
func restock(ctx context.Context, db *mongo.Database, pool rotation.Pool, up *fakeupstream.Server, next *int) error {
	backups := db.Collection(pool.BackupsCollection)
	n, err := backups.CountDocuments(ctx, bson.M{rotation.FieldIsUsed: false})
	if err != nil {
		return err
	}
	for ; n < minBackups; n++ {
		id := fmt.Sprintf("oh-backup-%02d", *next)
		up.SetSpend(secret(id), 0)
		if _, err := backups.InsertOne(ctx, fixture.BackupDoc(fixture.Backup{ID: id, Secret: secret(id)}, time.Now().UTC())); err != nil {
			return err
		}
		*next++
	}
	return nil
}

// dropLines writes whole lines to w, leaving out those that contain drop;
// while held it keeps them until release.
type dropLines struct {
	mu   sync.Mutex
	w    io.Writer
	drop []byte
	held bool
	buf  []byte
}

func (d *dropLines) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.buf = append(d.buf, p...)
	return len(p), d.flush()
}

func (d *dropLines) release() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.held = false
	_ = d.flush()
}

func (d *dropLines) flush() error {
	for !d.held {
		i := bytes.IndexByte(d.buf, '\n')
		if i < 0 {
			return nil
		}
		line := d.buf[:i+1]
		d.buf = d.buf[i+1:]
		if !bytes.Contains(line, d.drop) {
			if _, err := d.w.Write(line); err != nil {
				return err
			}
		}
	}
	return nil
}
