package statuspage

import (
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/event"
)

// Reachability remembers since when the store has been unreachable: the
// page's reads report to it, and the daemon's driver does too (Observe),
// so "since" is when the store went away, not when someone first looked.
// Safe for concurrent use; the zero value is a reachable store.
type Reachability struct {
	mu    sync.Mutex
	since time.Time // zero: reachable
}

// Down records the store unreachable at at, unless it already was.
func (r *Reachability) Down(at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.since.IsZero() {
		r.since = at
	}
}

// Up records the store reachable.
func (r *Reachability) Up() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.since = time.Time{}
}

// Since returns since when the store has been unreachable, and false when
// it is reachable.
func (r *Reachability) Since() (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.since, !r.since.IsZero()
}

// Observe follows the driver's view of the servers: the store is down
// while no server is known to answer (every one Unknown), up once one is.
func (r *Reachability) Observe(now func() time.Time) *event.ServerMonitor {
	return &event.ServerMonitor{
		TopologyDescriptionChanged: func(e *event.TopologyDescriptionChangedEvent) {
			for _, s := range e.NewDescription.Servers {
				if s.Kind != "" && s.Kind != "Unknown" {
					r.Up()
					return
				}
			}
			r.Down(now())
		},
	}
}
