package statuspage

import (
	"bytes"
	"encoding/binary"
	"math"
	"slices"
	"sort"
	"time"
)

// keyList is a pool's keys as the full list shows them, by id, kept by
// the daemon beside its summary so that a page of the list reads no key:
// on FerretDB v1 any _id range scans the whole collection. It is compact
// and holds no pointer (the GC does not scan it): one fixed row per key,
// the ids and masked secrets in one byte arena, the few distinct
// statuses, check errors and currencies once each. Read-only once built.
type keyList struct {
	// chunks hold the rows as read, chunkRows each: a list that grows
	// never copies them (the read's peak stays near the list's size).
	chunks [][]listRow
	order  []uint32 // row numbers, by id
	arena  []byte
	words  []string
	// over is set when the pool's keys took more than the cap: keys counts
	// them, and none is kept.
	over bool
	keys int
}

// listRow is one key. Numbers unknown are NaN, times unknown noTime; times
// are Unix milliseconds (a stored date's precision).
type listRow struct {
	off                        uint32 // the id, then the masked secret, in the arena
	flags                      uint8
	status, checkErr, currency uint8 // into words; inArena: the next string in the arena
	value, budget, pct, rate   float64
	last, next, eta            int64
}

// rowSize is what one listRow takes, its place in order included.
const rowSize = 64 + 4

const chunkRows = 1024

const (
	flagRemaining = 1 << iota // value is what remains, not the spend
	flagOver
	flagNoReading
)

const (
	noTime  = math.MinInt64
	inArena = math.MaxUint8 // words is full: the string is in the arena
)

// listBuilder builds a keyList under a cap on its bytes.
type listBuilder struct {
	l     keyList
	max   int
	index map[string]uint8
}

// newListBuilder sizes the arena for hint bytes (the last read's), so
// that a pool of the same size does not grow it.
func newListBuilder(maxBytes, hint int) *listBuilder {
	b := &listBuilder{max: maxBytes, index: map[string]uint8{}}
	if hint <= maxBytes {
		// A little room to grow: a pool a few keys larger does not double.
		b.l.arena = make([]byte, 0, hint+hint/32)
	}
	return b
}

func (b *listBuilder) add(k KeyView) {
	b.l.keys++
	if b.l.over {
		return
	}
	r := listRow{off: uint32(len(b.l.arena)), value: math.NaN(), budget: nan(k.Budget), pct: nan(k.PercentOfThreshold), rate: nan(k.RatePerHour),
		last: millis(k.LastCheck), next: millis(k.NextCheck), eta: millis(k.ThresholdAt)}
	switch {
	case k.Remaining != nil:
		r.flags |= flagRemaining
		r.value = *k.Remaining
	case k.Spend != nil:
		r.value = *k.Spend
	}
	if k.Over {
		r.flags |= flagOver
	}
	if k.NoReading {
		r.flags |= flagNoReading
	}
	b.str(k.ID)
	b.str(k.APIKeyMasked)
	r.status, r.checkErr, r.currency = b.word(k.Status), b.word(k.CheckError), b.word(k.Currency)
	if len(b.l.chunks) == 0 || len(b.l.chunks[len(b.l.chunks)-1]) == chunkRows {
		b.l.chunks = append(b.l.chunks, make([]listRow, 0, chunkRows))
	}
	last := &b.l.chunks[len(b.l.chunks)-1]
	*last = append(*last, r)
	if len(b.l.arena) > math.MaxUint32 || b.l.keys*rowSize+len(b.l.arena) > b.max {
		// Not kept at all: a list cut at the cap would be cut in the
		// store's order, not by id.
		b.l.over, b.l.chunks, b.l.arena, b.l.words = true, nil, nil, nil
	}
}

func (b *listBuilder) str(s string) {
	b.l.arena = binary.AppendUvarint(b.l.arena, uint64(len(s)))
	b.l.arena = append(b.l.arena, s...)
}

