package statuspage

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/internal/mongotest"
)

// downSource is a pool and a lease in a store nothing answers for: a
// closed loopback port, each server selection giving up after 100 ms.
func downSource(t *testing.T) Source {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	client, err := mongo.Connect(options.Client().ApplyURI("mongodb://" + addr + "/?serverSelectionTimeoutMS=100"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Disconnect(context.Background()) })
	db := client.Database("x")
	return Source{
		Pools: []Pool{{Name: "openhands", Keys: db.Collection("openhands_keys"), History: db.Collection("openhands_key_spend_history"),
			Threshold: 9.95, Backups: countBackups{err: errReadBackups(db)}}},
		Leases: db.Collection("leases"), LeaseName: "spendchecker", Rotations: 5, Now: func() time.Time { return now },
	}
}

// errReadBackups is what counting backups answers with the store down.
func errReadBackups(db *mongo.Database) error {
	_, err := db.Collection("openhands_backups").CountDocuments(context.Background(), map[string]any{})
	return err
}

// With the store down the page and the text say so once, readably, since
// when the store went away (as the driver saw it, else as this read
// found it), and show what could not be read as unknown, never as an
// empty pool.
func TestStoreDown(t *testing.T) {
	for _, tt := range []struct {
		name  string
		reach func() *Reachability
		since string
	}{
		{"found by this read", func() *Reachability { return nil }, "2026-03-01 12:00:00 UTC"},
		{"lost earlier", func() *Reachability {
			r := &Reachability{}
			r.Down(now.Add(-5 * time.Minute))
			return r
		}, "2026-03-01 11:55:00 UTC"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src := downSource(t)
			src.Reachability = tt.reach()
			snap := src.Read(context.Background())
			var page, text strings.Builder
			if err := Render(&page, snap, "host-1", time.Second); err != nil {
				t.Fatal(err)
			}
			WriteText(&text, snap)
			for out, wants := range map[string][]string{
				page.String(): {"unknown: store unreachable since " + tt.since, "backups left: unknown", "keys unknown", `lease <b>spendchecker</b>: <span class="warn">unknown</span>`},
				text.String(): {"unknown: store unreachable since " + tt.since, "lease spendchecker: unknown\n", "backups left unknown", "keys unknown: store unreachable since"},
			} {
				for _, want := range wants {
					if !strings.Contains(out, want) {
						t.Errorf("lacks %q:\n%s", want, out)
					}
				}
				for _, bad := range []string{"0 keys", "no keys", "none recorded", "never held", "topology", "Servers:", "context deadline exceeded", "KEY  API KEY"} {
					if strings.Contains(out, bad) {
						t.Errorf("shows %q:\n%s", bad, out)
					}
				}
				if n := strings.Count(out, "connection refused"); n != 1 {
					t.Errorf("the reason shows %d times, want once:\n%s", n, out)
				}
			}
			if len(snap.Errors) != 1 || !strings.HasPrefix(snap.Errors[0], "store unreachable since") {
				t.Errorf("errors %q, want one saying the store is unreachable", snap.Errors)
			}
		})
	}
}

// A read that reaches the store ends an outage; the driver's view of the
// servers starts and ends one.
func TestReachability(t *testing.T) {
	r := &Reachability{}
	src := seed(t, mongotest.New(t).Database)
	src.Reachability = r
	r.Down(now.Add(-time.Hour))
	if snap := src.Read(context.Background()); snap.Store != nil {
		t.Fatalf("store %+v on a reachable store", snap.Store)
	}
	if _, down := r.Since(); down {
		t.Error("a read that reached the store left it down")
	}
	mon := r.Observe(func() time.Time { return now })
	topo := func(kinds ...string) *event.TopologyDescriptionChangedEvent {
		e := &event.TopologyDescriptionChangedEvent{}
		for _, k := range kinds {
			e.NewDescription.Servers = append(e.NewDescription.Servers, event.ServerDescription{Kind: k})
		}
		return e
	}
	for i, step := range []struct {
		e    *event.TopologyDescriptionChangedEvent
		down bool
	}{
		{topo("Unknown", "Unknown"), true},
		{topo("Unknown", "RSSecondary"), false},
		{topo(), true},
		{topo("Standalone"), false},
	} {
		mon.TopologyDescriptionChanged(step.e)
		if since, down := r.Since(); down != step.down || (down && !since.Equal(now)) {
			t.Errorf("step %d: down %v since %v, want down %v", i, down, since, step.down)
		}
	}
}
