package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/spendchecker/spendchecker/checker"
	"github.com/spendchecker/spendchecker/cmd/spendchecker/config"
	"github.com/spendchecker/spendchecker/lease"
	"github.com/spendchecker/spendchecker/rotation/secret"
	"github.com/spendchecker/spendchecker/statuspage"
	"github.com/spendchecker/spendchecker/storeerr"
)

// daemon runs until ctx ends: the lease loop, the scheduler and the HTTP
// server share one context; on shutdown the cycle in flight finishes within
// the grace period, then the lease is released. /healthz and the watchdog
// work from the start, before the store answers (docs/operating.md, "Deploying").
func (a *app) daemon(ctx context.Context) error {
	var schedulerUp atomic.Bool
	a.cycles = statuspage.NewRing(statusCycles)
	sums, summaryDue := a.statusSummaries(), make(chan struct{}, 1)
	srv, err := a.serveHTTP(&schedulerUp, sums)
	if err != nil {
		return &config.UsageError{Err: fmt.Errorf("cannot listen on --listen %s: %w", a.cfg.Listen, err)}
	}
	defer func() {
		if srv != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = srv.Shutdown(sctx)
			cancel()
		}
	}()
	if srv != nil {
		go a.summarise(ctx, sums, summaryDue)
	}
	stopWatchdog := a.watchdog()
	defer stopWatchdog()
	// Start-up never fails on the store: the daemon reports and keeps trying.
	for {
		// Each attempt is bounded, so an unreachable store is reported
		// within one attempt, not after every nested retry has run out.
		actx, cancel := context.WithTimeout(ctx, storeAttempt+storeAttempt/2)
		err := a.prepare(actx)
		cancel()
		a.prog.beat()
		if err == nil {
			break
		}
		a.log.Warn("store not ready; retrying", "err", secret.RedactMongoURI(storeerr.Line(err)))
		// Each attempt is progress: systemd's start timeout is extended by
		// the time the next attempt may take.
		_, _ = daemon.SdNotify(false, fmt.Sprintf("EXTEND_TIMEOUT_USEC=%d\nSTATUS=store not ready; retrying",
			(storeAttempt+storeAttempt/2+2*a.cfg.LeaseRetryPeriod).Microseconds()))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(a.cfg.LeaseRetryPeriod):
		}
	}
	leaseCtx, stopLease := context.WithCancel(context.WithoutCancel(ctx))
	leaseDone := make(chan error, 1)
	a.lease.Tick(ctx) // lead at once if the lease is free, so the first cycle is not skipped
	go func() { leaseDone <- a.lease.Run(leaseCtx) }()

	err = runScheduled(ctx, keylifeCycler{a}, schedule{
		Schedule: a.cfg.Schedule, Interval: a.cfg.Interval, Grace: a.cfg.ShutdownGrace,
		Leader: a.lease, Logger: a.log,
		OnStart: func() { a.prog.cycleStart(); a.notifier.CycleStarted() },
		OnCycle: func(sum checker.Summary, err error) {
			a.prog.cycleEnd()
			a.cycles.Add(statuspage.CycleOf(time.Now(), sum, err))
			select {
			case summaryDue <- struct{}{}: // the page's summary is read again
			default:
			}
			a.met.cycle(sum, err, float64(time.Now().Unix()))
			a.notifyCycle(sum, err)
			_, _ = daemon.SdNotify(false, "STATUS="+sum.String())
		},
		OnSkip: func() { a.met.cycles.WithLabelValues("skipped").Inc() },
		Started: func() {
			schedulerUp.Store(true)
			a.prog.running()
			_, _ = daemon.SdNotify(false, daemon.SdNotifyReady)
			var pools []string
			for _, r := range a.chk.Rotators() {
				pools = append(pools, r.Pool().Name)
			}
			a.log.Info("spendchecker started", "instance", a.cfg.Instance, "pools", pools,
				"interval", a.cfg.Interval.String(), "schedule", a.cfg.Schedule, "listen", a.cfg.Listen, "dry_run", a.cfg.DryRun)
		},
	})
	schedulerUp.Store(false)
	a.prog.stopping()
	_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
	stopWatchdog()
	stopLease()
	if lerr := <-leaseDone; lerr != nil {
		a.log.Warn("lease release failed", "err", lerr)
	}
	if err != nil {
		return partial("scheduler stopped with an error: %w", err)
	}
	a.log.Info("spendchecker stopped")
	return nil
}

// The status page lists the last statusCycles cycles of this replica and
// the last statusRotations rotations of each pool.
const (
	statusCycles    = 20
	statusRotations = 10
)

// storeAttempt bounds one start-up attempt on an unreachable store (the
// client's server selection timeout).
const storeAttempt = 10 * time.Second

