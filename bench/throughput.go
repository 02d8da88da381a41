package main

import (
	"context"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/rotation"
)

// throughput: one cycle over N keys, upstream latency L, concurrency C,
// against the ideal N·L/C and against per-key reads (cursor batches of 1).
// The polling path (a dry run: stream, poll, decide; no writes) isolates
// the checker; the full cycle adds the write-back of every key. The store
// gets the _id index its updates can use (embedded.Store.IndexIDs): without
// it FerretDB scans the table for each updated document and the full cycle
// measures that, not the checker. CPU µs/key is the measuring process's CPU
// time (the checker) over the cycle per key; child µs/key the store's and
// the upstream's. -polling-only runs the first variant alone.
func throughput(ctx context.Context, s settings) error {
	var rt roundTrips
	ch, err := startChild(s.latency, &rt)
	if err != nil {
		return err
	}
	defer ch.stop()
	client := ch.client
	fmt.Printf("\n## cycle throughput: upstream latency %v, concurrency %d; ideal = N·L/C\n", s.latency, s.concurrency)
	var full time.Duration
	var updates []bson.Raw // the full cycle's update commands
	fmt.Printf("%-44s %7s %9s %9s %9s %12s %10s %11s %11s\n", "variant", "keys", "ideal", "wall", "vs ideal", "round trips", "vs N/250", "CPU µs/key", "child µs/key")
	variants := []struct {
		name   string
		keys   int
		batch  int
		dryRun bool
	}{
		{"ours: polling path (dry run), batches of 500", s.keys, 500, true},
		{"baseline: polling path, per-key reads", s.keys, 1, true},
		{"ours: full cycle with write-back", s.fullKeys, 500, false},
	}
	if s.pollingOnly {
		variants = variants[:1]
	}
	for i, v := range variants {
		db := client.Database(fmt.Sprintf("throughput_%d", v.keys))
		if n, _ := db.Collection(pool.KeysCollection).EstimatedDocumentCount(ctx); n == 0 {
			if err := seedKeys(ctx, db, v.keys); err != nil {
				return err
			}
			if err := ch.indexIDs(db.Name()); err != nil {
				return err
			}
		}
		var calls *callTimes
		if i == 0 {
			calls = &callTimes{}
		}
		chk, err := newTimedChecker(db, ch.upstream, s.concurrency, v.batch, false, v.dryRun, nil, calls)
		if err != nil {
			return err
		}
		ideal := time.Duration(float64(v.keys) * float64(s.latency) / float64(s.concurrency))
		rt.n.Store(0)
		ans0, _, err := ch.answering()
		if err != nil {
			return err
		}
		cpu0 := readCPU(ch.cmd.Process.Pid)
		if calls != nil {
			calls.reset()
		}
		rt.keep.Store(!v.dryRun)
		d, err := cycleOnce(ctx, chk, v.keys)
		if err != nil {
			return err
		}
		cpu1 := readCPU(ch.cmd.Process.Pid)
		n := rt.n.Load()
		fmt.Printf("%-44s %7d %9v %9v %8.3fx %12d %9.2fx %11s %11s\n", v.name, v.keys, ideal, d.Round(time.Millisecond), float64(d)/float64(ideal), n, float64(n)/(float64(v.keys)/250),
			perKey(cpu0.self, cpu1.self, v.keys), perKey(cpu0.child, cpu1.child, v.keys))
		if calls != nil {
			ans1, _, err := ch.answering()
			if err != nil {
				return err
			}
			if err := callsLine(v.keys, s, ideal, d, calls, ans1-ans0); err != nil {
				return err
			}
		}
		if !v.dryRun {
			full = d
			updates = rt.kept()
		}
	}
	if s.pollingOnly {
		return nil
	}
	// The full cycle cannot beat the store: the same write-back alone, with
	// no polling, is its other bound. The same update commands, sent to a
	// copy of the keys as the cycle found them (indexes included), so that
	// each changes its key as it did in the cycle.
	db := client.Database(fmt.Sprintf("throughput_alone_%d", s.fullKeys))
	if err := seedKeys(ctx, db, s.fullKeys); err != nil {
		return fmt.Errorf("seed the copy: %w", err)
	}
	if err := ch.indexIDs(db.Name()); err != nil {
		return err
	}
	// With the indexes the checker and the rotator create, which every
	// update maintains, as on the cycle's keys.
	if _, err := newChecker(db, ch.upstream, s.concurrency, 500, false, false, nil); err != nil {
		return err
	}
	rt.n.Store(0)
	alone, err := writeBackAlone(ctx, db, updates, s.fullKeys)
	if err != nil {
		return err
	}
	ideal := time.Duration(float64(s.fullKeys) * float64(s.latency) / float64(s.concurrency))
	fmt.Printf("%-44s %7d %9s %9v %8.3fx %12d %9.2fx\n", "store alone: the same write-back, no polling", s.fullKeys, "", alone.Round(time.Millisecond),
		float64(alone)/float64(ideal), rt.n.Load(), float64(rt.n.Load())/(float64(s.fullKeys)/250))
	bound := max(ideal, alone)
	fmt.Printf("full cycle vs its bound max(ideal, store alone) = %v: %.3fx\n", bound.Round(time.Millisecond), float64(full)/float64(bound))
	// The cycle also starts with recovery's reads and ends with the backups
	// count, which polls cannot overlap; on FerretDB v1 they read the keys.
	rot, err := rotation.New(client.Database(fmt.Sprintf("throughput_%d", s.fullKeys)), pool, rotation.Config{Owner: "bench"})
	if err != nil {
		return err
	}
	start := time.Now()
	if _, err := rot.Recover(ctx); err != nil {
		return err
	}
	if _, err := rot.BackupsAvailable(ctx); err != nil {
		return err
	}
	edges := time.Since(start)
	fmt.Printf("recovery's reads and the backups count alone, as in a process's first cycle: %v; full cycle vs max(ideal, store alone + them) = %v: %.3fx\n",
		edges.Round(time.Millisecond), max(ideal, alone+edges).Round(time.Millisecond), float64(full)/float64(max(ideal, alone+edges)))
	return nil
}

