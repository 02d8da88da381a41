package statuspage

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/spendchecker/spendchecker/checker"
)

// Cycle is one finished check cycle of this process, as the page lists it.
// Cycles are not stored: the daemon keeps the last few in memory (Ring).
type Cycle struct {
	At       time.Time     `json:"at"` // when it ended
	Duration time.Duration `json:"-"`
	// Result is "ok", "partial" (some keys not checked or not rotated)
	// or "error", as in spendchecker_cycles_total.
	Result         string   `json:"result"`
	Due            int      `json:"due"`
	Checked        int      `json:"checked"`
	Failed         int      `json:"failed"`
	Unauthorized   int      `json:"unauthorized"`
	Over           int      `json:"overThreshold"`
	Rotated        int      `json:"rotated"`
	AlreadyRotated int      `json:"alreadyRotated"`
	NoBackup       int      `json:"noBackup"`
	Held           int      `json:"held"`
	RotateErrors   int      `json:"rotateErrors"`
	Errors         []string `json:"errors,omitempty"`
}

// MarshalJSON writes the duration in seconds.
func (c Cycle) MarshalJSON() ([]byte, error) {
	type plain Cycle
	return json.Marshal(struct {
		plain
		Seconds float64 `json:"durationSeconds"`
	}{plain(c), c.Duration.Seconds()})
}

// CycleOf summarises a finished cycle ending at at.
func CycleOf(at time.Time, sum checker.Summary, err error) Cycle {
	t := sum.Total()
	c := Cycle{At: at.UTC(), Duration: sum.Duration, Result: "ok",
		Due: t.Due, Checked: t.Checked, Failed: t.Failed, Unauthorized: t.Unauthorized, Over: t.Over,
		Rotated: t.Rotated, AlreadyRotated: t.AlreadyRotated, NoBackup: t.NoBackup, Held: t.Held, RotateErrors: t.RotateErrors,
		Errors: t.Errors}
	switch {
	case err != nil:
		c.Result = "error"
		c.Errors = append(c.Errors, err.Error())
	case !sum.Clean():
		c.Result = "partial"
	}
	return c
}

// Ring keeps the last cycles; safe for concurrent use.
type Ring struct {
	mu   sync.Mutex
	buf  []Cycle
	next int
	full bool
}

// NewRing keeps the last n cycles (n >= 1).
func NewRing(n int) *Ring { return &Ring{buf: make([]Cycle, max(n, 1))} }

// Add records a cycle, dropping the oldest when full.
func (r *Ring) Add(c Cycle) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.buf[r.next] = c
	r.next = (r.next + 1) % len(r.buf)
	r.full = r.full || r.next == 0
}

// Recent returns the cycles kept, newest first; a nil Ring keeps none.
func (r *Ring) Recent() []Cycle {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.next
	if r.full {
		n = len(r.buf)
	}
	out := make([]Cycle, 0, n)
	for i := 1; i <= n; i++ {
		out = append(out, r.buf[(r.next-i+len(r.buf))%len(r.buf)])
	}
	return out
}
