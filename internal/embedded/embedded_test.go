package embedded

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// After IndexIDs, SQLite plans the statement FerretDB updates a document
// with as an index search, not a table scan; a second call changes nothing;
// an unknown database is an error.
func TestIndexIDs(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	store, err := Start(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	client, err := mongo.Connect(options.Client().ApplyURI(store.URI()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Disconnect(ctx) })
	coll := client.Database("idx").Collection("keys")
	if _, err := coll.InsertMany(ctx, []any{bson.M{"_id": "a"}, bson.M{"_id": "b"}}); err != nil {
		t.Fatal(err)
	}

	plan := func() string {
		t.Helper()
		conn, err := sql.Open("sqlite", (&url.URL{Scheme: "file", Opaque: filepath.Join(dir, "idx.sqlite")}).String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		var table string
		if err := conn.QueryRow(`SELECT table_name FROM _ferretdb_collections WHERE name = 'keys'`).Scan(&table); err != nil {
			t.Fatal(err)
		}
		// The statement of FerretDB v1.24's sqlite collection.UpdateAll.
		rows, err := conn.Query(fmt.Sprintf(`EXPLAIN QUERY PLAN UPDATE %q SET _ferretdb_sjson = ? WHERE _ferretdb_sjson->'$._id' = ?`, table), "{}", `"a"`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var details []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			details = append(details, detail)
		}
		return strings.Join(details, "; ")
	}

	if p := plan(); !strings.HasPrefix(p, "SCAN") {
		t.Fatalf("before IndexIDs the update should scan (else this test proves nothing): %q", p)
	}
	for range 2 {
		if err := store.IndexIDs(ctx, "idx"); err != nil {
			t.Fatal(err)
		}
		if p := plan(); !strings.Contains(p, "USING INDEX") {
			t.Fatalf("after IndexIDs the update should use an index: %q", p)
		}
	}
	if err := store.IndexIDs(ctx, "nosuchdb"); err == nil {
		t.Fatal("IndexIDs on a database that does not exist should fail")
	}
}
