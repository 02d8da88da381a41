package main

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/rotation"
)

// memory: peak heap during one cycle, by key count, against reading the
// whole collection into memory (what a naive checker does).
func memory(ctx context.Context, s settings) error {
	ch, err := startChild(0, nil)
	if err != nil {
		return err
	}
	defer ch.stop()
	client := ch.client
	// What holds memory is the stream, the polls in flight and, in the full
	// cycle, the write-back's one batch: a dry run shows the first two alone.
	fmt.Printf("\n## peak heap during one cycle (concurrency 100, batches of 500; budget 64 MiB at 100k keys)\n")
	fmt.Printf("%8s %14s %10s %16s %10s %22s %10s\n", "keys", "ours dry run", "per key", "ours full cycle", "per key", "whole collection peak", "per key")
	for _, f := range strings.Split(s.memKeys, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return fmt.Errorf("bad -mem-keys entry %q", f)
		}
		db := client.Database(fmt.Sprintf("mem_%d", n))
		if err := seedKeys(ctx, db, n); err != nil {
			return err
		}
		if err := ch.indexIDs(db.Name()); err != nil {
			return err
		}
		chk, err := newChecker(db, ch.upstream, 100, 500, false, true, nil)
		if err != nil {
			return err
		}
		ours, err := peakHeap(func() error { _, err := cycleOnce(ctx, chk, n); return err })
		if err != nil {
			return err
		}
		full, err := newChecker(db, ch.upstream, 100, 500, false, false, nil)
		if err != nil {
			return err
		}
		oursFull, err := peakHeap(func() error { _, err := cycleOnce(ctx, full, n); return err })
		if err != nil {
			return err
		}
		naive, err := peakHeap(func() error {
			cur, err := db.Collection(pool.KeysCollection).Find(ctx, bson.M{rotation.FieldStatus: rotation.StatusHealthy})
			if err != nil {
				return err
			}
			var all []bson.M
			if err := cur.All(ctx, &all); err != nil {
				return err
			}
			runtime.KeepAlive(all)
			return nil
		})
		if err != nil {
			return err
		}
		fmt.Printf("%8d %10.1f MiB %8.0f B %12.1f MiB %8.0f B %18.1f MiB %8.0f B\n", n, mib(ours), float64(ours)/float64(n),
			mib(oursFull), float64(oursFull)/float64(n), mib(naive), float64(naive)/float64(n))
		_ = db.Drop(ctx)
	}
	return nil
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// peakHeap runs f and returns the highest heap in use above what was live
// before, sampled every millisecond.
func peakHeap(f func() error) (uint64, error) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			if m.HeapAlloc > peak.Load() {
				peak.Store(m.HeapAlloc)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	err := f()
	close(stop)
	<-done
	if p := peak.Load(); p > base {
		return p - base, err
	}
	return 0, err
}
