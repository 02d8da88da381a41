package statuspage

import (
	"cmp"
	"container/heap"
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// TopKeys is how many keys the page lists first: those closest to their
// threshold (or, in a balance pool, to the minimum remaining).
const TopKeys = 50

// KeySummary is what needs attention in a pool, counted over every key in
// one read: the keys by band and the TopKeys closest to rotating.
type KeySummary struct {
	Keys int // every key read
	// Over: at or past the threshold (or at or below the minimum
	// remaining); Near90 and Near80: at 90–100 % and 80–90 % of the
	// threshold. Rejected: the upstream refused the key (401/403);
	// Failing: its last check gave no spend acted on for another reason
	// (held for a shared user's budget); an unlimited token's answer
	// without a figure is neither.
	Over, Near90, Near80, Rejected, Failing int
	// Top is the keys closest to rotating, closest first.
	Top []KeyView
}

// tally counts keys into a KeySummary, keeping the top keys in a bounded
// heap: its memory does not grow with the pool.
type tally struct {
	s   KeySummary
	top topHeap
	n   int
}

func newTally(n int) *tally { return &tally{n: n} }

func (t *tally) add(k KeyView) {
	t.s.Keys++
	switch {
	case k.Over:
		t.s.Over++
	case k.PercentOfThreshold != nil && *k.PercentOfThreshold >= 90:
		t.s.Near90++
	case k.PercentOfThreshold != nil && *k.PercentOfThreshold >= 80:
		t.s.Near80++
	}
	switch {
	case k.CheckError == "unauthorized":
		t.s.Rejected++
	case k.CheckError != "" && !k.NoReading:
		t.s.Failing++
	}
	if t.n <= 0 {
		return
	}
	if len(t.top) < t.n {
		heap.Push(&t.top, k)
		return
	}
	if closer(k, t.top[0]) {
		t.top[0] = k
		heap.Fix(&t.top, 0)
	}
}

// summary returns the counts and the top keys, closest first.
func (t *tally) summary() *KeySummary {
	s := t.s
	s.Top = slices.Clone([]KeyView(t.top))
	slices.SortFunc(s.Top, func(a, b KeyView) int {
		switch {
		case closer(a, b):
			return -1
		case closer(b, a):
			return 1
		}
		return 0
	})
	return &s
}

// closeness ranks a key: over first, then by share of the threshold (in a
// balance pool, by what remains, least first); unknown last.
func closeness(k KeyView) (rank int, v float64) {
	switch {
	case k.Over:
		return 3, 0
	case k.PercentOfThreshold != nil:
		return 2, *k.PercentOfThreshold
	case k.Remaining != nil:
		return 2, -*k.Remaining
	}
	return 1, 0
}

// closer reports whether a is closer to rotating than b; ties go to the
// smaller id, so the order is the same on every read.
func closer(a, b KeyView) bool {
	ra, va := closeness(a)
	rb, vb := closeness(b)
	if c := cmp.Compare(ra, rb); c != 0 {
		return c > 0
	}
	if c := cmp.Compare(va, vb); c != 0 {
		return c > 0
	}
	return a.ID < b.ID
}

// topHeap is a min-heap by closeness: its root is the key to drop first.
type topHeap []KeyView

func (h topHeap) Len() int           { return len(h) }
func (h topHeap) Less(i, j int) bool { return closer(h[j], h[i]) }
func (h topHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *topHeap) Push(x any)        { *h = append(*h, x.(KeyView)) }
func (h *topHeap) Pop() any {
	old := *h
	k := old[len(old)-1]
	*h = old[:len(old)-1]
	return k
}

// summarise is the Visitor that fills each pool's Summary.
type summarise struct {
	NopVisitor
	cur *tally
}

func (s *summarise) PoolStart(*PoolView)        { s.cur = newTally(TopKeys) }
func (s *summarise) Key(_ *PoolView, k KeyView) { s.cur.add(k) }
func (s *summarise) PoolEnd(p *PoolView)        { p.Summary = s.cur.summary() }

// Summarise reads the snapshot with each pool's Summary and no key list:
// one streamed read of every key, in bounded memory.
func (s Source) Summarise(ctx context.Context) *Snapshot {
	s.Unsorted = true
	return s.Visit(ctx, &summarise{})
}

// Summaries keeps the last summary the daemon read, so that the page
// renders it without reading the store: on FerretDB v1, which filters and
// sorts in memory, one read of 100,000 keys takes far longer than a page
// may (BENCHMARKS.md, "Status surfaces at 100,000 keys"). Safe for concurrent use.
type Summaries struct {
	Source Source
	// Timeout bounds one refresh (default 5 minutes).
	Timeout time.Duration
	// Every is how old a summary may grow while the page is looked at
	// and no cycle ends (default 1 minute).
	Every time.Duration

	mu   sync.Mutex
	last *Snapshot
	at   time.Time // when last was read, by this process's clock
	busy bool
	// wanted: the page was asked for since the last read began; kick
	// wakes Wait when it was not.
	wanted atomic.Bool
	once   sync.Once
	kick   chan struct{}
}

func (m *Summaries) kicks() chan struct{} {
	m.once.Do(func() { m.kick = make(chan struct{}, 1) })
	return m.kick
}

func (m *Summaries) every() time.Duration { return cmp.Or(m.Every, time.Minute) }

// Want records that the page was asked for: a summary is read after each
// cycle only while someone asks, and at once when there is none or it is
// older than Every. With no page open nothing is read.
func (m *Summaries) Want() {
	m.wanted.Store(true)
	m.mu.Lock()
	stale := !m.busy && (m.last == nil || time.Since(m.at) > m.every())
	m.mu.Unlock()
	if stale {
		select {
		case m.kicks() <- struct{}{}:
		default:
		}
	}
}

// Wait returns when a summary should be read: at once when a Want found
// none or a stale one, or on due (a cycle ended) or every Every once the
// page has been asked for since the last read. False when ctx ends.
func (m *Summaries) Wait(ctx context.Context, due <-chan struct{}) bool {
	every := m.every()
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-m.kicks():
			return true
		case <-due:
		case <-t.C:
			t.Reset(every)
		}
		if m.wanted.Load() {
			return true
		}
	}
}

// Last returns the last summary, or nil before the first refresh ends.
func (m *Summaries) Last() *Snapshot {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last
}

// Refresh reads a new summary, unless one is being read: it reports
// whether it read one.
func (m *Summaries) Refresh(ctx context.Context) bool {
	m.mu.Lock()
	if m.busy {
		m.mu.Unlock()
		return false
	}
	m.busy = true
	m.mu.Unlock()
	m.wanted.Store(false)
	timeout := m.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	src := m.Source
	src.Cycles = nil // the page reads the cycles live
	snap := src.Summarise(ctx)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.last, m.at, m.busy = snap, time.Now(), false
	return true
}