// watchdog feeds systemd's watchdog at half of WatchdogSec while the daemon
// makes progress; the returned stop may be called more than once.
func (a *app) watchdog() func() {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil || interval <= 0 {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		feedWatchdog(clockwork.NewRealClock(), interval/2, a.prog, func(state string) { _, _ = daemon.SdNotify(false, state) }, done)
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}

func (a *app) serveHTTP(schedulerUp *atomic.Bool, sums *statuspage.Summaries) (*http.Server, error) {
	if a.cfg.Listen == "" {
		return nil, nil
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.met.reg, promhttp.HandlerOpts{}))
	// Liveness: the process answers and makes progress; never the store
	// (docs/operating.md, "Metrics and alerts").
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if ok, why := a.prog.healthy(); !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, why)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		var problems []string
		if err := a.client.Ping(ctx, nil); err != nil {
			problems = append(problems, "store unreachable")
		}
		if !schedulerUp.Load() {
			problems = append(problems, "scheduler not running")
		}
		if len(problems) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, problems)
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	})
	a.rotateRoutes(mux)
	// The status page: read-only, the same read as `status`; its summary is
	// read by the daemon, not per GET (docs/operating.md, "Status page").
	mux.Handle("/{$}", &statuspage.Page{Source: sums.Source, Summaries: sums, Instance: a.cfg.Instance, Logger: a.log})
	ln, err := net.Listen("tcp", a.cfg.Listen)
	if err != nil {
		return nil, err
	}
	a.log.Info("listening", "addr", ln.Addr().String())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("http server stopped", "err", err)
		}
	}()
	return srv, nil
}

// once takes the lease (exit 3 if a live instance holds it), recovers, runs
// one cycle and releases.
func (a *app) once(ctx context.Context, out io.Writer) error {
	// Reaching the store, start-up and taking the lease share one bound,
	// --store-wait: a one-shot command never hangs on a store that went
	// away.
	wctx, cancelWait := context.WithDeadline(ctx, a.storeDeadline)
	defer cancelWait()
	if err := a.prepare(wctx); err != nil {
		return partial("%w", err)
	}
	if !a.cfg.DryRun {
		err := a.lease.Acquire(wctx)
		if errors.Is(err, lease.ErrHeld) {
			rec, _ := a.lease.Latest(context.WithoutCancel(ctx))
			holder := "another instance"
			if rec != nil {
				holder = rec.Holder
			}
			return &ExitError{Code: ExitLeaseHeld, Err: fmt.Errorf("lease %q is held by %s; nothing done", a.cfg.LeaseName, holder)}
		}
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return partial("could not take the lease: %w", a.unreachable(err))
		}
		if err != nil {
			return partial("could not take the lease: %w", err)
		}
		// Renew the lease while the cycle runs, as the daemon does, and
		// release it at the end (docs/operating.md "One-shot runs").
		leaseCtx, stopLease := context.WithCancel(context.WithoutCancel(ctx))
		leaseDone := make(chan error, 1)
		go func() { leaseDone <- a.lease.Run(leaseCtx) }()
		defer func() { stopLease(); <-leaseDone }()
	}
	cctx := ctx
	if lctx, ok := a.lease.LeaderContext(); ok {
		var cancel context.CancelFunc
		cctx, cancel = context.WithCancel(lctx)
		defer cancel()
		stop := context.AfterFunc(ctx, cancel)
		defer stop()
	}
	a.notifier.CycleStarted()
	sum, err := a.chk.Cycle(cctx)
	a.runKeylife(cctx, out)
	a.met.cycle(sum, err, float64(time.Now().Unix()))
	a.notifyCycle(sum, err)
	// The events go out before the process exits (docs/operating.md "Notifications").
	a.closeNotifier(notifyOnExit)
	for _, p := range sum.Pools {
		// A count that could not be read is not shown as 0.
		left := fmt.Sprint(p.BackupsLeft)
		if p.BackupsUnknown {
			left = "unknown"
		}
		fmt.Fprintf(out, "pool %s: due %d, checked %d, failed %d, unauthorized %d, over threshold %d, rotated %d, already rotated %d, no backup %d, held %d, backups left %s\n",
			p.Pool, p.Due, p.Checked, p.Failed, p.Unauthorized, p.Over, p.Rotated, p.AlreadyRotated, p.NoBackup, p.Held, left)
		for _, e := range p.Errors {
			fmt.Fprintf(out, "  error: %s\n", e)
		}
	}
	if err != nil {
		return partial("cycle error: %w", err)
	}
	if !sum.Clean() {
		return &ExitError{Code: ExitPartial} // the summary above says what failed
	}
	return nil
}
