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
func WriteText(out io.Writer, s *Snapshot) {
	now := s.GeneratedAt
	if s.Store != nil {
		fmt.Fprintf(out, "%s (%s): %s\n", unknown(s), when(s.Store.Since, now), s.Store.Error)
	}
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
	for _, p := range s.Pools {
		left := "unknown"
		if p.BackupsLeft != nil {
			left = fmt.Sprint(*p.BackupsLeft)
		}
		fmt.Fprintf(out, "\npool %s (%s): %s, backups left %s\n", p.Name, p.KeysCollection, rotatesAt(p), left)
		if p.KeysUnknown && len(p.Keys) == 0 {
			// Not an empty pool: keys that could not be read.
			fmt.Fprintf(out, "keys %s\n", unknown(s))
			if p.Error != "" && p.Error != unreachable {
				fmt.Fprintf(out, "error: %s\n", p.Error)
			}
			continue
		}
		tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "KEY\tAPI KEY\tSTATUS\tSPEND\tBUDGET\t% THRESHOLD\tLAST CHECK\tNEXT CHECK\tRATE\tTHRESHOLD AT RATE")
		for _, k := range p.Keys {
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
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.APIKeyMasked, st,
				reading(k), usdp(k.Budget), pct(k.PercentOfThreshold), last, next, rate(k.RatePerHour), eta(k, now))
		}
		_ = tw.Flush()
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
}
