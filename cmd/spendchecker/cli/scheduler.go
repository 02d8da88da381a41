package cli

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/go-co-op/gocron/v2"
	"github.com/jonboulle/clockwork"

	"github.com/spendchecker/spendchecker/checker"
	"github.com/spendchecker/spendchecker/cmd/spendchecker/config"
)

// leader is what the daemon needs of the lease: gocron's gate, and a context
// that ends with the leadership so a running cycle stops starting work.
type leader interface {
	IsLeader(context.Context) error
	LeaderContext() (context.Context, bool)
}

// schedule is when cycles run and what is told of them.
type schedule struct {
	// Schedule is a cron expression (5 fields, or 6 with seconds); empty
	// means every Interval.
	Schedule string
	Interval time.Duration
	// Grace is how long a cycle in flight may run on after shutdown begins.
	Grace  time.Duration
	Leader leader
	Clock  clockwork.Clock
	Logger *slog.Logger
	// OnCycle receives each cycle's summary (for metrics and sd_notify).
	OnCycle func(checker.Summary, error)
	// OnSkip is called when a scheduled run found this replica not leading.
	OnSkip func()
	// OnStart is called when a cycle begins (OnCycle when it ends).
	OnStart func()
	// Started is called once the scheduler runs.
	Started func()
}

// cycler runs one check cycle (checker.Checker).
type cycler interface {
	Cycle(context.Context) (checker.Summary, error)
}

// runScheduled runs cycles on the schedule with gocron, never overlapping,
// only while leading, until ctx ends; then it lets a cycle in flight finish
// within the grace period and returns.
func runScheduled(ctx context.Context, c cycler, dc schedule) error {
	if dc.Clock == nil {
		dc.Clock = clockwork.NewRealClock()
	}
	if dc.Grace <= 0 {
		dc.Grace = config.DefaultShutdownGrace
	}
	log := dc.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var def gocron.JobDefinition
	if dc.Schedule != "" {
		def = gocron.CronJob(dc.Schedule, config.CronHasSeconds(dc.Schedule))
	} else {
		if dc.Interval <= 0 {
			return fmt.Errorf("daemon: interval must be positive")
		}
		def = gocron.DurationJob(dc.Interval)
	}
	s, err := gocron.NewScheduler(
		gocron.WithDistributedElector(dc.Leader),
		gocron.WithClock(dc.Clock),
		gocron.WithStopTimeout(dc.Grace+5*time.Second),
	)
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	// hardStop ends cycles that outlive the grace period after shutdown.
	hardStop, stopNow := context.WithCancel(context.WithoutCancel(ctx))
	defer stopNow()
	var running atomic.Bool
	task := func() {
		lctx, ok := dc.Leader.LeaderContext()
		if !ok {
			if dc.OnSkip != nil {
				dc.OnSkip()
			}
			return
		}
		running.Store(true)
		defer running.Store(false)
		if dc.OnStart != nil {
			dc.OnStart()
		}
		cctx, cancel := context.WithCancel(lctx)
		defer cancel()
		stop := context.AfterFunc(hardStop, cancel)
		defer stop()
		sum, err := c.Cycle(cctx)
		if err != nil {
			log.Warn("cycle ended with errors", "summary", sum.String(), "err", err)
		} else {
			log.Info("cycle done", "summary", sum.String())
		}
		if dc.OnCycle != nil {
			dc.OnCycle(sum, err)
		}
	}
	opts := []gocron.JobOption{gocron.WithSingletonMode(gocron.LimitModeReschedule), gocron.WithName("spend-check")}
	if dc.Schedule == "" {
		opts = append(opts, gocron.WithStartAt(gocron.WithStartImmediately()))
	}
	if _, err := s.NewJob(def, gocron.NewTask(task), opts...); err != nil {
		return fmt.Errorf("daemon: schedule: %w", err)
	}
	s.Start()
	if dc.Started != nil {
		dc.Started()
	}
	<-ctx.Done()
	if running.Load() {
		log.Info("shutting down; letting the cycle in flight finish", "grace", dc.Grace)
	}
	timer := dc.Clock.AfterFunc(dc.Grace, stopNow)
	defer timer.Stop()
	if err := s.Shutdown(); err != nil {
		return fmt.Errorf("daemon: shutdown: %w", err)
	}
	return nil
}
