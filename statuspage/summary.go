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

// summarise is the Visitor that fills each pool's Summary and, when lists
// is set, keeps each pool's full list in it (not a pool whose keys could
// not all be read).
type summarise struct {
	NopVisitor
	cur   *tally
	lists map[string]*keyList
	prev  map[string]*keyList // the last read's, to size the new ones
	max   int
	list  *listBuilder
}

func (s *summarise) PoolStart(p *PoolView) {
	s.cur = newTally(TopKeys)
	if s.lists != nil {
		var arena int
		if l := s.prev[p.Name]; l != nil {
			arena = len(l.arena)
		}
		s.list = newListBuilder(s.max, arena)
	}
}

func (s *summarise) Key(_ *PoolView, k KeyView) {
	s.cur.add(k)
	if s.list != nil {
		s.list.add(k)
	}
}

func (s *summarise) PoolEnd(p *PoolView) {
	p.Summary = s.cur.summary()
	if s.list != nil && !p.KeysUnknown {
		s.lists[p.Name] = s.list.done()
	}
	s.list = nil
}

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
	// and no cycle ends (default 1 minute). A whole Every with no GET
	// drops the full lists.
	Every time.Duration
	// MaxListBytes caps what one pool's full list may take (default 24
	// MiB: about 250,000 keys with ids of the proxy's length). A pool past
	// it is not listed, and its list pages say so.
	MaxListBytes int

	mu   sync.Mutex
	last *Snapshot
	at   time.Time // when last was read, by this process's clock
	busy bool
	// wanted: the page was asked for since the last read began; kick
	// wakes Wait when it was not.
	wanted atomic.Bool
	once   sync.Once
	kick   chan struct{}
	// lists is each pool's full list, read with last; nil before the
	// first read and once dropped for nobody looking.
	lists map[string]*keyList
	// tick, in tests, stands for the Every ticker.
	tick <-chan time.Time
}

// DefaultMaxListBytes is MaxListBytes's default.
const DefaultMaxListBytes = 24 << 20

func (m *Summaries) maxListBytes() int { return cmp.Or(max(m.MaxListBytes, 0), DefaultMaxListBytes) }

func (m *Summaries) kicks() chan struct{} {
	m.once.Do(func() { m.kick = make(chan struct{}, 1) })
	return m.kick
}

func (m *Summaries) every() time.Duration { return cmp.Or(m.Every, time.Minute) }

// Want records that the page was asked for: a summary is read after each
// cycle only while someone asks, and at once when there is none, its lists
// were dropped, or it is older than Every. With no page open nothing is
// read.
func (m *Summaries) Want() {
	m.wanted.Store(true)
	m.mu.Lock()
	stale := !m.busy && (m.last == nil || m.lists == nil || time.Since(m.at) > m.every())
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
// page has been asked for since the last read. A whole Every with no GET
// drops the full lists: they are kept only while the page is looked at.
// False when ctx ends.
func (m *Summaries) Wait(ctx context.Context, due <-chan struct{}) bool {
	ticks := m.tick
	if ticks == nil {
		t := time.NewTicker(m.every())
		defer t.Stop()
		ticks = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return false
		case <-m.kicks():
			return true
		case <-due:
			if m.wanted.Load() {
				return true
			}
		case <-ticks:
			if m.wanted.Load() {
				return true
			}
			m.mu.Lock()
			m.lists = nil
			m.mu.Unlock()
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
	src.Unsorted = true
	m.mu.Lock()
	// The last lists stay served until the new ones are read.
	sv := &summarise{lists: map[string]*keyList{}, prev: m.lists, max: m.maxListBytes()}
	m.mu.Unlock()
	snap := src.Visit(ctx, sv)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.last, m.lists, m.at, m.busy = snap, sv.lists, time.Now(), false
	return true
}

// kept is the last summary and its lists, as one read.
func (m *Summaries) kept() (*Snapshot, map[string]*keyList) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last, m.lists
}

// KeptBytes is what the full lists kept take in memory.
func (m *Summaries) KeptBytes() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, l := range m.lists {
		n += l.bytes()
	}
	return n
}
