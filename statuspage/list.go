package statuspage

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxQueryValue bounds a pool name or an after id on the page's URL: the
// longest id a store keeps is far shorter.
const maxQueryValue = 1024

// checkQuery refuses a page's query that could name no pool or key: one
// line, for a 400.
func checkQuery(q url.Values) error {
	for _, name := range []string{"pool", "after"} {
		vs := q[name]
		if len(vs) > 1 {
			return fmt.Errorf("bad %s: given more than once", name)
		}
		if len(vs) == 0 {
			continue
		}
		switch v := vs[0]; {
		case len(v) > maxQueryValue:
			return fmt.Errorf("bad %s: longer than %d bytes", name, maxQueryValue)
		case !utf8.ValidString(v):
			return fmt.Errorf("bad %s: not valid UTF-8", name)
		case strings.ContainsFunc(v, unicode.IsControl):
			return fmt.Errorf("bad %s: holds a control character", name)
		}
	}
	return nil
}

// list is one page of a pool's keys after the id after: from the list the
// daemon keeps when there is one, else read from the store.
func (p *Page) list(ctx context.Context, name, after string) (*Snapshot, *listView, bool) {
	i := slices.IndexFunc(p.Source.Pools, func(q Pool) bool { return q.Name == name })
	if i < 0 {
		return nil, nil, false
	}
	if p.Summaries == nil {
		snap, lv := p.readList(ctx, p.Source.Pools[i], after)
		return snap, lv, true
	}
	snap, lv := p.keptList(ctx, p.Source.Pools[i], after)
	return snap, lv, true
}

// keptList is a page of the pool's list kept with the daemon's summary,
// as of that read: it reads no key, only the lease.
func (p *Page) keptList(ctx context.Context, pool Pool, after string) (*Snapshot, *listView) {
	p.Summaries.Want()
	last, lists := p.Summaries.kept()
	snap := &Snapshot{GeneratedAt: p.now(), Lease: LeaseView{Name: p.Source.LeaseName}}
	pv := PoolView{Name: pool.Name, KeysCollection: pool.Keys.Name(), Threshold: pool.Threshold, MinRemaining: pool.MinRemaining, Keys: []KeyView{}}
	lv := &listView{Pool: pool.Name, After: after}
	r := &reader{}
	if p.Source.Leases != nil {
		snap.Lease = readLease(ctx, p.Source.Leases, p.Source.LeaseName, r)
		p.Source.markDown(snap, r)
	}
	l := lists[pool.Name]
	switch {
	case last == nil || lists == nil:
		lv.Pending, lv.Note = true, "being read"
	case l == nil:
		// The last read could not read the pool's keys: say why, as the
		// summary does.
		snap.SummaryAt = last.GeneratedAt
		pv.KeysUnknown = true
		if j := slices.IndexFunc(last.Pools, func(q PoolView) bool { return q.Name == pool.Name }); j >= 0 {
			pv.Error = last.Pools[j].Error
		}
		if pv.Error = cmp.Or(pv.Error, "not read"); pv.Error != unreachable || snap.Store == nil {
			snap.Errors = append(snap.Errors, fmt.Sprintf("pool %s: keys at the last read: %s", pool.Name, pv.Error))
		}
	case l.over:
		snap.SummaryAt = last.GeneratedAt
		lv.Note = fmt.Sprintf("The full list of pool %s is not kept: its %d keys take more than %s (`spendchecker status` lists every key).",
			pool.Name, l.keys, size(p.Summaries.maxListBytes()))
	default:
		snap.SummaryAt = last.GeneratedAt
		var from int
		pv.Keys, from, lv.Next = l.page(after, cmp.Or(max(p.PageSize, 0), 500))
		lv.From, lv.To, lv.Total = from+1, from+len(pv.Keys), l.len()
	}
	snap.Pools = []PoolView{pv}
	return snap, lv
}

// size is n bytes, readably.
func size(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
}

// readList reads one page of a pool's keys after the _id after from the
// store: an index range on MongoDB, a scan of the keys on FerretDB v1.
func (p *Page) readList(ctx context.Context, pool Pool, after string) (*Snapshot, *listView) {
	name := pool.Name
	size := cmp.Or(max(p.PageSize, 0), 500)
	snap := &Snapshot{GeneratedAt: p.now(), Lease: LeaseView{Name: p.Source.LeaseName}}
	pv := PoolView{Name: pool.Name, KeysCollection: pool.Keys.Name(), Threshold: pool.Threshold, MinRemaining: pool.MinRemaining, Keys: []KeyView{}}
	r := &reader{}
	if p.Source.Leases != nil {
		snap.Lease = readLease(ctx, p.Source.Leases, p.Source.LeaseName, r)
	}
	lv := &listView{Pool: name, After: after}
	err := r.read(func() error {
		return ScanPage(ctx, pool.Keys, pool.Threshold, pool.MinRemaining, after, size+1, func(k KeyView) { pv.Keys = append(pv.Keys, k) })
	})
	if len(pv.Keys) > size {
		pv.Keys = pv.Keys[:size]
		lv.Next = pv.Keys[size-1].ID
	}
	switch {
	case err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
		// A slow store, not an unreachable one: say so, and leave the
		// daemon's reachability alone.
		pv.KeysUnknown, pv.Error = true, fmt.Sprintf("not read within %s: the store is too slow for this page (`spendchecker status` lists every key)", p.timeout())
		snap.Errors = append(snap.Errors, fmt.Sprintf("pool %s: %s", name, pv.Error))
	case err != nil:
		pv.KeysUnknown, pv.Error = true, r.line(err)
		if pv.Error != unreachable {
			snap.Errors = append(snap.Errors, fmt.Sprintf("pool %s: %s", name, pv.Error))
		}
		(&Source{Reachability: p.Source.Reachability}).markDown(snap, r)
	}
	snap.Pools = []PoolView{pv}
	return snap, lv
}