// word is s's index in words, adding it; past 255 distinct values s goes
// to the arena after the id and the mask.
func (b *listBuilder) word(s string) uint8 {
	if i, ok := b.index[s]; ok {
		return i
	}
	if len(b.l.words) == inArena {
		b.str(s)
		return inArena
	}
	i := uint8(len(b.l.words))
	b.index[s] = i
	b.l.words = append(b.l.words, s)
	return i
}

// done sorts the list by id, giving back what growing it left unused.
func (b *listBuilder) done() *keyList {
	l := &b.l
	if l.over {
		return l
	}
	if cap(l.arena) > len(l.arena)+len(l.arena)/16 {
		l.arena = slices.Clone(l.arena)
	}
	l.order = make([]uint32, 0, l.keys)
	for n := range uint32(l.keys) {
		l.order = append(l.order, n)
	}
	slices.SortFunc(l.order, func(a, b uint32) int { return bytes.Compare(l.idOf(l.at(a)), l.idOf(l.at(b))) })
	return l
}

// len is how many keys the list holds.
func (l *keyList) len() int { return len(l.order) }

// at is row number n, in the order read.
func (l *keyList) at(n uint32) *listRow { return &l.chunks[n/chunkRows][n%chunkRows] }

// row is the i-th row by id.
func (l *keyList) row(i int) *listRow { return l.at(l.order[i]) }

// bytes is what the list takes in memory.
func (l *keyList) bytes() int {
	return len(l.chunks)*chunkRows*(rowSize-4) + cap(l.order)*4 + cap(l.arena)
}

// idOf is r's id, in the arena.
func (l *keyList) idOf(r *listRow) []byte {
	b := l.arena[r.off:]
	n, w := binary.Uvarint(b)
	return b[w : w+int(n)]
}

// after is the index of the first key whose id sorts after id.
func (l *keyList) after(id string) int {
	return sort.Search(l.len(), func(i int) bool { return bytes.Compare(l.idOf(l.row(i)), []byte(id)) > 0 })
}

// key is the i-th key by id as the page shows it.
func (l *keyList) key(i int) KeyView {
	r := l.row(i)
	b := l.arena[r.off:]
	next := func() string {
		n, w := binary.Uvarint(b)
		s := string(b[w : w+int(n)])
		b = b[w+int(n):]
		return s
	}
	k := KeyView{ID: next(), APIKeyMasked: next(), Over: r.flags&flagOver != 0, NoReading: r.flags&flagNoReading != 0,
		Budget: ptr(r.budget), PercentOfThreshold: ptr(r.pct), RatePerHour: ptr(r.rate),
		LastCheck: at(r.last), NextCheck: at(r.next), ThresholdAt: at(r.eta)}
	word := func(i uint8) string {
		if i == inArena {
			return next()
		}
		return l.words[i]
	}
	k.Status, k.CheckError, k.Currency = word(r.status), word(r.checkErr), word(r.currency)
	if r.flags&flagRemaining != 0 {
		k.Remaining = ptr(r.value)
	} else {
		k.Spend = ptr(r.value)
	}
	return k
}

// page is up to n keys after the id after, and the id to continue after
// ("" on the last page); from is the index of the first.
func (l *keyList) page(after string, n int) (keys []KeyView, from int, next string) {
	from = 0
	if after != "" {
		from = l.after(after)
	}
	to := min(l.len(), from+n)
	keys = make([]KeyView, 0, to-from)
	for i := from; i < to; i++ {
		keys = append(keys, l.key(i))
	}
	if to < l.len() {
		next = keys[len(keys)-1].ID
	}
	return keys, from, next
}

func nan(v *float64) float64 {
	if v == nil {
		return math.NaN()
	}
	return *v
}

func ptr(v float64) *float64 {
	if math.IsNaN(v) {
		return nil
	}
	return &v
}

func millis(t *time.Time) int64 {
	if t == nil {
		return noTime
	}
	return t.UnixMilli()
}

func at(ms int64) *time.Time {
	if ms == noTime {
		return nil
	}
	t := time.UnixMilli(ms).UTC()
	return &t
}
