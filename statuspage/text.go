package statuspage

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spendchecker/spendchecker/checker"
)

// WriteText writes the snapshot as `spendchecker status` prints it: the
// lease, then per pool its backups left and a table of keys.
func WriteText(out io.Writer, s *Snapshot) { replay(s, NewTextWriter(out)) }

// replay hands a snapshot read whole to a Visitor, as Visit would.
func replay(s *Snapshot, v Visitor) {
	v.Lease(s)
	for i := range s.Pools {
		p := s.Pools[i]
		keys := p.Keys
		p.Keys = []KeyView{}
		v.PoolStart(&p)
		for _, k := range keys {
			v.Key(&p, k)
		}
		v.PoolEnd(&p)
	}
	v.End(s)
}

// TextWriter is the Visitor that writes `status` as it reads: one key at
// a time, never the pool whole.
type TextWriter struct {
	out   io.Writer
	snap  *Snapshot
	tw    *tabwriter.Writer
	rows  int
	store bool // the store's line is written
}

// NewTextWriter writes to out.
func NewTextWriter(out io.Writer) *TextWriter { return &TextWriter{out: out} }

// textBlock is how many rows are aligned together: the table is flushed
// (and its columns sized) once per block, so its buffer stays bounded.
const textBlock = 1000

// Lease writes the store's state and the lease.
func (t *TextWriter) Lease(s *Snapshot) {
	t.snap = s
	out, now := t.out, s.GeneratedAt
	t.storeLine()
	l := s.Lease
	switch {
	case l.Error == unreachable:
		fmt.Fprintf(out, "lease %s: unknown\n", l.Name)
	case l.Error != "":
		fmt.Fprintf(out, "lease %s: unknown: %s\n", l.Name, l.Error)
	case l.State == "never":
		fmt.Fprintf(out, "lease %s: never held\n", l.Name)
	case l.State == "released":
		fmt.Fprintf(out, "lease %s: released by %s (epoch %d)\n", l.Name, l.Holder, l.Epoch)
	default:
		renewed := "never"
		if l.RenewedAt != nil {
			renewed = now.Sub(*l.RenewedAt).Round(time.Second).String() + " ago"
		}
		fmt.Fprintf(out, "lease %s: held by %s, epoch %d, last renewed %s (by its clock)\n", l.Name, l.Holder, l.Epoch, renewed)
	}
}

func (t *TextWriter) storeLine() {
	if s := t.snap; s.Store != nil && !t.store {
		t.store = true
		fmt.Fprintf(t.out, "%s (%s): %s\n", unknown(s), when(s.Store.Since, s.GeneratedAt), s.Store.Error)
	}
}

// PoolStart writes the pool's line.
func (t *TextWriter) PoolStart(p *PoolView) {
	left := "unknown"
	if p.BackupsLeft != nil {
		left = fmt.Sprint(*p.BackupsLeft)
	}
	fmt.Fprintf(t.out, "\npool %s (%s): %s, backups left %s\n", p.Name, p.KeysCollection, rotatesAt(*p), left)
	t.tw, t.rows = nil, 0
}

func (t *TextWriter) header() {
	t.tw = tabwriter.NewWriter(t.out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(t.tw, "KEY\tAPI KEY\tSTATUS\tSPEND\tBUDGET\t% THRESHOLD\tLAST CHECK\tNEXT CHECK\tRATE\tTHRESHOLD AT RATE")
}

// Key writes one row.
func (t *TextWriter) Key(_ *PoolView, k KeyView) {
	if t.tw == nil {
		t.header()
	}
	now := t.snap.GeneratedAt
	st := k.Status
	switch {
	case k.CheckError == checker.CheckUserBudgetShared:
		st += " (held: over the budget of user " + k.BudgetUser + ", which other keys share)"
	case k.CheckError != "" && !k.NoReading:
		st += " (upstream: " + k.CheckError + ")" // rejected, and not rotated (--rotate-unauthorized=false)
	}
	last := "never"
	if k.LastCheck != nil {
		last = now.Sub(*k.LastCheck).Round(time.Second).String() + " ago"
	}
	next := "due"
	if k.NextCheck != nil && k.NextCheck.After(now) {
		next = "in " + k.NextCheck.Sub(now).Round(time.Second).String()
	}
	fmt.Fprintf(t.tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.APIKeyMasked, st,
		reading(k), usdp(k.Budget), pct(k.PercentOfThreshold), last, next, rate(k.RatePerHour), eta(k, now))
	if t.rows++; t.rows%textBlock == 0 {
		_ = t.tw.Flush()
	}
}

// PoolEnd writes the end of the table, the shared users and the error.
func (t *TextWriter) PoolEnd(p *PoolView) {
	out := t.out
	if t.tw == nil {
		if p.KeysUnknown {
			// Not an empty pool: keys that could not be read.
			fmt.Fprintf(out, "keys %s\n", unknown(t.snap))
			if p.Error != "" && p.Error != unreachable {
				fmt.Fprintf(out, "error: %s\n", p.Error)
			}
			return
		}
		t.header()
	}
	_ = t.tw.Flush()
	users := make([]string, 0, len(p.SharedBudgetUsers))
	for u := range p.SharedBudgetUsers {
		users = append(users, u)
	}
	sort.Strings(users)
	for _, u := range users {
		fmt.Fprintf(out, "user %s is shared by keys %s: a refusal of its personal budget holds them, no rotation (user-budget auto)\n",
			u, strings.Join(p.SharedBudgetUsers[u], ", "))
	}
	if p.Error != "" && p.Error != unreachable {
		fmt.Fprintf(out, "error: %s\n", p.Error)
	}
}

// End writes nothing: the snapshot is written.
func (t *TextWriter) End(*Snapshot) {}
