package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/internal/embedded"
	"github.com/spendchecker/spendchecker/internal/fakeupstream"
)

// serve is the child: the store and an upstream where every key has spent
// $1, until stdin closes. A line "index DB" on stdin gives DB's collections
// the _id index FerretDB's updates can use (embedded.Store.IndexIDs) and
// answers "ok"; a line "answering" gets the upstream's time spent answering
// so far, in ns, and its number of answers (fakeupstream.Server.Answering).
func serve(latency time.Duration) error {
	dir, err := os.MkdirTemp("", "spendchecker-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	store, err := embedded.Start(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer store.Close()
	up := fakeupstream.New("openhands")
	defer up.Close()
	up.Latency = latency
	up.SetDefaultSpend(1)
	fmt.Println(store.URI(), up.URL)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() == "answering" {
			d, n := up.Answering()
			fmt.Println(int64(d), n)
			continue
		}
		db, ok := strings.CutPrefix(in.Text(), "index ")
		if !ok {
			return fmt.Errorf("serve: unknown request %q", in.Text())
		}
		if err := store.IndexIDs(context.Background(), db); err != nil {
			return err
		}
		fmt.Println("ok")
	}
	return in.Err()
}

type child struct {
	uri, upstream string
	cmd           *exec.Cmd
	stdin         io.WriteCloser
	stdout        *bufio.Reader
	client        *mongo.Client
}

// startChild starts the serving process and connects to its store; rt, when
// not nil, counts the commands the client sends.
func startChild(latency time.Duration, rt *roundTrips) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "-serve", "-latency", latency.String())
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stdout := bufio.NewReader(out)
	line, err := stdout.ReadString('\n')
	f := strings.Fields(line)
	if err != nil || len(f) != 2 {
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("child store did not start: %q %v", line, err)
	}
	c := &child{uri: f[0], upstream: f[1], cmd: cmd, stdin: in, stdout: stdout}
	if c.client, err = connect(c.uri, rt); err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

// indexIDs asks the child to index db's collections by _id as FerretDB
// looks them up (see embedded.Store.IndexIDs).
func (c *child) indexIDs(db string) error {
	if _, err := fmt.Fprintf(c.stdin, "index %s\n", db); err != nil {
		return err
	}
	line, err := c.stdout.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ok" {
		return fmt.Errorf("child could not index %s: %q %v", db, line, err)
	}
	return nil
}

// answering returns the upstream's time spent answering so far and its
// number of answers.
func (c *child) answering() (time.Duration, int64, error) {
	if _, err := fmt.Fprintln(c.stdin, "answering"); err != nil {
		return 0, 0, err
	}
	line, err := c.stdout.ReadString('\n')
	var ns, n int64
	if err == nil {
		_, err = fmt.Sscan(line, &ns, &n)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("child's answering time: %q %w", line, err)
	}
	return time.Duration(ns), n, nil
}

func (c *child) stop() {
	if c.client != nil {
		_ = c.client.Disconnect(context.Background())
	}
	_ = c.stdin.Close()
	_ = c.cmd.Wait()
}

// roundTrips counts the commands a client sends and, while keep is set,
// keeps the update commands (for the write-back's store-alone bound).
type roundTrips struct {
	n       atomic.Int64
	keep    atomic.Bool
	mu      sync.Mutex
	updates []bson.Raw
}

func (r *roundTrips) monitor() *event.CommandMonitor {
	return &event.CommandMonitor{Started: func(_ context.Context, e *event.CommandStartedEvent) {
		r.n.Add(1)
		if e.CommandName == "update" && r.keep.Load() {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.updates = append(r.updates, slices.Clone(e.Command))
		}
	}}
}

// kept returns the update commands kept since the last call, and stops
// keeping them.
func (r *roundTrips) kept() []bson.Raw {
	r.keep.Store(false)
	r.mu.Lock()
	defer r.mu.Unlock()
	u := r.updates
	r.updates = nil
	return u
}

func connect(uri string, rt *roundTrips) (*mongo.Client, error) {
	o := options.Client().ApplyURI(uri)
	if rt != nil {
		o.SetMonitor(rt.monitor())
	}
	return mongo.Connect(o)
}
