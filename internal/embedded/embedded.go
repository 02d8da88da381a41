// Package embedded runs FerretDB v1 with its SQLite backend in-process: a
// MongoDB-compatible store for tests and the demo. It must never be imported
// by the production binary (cmd/spendchecker).
package embedded

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"

	"github.com/FerretDB/FerretDB/ferretdb"
	_ "modernc.org/sqlite" // the driver FerretDB itself uses, for IndexIDs
)

// Store is a running embedded FerretDB.
type Store struct {
	dir    string
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
	s := &Store{dir: abs, uri: f.MongoDBURI(), cancel: cancel, done: make(chan struct{})}
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

// IndexIDs gives every collection of database db an SQLite index on the
// expression FerretDB v1.24 finds a document by _id with
// (`_ferretdb_sjson->'$._id'`, in its point queries and in every UPDATE).
// FerretDB's own _id index is on `_ferretdb_sjson->"_id"`, which SQLite does
// not match to that expression, so without this each update scans the whole
// table and a write-back of N keys costs O(N²): 7 min 55 s for 10,000 keys
// here, 5.3 s with the index. Only the bench needs it; FerretDB creates a
// table on its first insert, so call this after the collections exist.
func (s *Store) IndexIDs(ctx context.Context, db string) error {
	path := filepath.Join(s.dir, db+".sqlite")
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("embedded store: database %q: %w", db, err)
	}
	conn, err := sql.Open("sqlite", (&url.URL{Scheme: "file", Opaque: path, RawQuery: sqliteQuery}).String())
	if err != nil {
		return fmt.Errorf("embedded store: %w", err)
	}
	defer conn.Close()
	rows, err := conn.QueryContext(ctx, `SELECT table_name FROM _ferretdb_collections`)
	if err != nil {
		return fmt.Errorf("embedded store: list tables of %q: %w", db, err)
	}
	var tables []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			rows.Close()
			return fmt.Errorf("embedded store: %w", err)
		}
		tables = append(tables, t)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return fmt.Errorf("embedded store: %w", err)
	}
	for _, t := range tables {
		q := fmt.Sprintf(`CREATE INDEX IF NOT EXISTS %q ON %q (_ferretdb_sjson->'$._id')`, t+"_sjson_id", t)
		if _, err := conn.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("embedded store: index %s: %w", t, err)
		}
	}
	return nil
}