// callsLine says where the polling path's time went past the ideal: the
// time to its first upstream call, and each call's time as the checker saw
// it against the upstream's own time answering it (its latency included).
// At C calls in flight the cycle takes about first + N·call/C.
func callsLine(keys int, s settings, ideal, wall time.Duration, calls *callTimes, answering time.Duration) error {
	n := calls.n.Load()
	if n != int64(keys) {
		return fmt.Errorf("timed %d upstream calls for %d keys", n, keys)
	}
	first := time.Duration(calls.first.Load())
	call := calls.mean()
	inUpstream := answering / time.Duration(n)
	est := first + time.Duration(float64(keys)*float64(call)/float64(s.concurrency))
	fmt.Printf("  its calls: first after %v; %v a call as the checker saw it, %v of it in the upstream's handler (latency %v); first + N·call/C = %v (%.3fx ideal, wall %.3fx)\n",
		first.Round(time.Millisecond), call.Round(10*time.Microsecond), inUpstream.Round(10*time.Microsecond), s.latency,
		est.Round(time.Millisecond), float64(est)/float64(ideal), float64(wall)/float64(ideal))
	return nil
}

// writeBackAlone sends the full cycle's update commands again, one at a
// time and statement for statement, to db (a copy of the keys as the cycle
// found them), and times them. Each key must be updated once, as in the
// cycle.
func writeBackAlone(ctx context.Context, db *mongo.Database, updates []bson.Raw, n int) (time.Duration, error) {
	cmds := make([][]mongo.WriteModel, 0, len(updates))
	for _, u := range updates {
		stmts, ok := u.Lookup("updates").ArrayOK()
		if !ok {
			return 0, fmt.Errorf("an update command without its statements: %v", u)
		}
		vals, err := stmts.Values()
		if err != nil {
			return 0, err
		}
		models := make([]mongo.WriteModel, 0, len(vals))
		for _, v := range vals {
			st, ok := v.DocumentOK()
			if !ok {
				return 0, fmt.Errorf("an update statement that is not a document: %v", v)
			}
			models = append(models, mongo.NewUpdateOneModel().SetFilter(st.Lookup("q").Document()).SetUpdate(st.Lookup("u").Document()))
		}
		cmds = append(cmds, models)
	}
	keys := db.Collection(pool.KeysCollection)
	var modified int64
	start := time.Now()
	for _, models := range cmds {
		res, err := keys.BulkWrite(ctx, models, options.BulkWrite().SetOrdered(false))
		if err != nil {
			return 0, fmt.Errorf("update: %w", err)
		}
		modified += res.ModifiedCount
	}
	d := time.Since(start)
	if modified != int64(n) {
		return d, fmt.Errorf("the write-back alone updated %d keys, the cycle %d", modified, n)
	}
	return d, nil
}
