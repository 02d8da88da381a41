// Package embedded runs FerretDB v1 with its SQLite backend in-process: a
// MongoDB-compatible store for tests and the demo. It must never be imported
// by the production binary (cmd/spendchecker).
package embedded

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"

	"github.com/FerretDB/FerretDB/ferretdb"
)

// Store is a running embedded FerretDB.
type Store struct {
	uri    string
	cancel context.CancelFunc
	done   chan struct{}
}

// sqliteQuery tunes SQLite for many concurrent writers. SQLite's busy handler
// is not fair, so under heavy contention (many racing rotations under -race on
// two cores) a writer can wait longer than FerretDB's default 10 s and fail
// with SQLITE_BUSY; a minute's patience, write transactions that take the
// lock when they begin, and commits that do not fsync the WAL every time
// (durable against a process crash, not a power cut, which is what an
// embedded test and demo store needs) keep the queue short.
const sqliteQuery = "_pragma=busy_timeout(60000)&_pragma=synchronous(normal)&_txlock=immediate"

// Start starts FerretDB on a random loopback port, keeping its SQLite files in
// dir (created if missing). FerretDB logs go to logger; pass a discarding
// logger to keep them quiet.
func Start(dir string, logger *slog.Logger) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded store: %w", err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("embedded store: %w", err)
	}
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: "127.0.0.1:0"},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: (&url.URL{Scheme: "file", Path: abs + "/", RawQuery: sqliteQuery}).String(),
	})
	if err != nil {
		return nil, fmt.Errorf("embedded store: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{uri: f.MongoDBURI(), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		_ = f.Run(ctx)
	}()
	return s, nil
}

// URI is the MongoDB connection string of the store.
func (s *Store) URI() string { return s.uri }

// Close stops the store and waits for it to release its files.
func (s *Store) Close() {
	s.cancel()
	<-s.done
}
