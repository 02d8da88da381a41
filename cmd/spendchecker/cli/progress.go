package cli

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"go.mongodb.org/mongo-driver/v2/event"

	"github.com/spendchecker/spendchecker/lease"
)

// progress says whether the daemon is making progress (docs/operating.md, "Deploying"):
// it feeds the systemd watchdog and answers /healthz. While the daemon waits
// for the store at start, each attempt is a sign of life; between cycles the
// scheduler is idle and healthy; during a cycle every upstream answer and
// every store reply (lease traffic aside, since it runs on its own) is one.
// A cycle with no sign of life for the stall limit is wedged: the watchdog
// goes hungry and /healthz fails, so systemd or the kubelet restarts the
// process (a rotation cut short is completed by the next recovery).
type progress struct {
	clock clockwork.Clock
	stall time.Duration

	mu      sync.Mutex
	phase   string // "booting", "running", "stopping"
	inCycle bool
	last    time.Time
}

// stallLimit is the longest quiet spell a live cycle has: an upstream
// request (its timeout plus the longest retry wait) or a write-back command
// (30 s) take well under it.
func stallLimit(requestTimeout time.Duration) time.Duration {
	return max(2*time.Minute, 4*requestTimeout)
}

func newProgress(clock clockwork.Clock, stall time.Duration) *progress {
	return &progress{clock: clock, stall: stall, phase: "booting", last: clock.Now()}
}

func (p *progress) set(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f()
	p.last = p.clock.Now()
}

// beat records a sign of life.
func (p *progress) beat()       { p.set(func() {}) }
func (p *progress) running()    { p.set(func() { p.phase = "running" }) }
func (p *progress) stopping()   { p.set(func() { p.phase = "stopping" }) }
func (p *progress) cycleStart() { p.set(func() { p.inCycle = true }) }
func (p *progress) cycleEnd()   { p.set(func() { p.inCycle = false }) }

// healthy reports progress, or why there is none.
func (p *progress) healthy() (bool, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	quiet := p.clock.Since(p.last)
	switch {
	case p.phase == "stopping":
		return false, "shutting down"
	case p.phase == "booting" && quiet >= p.stall:
		return false, fmt.Sprintf("start-up stuck: no store attempt finished for %s", quiet.Round(time.Second))
	case p.inCycle && quiet >= p.stall:
		return false, fmt.Sprintf("cycle wedged: no progress for %s", quiet.Round(time.Second))
	}
	return true, ""
}

// feedWatchdog sends WATCHDOG=1 every `every` while p is healthy, and a
// STATUS= saying why when it is not, until done closes.
func feedWatchdog(clock clockwork.Clock, every time.Duration, p *progress, notify func(string), done <-chan struct{}) {
	t := clock.NewTicker(every)
	defer t.Stop()
	for {
		if ok, why := p.healthy(); ok {
			notify("WATCHDOG=1")
		} else {
			notify("STATUS=not feeding the watchdog: " + why)
		}
		select {
		case <-done:
			return
		case <-t.Chan():
		}
	}
}

// beatTransport counts every finished upstream request as a sign of life.
type beatTransport struct {
	base http.RoundTripper
	beat func()
}

func (t beatTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r)
	t.beat()
	return resp, err
}

// storeMonitor counts every finished store command on a collection other
// than the lease's as a sign of life.
func storeMonitor(beat func()) *event.CommandMonitor {
	var ours sync.Map
	done := func(id int64) {
		if _, ok := ours.LoadAndDelete(id); ok {
			beat()
		}
	}
	return &event.CommandMonitor{
		Started: func(_ context.Context, e *event.CommandStartedEvent) {
			coll, _ := e.Command.Lookup(e.CommandName).StringValueOK()
			if e.CommandName == "getMore" {
				coll, _ = e.Command.Lookup("collection").StringValueOK()
			}
			if coll != "" && coll != lease.Collection {
				ours.Store(e.RequestID, struct{}{})
			}
		},
		Succeeded: func(_ context.Context, e *event.CommandSucceededEvent) { done(e.RequestID) },
		Failed:    func(_ context.Context, e *event.CommandFailedEvent) { done(e.RequestID) },
	}
}
