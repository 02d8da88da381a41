package checker

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/spendchecker/spendchecker/notify"
	"github.com/spendchecker/spendchecker/spend"
)

// PoolSummary counts one pool's cycle.
type PoolSummary struct {
	Pool           string
	Due            int // keys polled this cycle
	Checked        int // clear answers
	Failed         int // unclear answers or transport errors
	Unauthorized   int
	Over           int // over threshold (or rejected) and so to rotate
	Rotated        int
	AlreadyRotated int
	NoBackup       int
	// Held counts keys refused for their owner's personal budget and not
	// rotated: another key of the pool shares the user.
	Held         int
	RotateErrors int
	Recovered    int
	BackupsLeft  int64
	// BackupsUnknown: counting the backups failed; BackupsLeft means nothing.
	BackupsUnknown bool
	Errors         []string // one line each, for the summary
	// NoReading counts clear answers without a figure (one-api unlimited
	// tokens); LowestRemaining is the lowest balance read this cycle (the
	// remaining kind), in LowestCurrency.
	NoReading       int
	LowestRemaining *float64
	LowestCurrency  string
	// FailedBy counts the failed checks by cause, for the one outage line
	// per cycle; FailedExample is one of their errors.
	FailedBy      map[string]int
	FailedExample string
	// Events are what this cycle found worth a notification (docs/operating.md,
	// "Notifications"): rotations, keys left without a backup, rejections.
	Events []notify.Event
}

// Summary is a whole cycle.
type Summary struct {
	Pools    []PoolSummary
	Duration time.Duration
}

// Total adds the pools up.
func (s Summary) Total() PoolSummary {
	var t PoolSummary
	for _, p := range s.Pools {
		t.Due += p.Due
		t.Checked += p.Checked
		t.Failed += p.Failed
		t.Unauthorized += p.Unauthorized
		t.Over += p.Over
		t.Rotated += p.Rotated
		t.AlreadyRotated += p.AlreadyRotated
		t.NoBackup += p.NoBackup
		t.Held += p.Held
		t.RotateErrors += p.RotateErrors
		t.Recovered += p.Recovered
		t.BackupsLeft += p.BackupsLeft
		t.Errors = append(t.Errors, p.Errors...)
	}
	return t
}

// Clean reports a cycle where every due key was checked and every rotation
// that was needed happened.
func (s Summary) Clean() bool {
	t := s.Total()
	return t.Failed == 0 && t.NoBackup == 0 && t.RotateErrors == 0 && len(t.Errors) == 0
}

// String is the one-line summary for logs and systemd's STATUS=.
func (s Summary) String() string {
	t := s.Total()
	return fmt.Sprintf("checked %d, failed %d, over threshold %d, rotated %d, already rotated %d, no backup %d, backups left %d, in %s",
		t.Checked, t.Failed, t.Over, t.Rotated, t.AlreadyRotated, t.NoBackup, t.BackupsLeft, s.Duration.Round(time.Millisecond))
}

// remaining notes a balance reading.
func (s *PoolSummary) remaining(v float64, currency string) {
	if s.LowestRemaining == nil || v < *s.LowestRemaining {
		s.LowestRemaining, s.LowestCurrency = &v, currency
	}
}

// fail counts a failed check by its cause.
func (s *PoolSummary) fail(err error) {
	s.Failed++
	var (
		ra *spend.RetryAfterError
		hb *spend.HostBackoffError
		uc *spend.UnclearError
	)
	cause := "transport"
	switch {
	case errors.Is(err, errRejectedOnce):
		cause = "rejected_once"
	case errors.As(err, &hb):
		cause = "host_backing_off"
	case errors.As(err, &ra):
		cause = "retry_after"
	case errors.As(err, &uc):
		cause = "unclear_answer"
	}
	if s.FailedBy == nil {
		s.FailedBy = map[string]int{}
	}
	s.FailedBy[cause]++
	// The example is the first failure that is not the backoff's own.
	if s.FailedExample == "" || cause != "host_backing_off" && s.FailedBy["host_backing_off"] == s.Failed-1 {
		s.FailedExample = err.Error()
	}
}

// logFailures says once per pool and cycle that checks failed, by cause,
// instead of a line per key: an outage at 10,000 keys is one line.
func (c *Checker) logFailures(log *slog.Logger, ps PoolSummary) {
	if len(ps.FailedBy) == 0 {
		return
	}
	args := []any{"failed", ps.Failed, "due", ps.Due, "example", ps.FailedExample}
	for _, cause := range []string{"transport", "host_backing_off", "retry_after", "unclear_answer", "rejected_once"} {
		if n := ps.FailedBy[cause]; n > 0 {
			args = append(args, cause, n)
		}
	}
	log.Warn("spend checks failed; those keys are retried when due", args...)
}
