// Package mongotest gives each test a fresh MongoDB database: on an embedded
// FerretDB (SQLite backend) started for the test (under -race, one in a
// process of its own shared by the test binary), or on the real MongoDB
// named by SPENDCHECKER_TEST_MONGO_URI.
package mongotest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/internal/embedded"
)

// EnvURI names the variable that points the suite at a real MongoDB.
const EnvURI = "SPENDCHECKER_TEST_MONGO_URI"

// DB is one test's database.
type DB struct {
	// URI connects to the server (without a database name).
	URI string
	// Name is the test's own database.
	Name string
	// Client is a connection opened for the test.
	Client *mongo.Client
	// Database is Client's handle on Name.
	Database *mongo.Database
	// Store is the embedded store, nil on a real MongoDB.
	Store *embedded.Store
}

// New starts (or connects to) a store and returns a fresh database that is
// dropped when the test ends. Store logs are printed only if the test fails.
// A test binary built with -race shares one store in a process of its own
// (process.go); otherwise each test starts one in-process.
func New(tb testing.TB) *DB {
	tb.Helper()
	uri := os.Getenv(EnvURI)
	var store *embedded.Store
	if uri == "" && raceDetector {
		u, logs, err := processStore()
		if err != nil {
			tb.Fatalf("mongotest: %v", err)
		}
		uri = u
		from := logs.Len()
		tb.Cleanup(func() {
			if all := logs.String(); tb.Failed() && len(all) > from {
				tb.Logf("embedded store logs:\n%s", all[from:])
			}
		})
	}
	if uri == "" {
		logs := &lockedBuffer{}
		logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelError}))
		s, err := embedded.Start(tb.TempDir(), logger)
		if err != nil {
			tb.Fatalf("mongotest: %v", err)
		}
		store = s
		uri = s.URI()
		tb.Cleanup(func() {
			s.Close()
			if tb.Failed() && logs.Len() > 0 {
				tb.Logf("embedded store logs:\n%s", logs.String())
			}
		})
	}
	db := &DB{URI: uri, Name: "t_" + randomHex(6), Store: store}
	db.Client = db.NewClient(tb)
	db.Database = db.Client.Database(db.Name)
	if store == nil {
		tb.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = db.Database.Drop(ctx)
		})
	}
	return db
}

// NewClient opens another connection pool to the same server, as a separate
// process would; it is closed when the test ends.
func (d *DB) NewClient(tb testing.TB, opts ...*options.ClientOptions) *mongo.Client {
	tb.Helper()
	// A minute to find the server: a guard, which a loaded machine needs.
	all := append([]*options.ClientOptions{options.Client().ApplyURI(d.URI).SetServerSelectionTimeout(time.Minute)}, opts...)
	c, err := mongo.Connect(all...)
	if err != nil {
		tb.Fatalf("mongotest: connect: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = c.Disconnect(ctx)
	})
	return c
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// lockedBuffer collects the store's logs from its goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Len()
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
