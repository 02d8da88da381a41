package checker

import (
	"context"
	"sync"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// pollEach calls poll on each document from docs, at most n at a time,
// taking them in the order they arrive, and returns once docs is closed or
// ctx has ended and every poll started has returned. After ctx ends no new
// poll starts; documents still in docs are left there, so their sender must
// stop on ctx too.
//
// n long-lived workers do the polls rather than a goroutine per key: each
// poll's call chain (HTTP client, JSON, BSON) outgrows a fresh goroutine's
// stack, and growing it again for every key cost over a tenth of the
// polling path's CPU.
func pollEach(ctx context.Context, n int, docs <-chan bson.Raw, poll func(bson.Raw)) {
	var wg sync.WaitGroup
	for range max(n, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case doc, ok := <-docs:
					// Both cases may be ready: a cancelled cycle starts no poll.
					if !ok || ctx.Err() != nil {
						return
					}
					poll(doc)
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	wg.Wait()
}
