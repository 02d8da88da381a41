package statuspage

import (
	"bufio"
	"cmp"
	"context"
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/spendchecker/spendchecker/rotation/history"
)

//go:embed page.html
var pageHTML string

var page = template.Must(template.New("page").Funcs(template.FuncMap{
	"usd":     usd,
	"usdp":    func(v *float64) string { return usdp(v) },
	"reading": reading,
	"rotates": rotatesAt,
	"spentAt": RecordReading,
	"pct":     pct,
	"bar":     bar,
	"level":   level,
	"ago":     ago,
	"until":   until,
	"when":    when,
	"rate":    rate,
	"eta":     eta,
	"seconds": func(d time.Duration) string { return d.Round(time.Millisecond).String() },
	"utc":     func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
	"join":    strings.Join,
	"deref":   func(v *int64) int64 { return *v },
	"rows":    rows,
	"keyRows": keyRows,
	"unknown": unknown,
	"sectionErrors": func(s *Snapshot) []string {
		if s.Store != nil {
			return s.Errors[1:] // the first says the store is unreachable
		}
		return s.Errors
	},
}).Parse(pageHTML))

// unknown says why a section shows nothing: not that it is empty.
func unknown(s *Snapshot) string {
	if s.Store != nil {
		return "unknown: store unreachable since " + s.Store.Since.Format("2006-01-02 15:04:05 UTC")
	}
	return "unknown: could not be read (see above)"
}

// Page serves the status page. GET / leads with what needs attention in
// each pool (the keys by band, backups left, the lease) and the keys
// closest to their threshold; GET /?pool=NAME lists the pool's keys one
// page at a time, by _id (&after=ID for the next page).
type Page struct {
	Source Source
	// Summaries, when set, is what / renders and what the full list is
	// paged from: the daemon refreshes it after each cycle, so a GET reads
	// no key. Unset, each GET reads every key (streamed, in bounded
	// memory), and a list page its keys from the store.
	Summaries *Summaries
	// Instance is this replica's identity, shown beside the lease holder.
	Instance string
	// Refresh is how often the page reloads itself (default 15 s).
	Refresh time.Duration
	// Timeout bounds one read of the store (default 5 s).
	Timeout time.Duration
	// MaxRenders caps the GETs served at once (default 2): a GET waits up
	// to Wait (default 1 s) for one to finish, then is answered 503 with
	// Retry-After, so open tabs cannot slow the cycle.
	MaxRenders int
	Wait       time.Duration
	// PageSize is how many keys one page of the full list shows (default 500).
	PageSize int
	Logger   *slog.Logger

	once sync.Once
	sem  chan struct{}
}

// busyPage is the answer past the cap: it reloads itself in 5 s.
const busyPage = `<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" content="5"><title>spendchecker status: busy</title><p>The status page is busy; it reloads in 5 s.</p>`

// view is what the template renders.
type view struct {
	*Snapshot
	Instance       string
	RefreshSeconds int
	// List is set on a page of one pool's full key list.
	List *listView
}

// listView is one page of a pool's keys, by _id.
type listView struct {
	Pool, After, Next string
	// From and To number the keys shown of Total (set from a kept list).
	From, To, Total int
	// Pending: the list is being read; Note says why no key is shown.
	Pending bool
	Note    string
}

// ServeHTTP renders the page. It is read-only: anything but GET and HEAD
// is refused.
func (p *Page) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if err := checkQuery(r.URL.Query()); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	p.once.Do(func() { p.sem = make(chan struct{}, cmp.Or(max(p.MaxRenders, 0), 2)) })
	wait := time.NewTimer(cmp.Or(p.Wait, time.Second))
	select {
	case p.sem <- struct{}{}:
		wait.Stop()
		defer func() { <-p.sem }()
	case <-wait.C:
		// A browser does not act on Retry-After: the page reloads itself.
		w.Header().Set("Retry-After", "5")
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, busyPage)
		return
	case <-r.Context().Done():
		wait.Stop()
		return
	}
	refresh := cmp.Or(p.Refresh, 15*time.Second)
	ctx, cancel := context.WithTimeout(r.Context(), p.timeout())
	defer cancel()
	v := view{Instance: p.Instance, RefreshSeconds: max(1, int(refresh.Seconds()))}
	if name := r.URL.Query().Get("pool"); name != "" {
		var ok bool
		if v.Snapshot, v.List, ok = p.list(ctx, name, r.URL.Query().Get("after")); !ok {
			http.Error(w, "no such pool: "+name, http.StatusNotFound)
			return
		}
	} else {
		v.Snapshot = p.summary(ctx)
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	// The page runs no script and loads nothing: say so, so a browser
	// refuses anything else (docs/operating.md, "Status page").
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	// Straight to the connection: the page is never held whole.
	bw := bufio.NewWriterSize(w, 32<<10)
	if err := page.Execute(bw, v); err != nil && p.Logger != nil {
		p.Logger.Error("status page", "err", err)
	}
	_ = bw.Flush()
}

