package main

import (
	"net/http"
	"sync/atomic"
	"time"
)

// callTimes times the checker's upstream calls as the checker sees them,
// from sending the request to the response's headers (the bodies are a few
// hundred bytes): beside the upstream's own answering time it tells where
// a call's time goes past the upstream's latency.
type callTimes struct {
	next  http.RoundTripper
	since time.Time    // set before the cycle; first counts from it
	first atomic.Int64 // ns from since to the first call, 0 until one
	total atomic.Int64 // ns, summed over calls
	n     atomic.Int64
}

func (c *callTimes) RoundTrip(r *http.Request) (*http.Response, error) {
	start := time.Now()
	c.first.CompareAndSwap(0, int64(start.Sub(c.since)))
	resp, err := c.next.RoundTrip(r)
	c.total.Add(int64(time.Since(start)))
	c.n.Add(1)
	return resp, err
}

// reset starts counting afresh from now.
func (c *callTimes) reset() {
	c.since = time.Now()
	c.first.Store(0)
	c.total.Store(0)
	c.n.Store(0)
}

func (c *callTimes) mean() time.Duration {
	if n := c.n.Load(); n > 0 {
		return time.Duration(c.total.Load() / n)
	}
	return 0
}