// summary is the snapshot / shows: the daemon's last summary with the
// lease and cycles read now, or a summary read now.
func (p *Page) summary(ctx context.Context) *Snapshot {
	if p.Summaries == nil {
		return p.Source.Summarise(ctx)
	}
	p.Summaries.Want()
	snap := &Snapshot{GeneratedAt: p.now(), Lease: LeaseView{Name: p.Source.LeaseName}, Pending: true}
	if last := p.Summaries.Last(); last != nil {
		c := *last
		// Times on the page count from now; the keys' from when read.
		c.GeneratedAt, c.SummaryAt = p.now(), last.GeneratedAt
		c.Store = nil
		if last.Store != nil {
			c.Errors = c.Errors[1:] // said again below if the store is still down
		}
		snap = &c
	}
	if p.Source.Leases != nil {
		// One small document: the holder shown is the current one, and an
		// unreachable store is said now, not at the next summary.
		r := &reader{}
		snap.Lease = readLease(ctx, p.Source.Leases, p.Source.LeaseName, r)
		p.Source.markDown(snap, r)
	}
	if p.Source.Cycles != nil {
		snap.Cycles = p.Source.Cycles.Recent()
	}
	return snap
}

func (p *Page) timeout() time.Duration { return cmp.Or(p.Timeout, 5*time.Second) }

func (p *Page) now() time.Time {
	if p.Source.Now != nil {
		return p.Source.Now().UTC()
	}
	return time.Now().UTC()
}

// Render writes the page for snap.
func Render(w interface{ Write([]byte) (int, error) }, snap *Snapshot, instance string, refresh time.Duration) error {
	return page.Execute(w, view{Snapshot: snap, Instance: instance, RefreshSeconds: max(1, int(refresh.Seconds()))})
}

// rows is the keys a pool's table lists: the closest to rotating on the
// summary, one page on the full list.
func rows(p PoolView) []KeyView {
	if p.Summary != nil {
		return p.Summary.Top
	}
	return p.Keys
}

// usd is a dollar figure; one that is not finite (an old record's "NaN")
// is unknown.
func usd(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "-"
	}
	return fmt.Sprintf("$%.2f", v)
}

func usdp(v *float64) string {
	if v == nil {
		return "-"
	}
	return usd(*v)
}

// reading is a key's figure: its spend, what remains of its account's
// balance, or that the upstream gave none (docs/providers.md, "Providers").
func reading(k KeyView) string {
	switch {
	case k.Remaining != nil:
		return remainingString(*k.Remaining, k.Currency)
	case k.NoReading:
		return "no reading (unlimited)"
	}
	return usdp(k.Spend)
}

func remainingString(v float64, currency string) string {
	if currency == "" {
		currency = "(currency unknown)"
	}
	return fmt.Sprintf("left %.2f %s", v, currency)
}

// rotatesAt says what rotates a pool's keys: its threshold, or for a
// balance pool the minimum remaining.
func rotatesAt(p PoolView) string {
	if p.MinRemaining != nil {
		return fmt.Sprintf("min remaining %.2f", *p.MinRemaining)
	}
	return "threshold " + usd(p.Threshold)
}

// RecordReading is what a rotation record read: the spend, or for a
// balance provider what remained (status page and `history`).
func RecordReading(h history.Record) string {
	if h.Remaining != nil {
		return remainingString(*h.Remaining, h.Currency)
	}
	return usd(h.Spend)
}

func pct(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", *v)
}

// bar is the width of a key's bar: its share of the threshold, 0–100.
func bar(v *float64) template.CSS {
	w := 0.0
	if v != nil {
		w = math.Max(0, math.Min(100, *v))
	}
	return template.CSS(fmt.Sprintf("width:%.1f%%", w))
}

// level names a bar's colour: ok under 80 % of the threshold, near up to
// it, over at or above it.
func level(k KeyView) string {
	switch {
	case k.Over:
		return "over"
	case k.PercentOfThreshold != nil && *k.PercentOfThreshold >= 80:
		return "near"
	case k.PercentOfThreshold == nil:
		return "unknown"
	}
	return "ok"
}

// human rounds a duration to what a person reads: seconds under a minute,
// minutes under an hour, then hours and minutes, then days and hours.
func human(d time.Duration) string {
	switch {
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		d = d.Round(time.Minute)
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	d = d.Round(time.Hour)
	return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
}

func ago(t *time.Time, now time.Time) string {
	if t == nil {
		return "never"
	}
	if d := now.Sub(*t); d >= 0 {
		return human(d) + " ago"
	}
	return "in " + human(t.Sub(now))
}

func until(t *time.Time, now time.Time) string {
	if t == nil || !t.After(now) {
		return "due"
	}
	return "in " + human(t.Sub(now))
}

func when(t time.Time, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return ago(&t, now)
}

func rate(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("$%.2f/h", *v)
}

func eta(k KeyView, now time.Time) string {
	switch {
	case k.Over:
		return "over"
	case k.ThresholdAt == nil:
		return "-"
	case !k.ThresholdAt.After(now):
		return "now"
	}
	return "in " + human(k.ThresholdAt.Sub(now))
}
