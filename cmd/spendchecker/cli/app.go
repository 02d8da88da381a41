package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/lmittmann/tint"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"golang.org/x/time/rate"

	"github.com/spendchecker/spendchecker/checker"
	"github.com/spendchecker/spendchecker/cmd/spendchecker/config"
	"github.com/spendchecker/spendchecker/lease"
	"github.com/spendchecker/spendchecker/notify"
	"github.com/spendchecker/spendchecker/rotation"
	"github.com/spendchecker/spendchecker/rotation/history"
	"github.com/spendchecker/spendchecker/rotation/mongoidx"
	"github.com/spendchecker/spendchecker/rotation/secret"
	"github.com/spendchecker/spendchecker/spend"
	"github.com/spendchecker/spendchecker/statuspage"
	"github.com/spendchecker/spendchecker/storeerr"
)

// app holds the wired dependencies.
type app struct {
	cfg    *config.Config
	log    *slog.Logger
	client *mongo.Client
	db     *mongo.Database
	chk    *checker.Checker
	lease  *lease.Lease
	leases *mongo.Collection
	met    *metrics
	prog   *progress
	// cycles are the daemon's last cycles, for the status page.
	cycles *statuspage.Ring
	// reach is since when the store has been unreachable, for the status
	// page; the driver's view of the servers feeds it.
	reach *statuspage.Reachability
	// notifier posts events to webhooks (notify.go).
	notifier *notify.Notifier
	// keylife are the pools' refill and retire passes (keylife.go).
	keylife []keylife
	// clock measures how long a one-shot command waited for the store;
	// storeDeadline ends that wait (start + --store-wait): reaching the
	// store, preparing it and taking the lease share it.
	clock         clockwork.Clock
	storeDeadline time.Time
}

func connect(ctx context.Context, cfg *config.Config, log *slog.Logger) (*app, error) {
	prog := newProgress(clockwork.NewRealClock(), stallLimit(cfg.RequestTimeout))
	reach := &statuspage.Reachability{}
	opts := options.Client().ApplyURI(cfg.MongoURI).SetAppName("spendchecker").SetMonitor(storeMonitor(prog.beat)).
		SetServerMonitor(reach.Observe(time.Now))
	// One server selection gives up after storeAttempt unless the URI's
	// serverSelectionTimeoutMS says otherwise; one-shot commands retry it
	// until --store-wait (waitStore).
	if opts.ServerSelectionTimeout == nil {
		opts.SetServerSelectionTimeout(storeAttempt)
	}
	client, err := mongo.Connect(opts)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	db := client.Database(cfg.Database)
	// Keep a connection per concurrent request alive: the default transport
	// keeps two per host, so every other poll would pay a new TLS handshake.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = cfg.Concurrency
	tr.MaxIdleConns = cfg.Concurrency * len(cfg.Pools)
	httpc := upstreamClient(cfg, &http.Client{Transport: beatTransport{tr, prog.beat}})
	var pools []checker.Pool
	for _, p := range cfg.Pools {
		pool, _ := p.Resolve() // validated by Parse
		// No provider for the commands that never poll (Validate).
		var prov spend.Provider
		if p.Provider != "" {
			if prov, err = p.NewProvider(httpc); err != nil {
				return nil, err
			}
		}
		ub, _ := rotation.ParseUserBudget(p.UserBudget) // validated by Parse
		pools = append(pools, checker.Pool{Pool: pool, Provider: prov, Threshold: p.Threshold, BudgetRatio: p.BudgetRatio,
			RotateUnauthorized: p.RotateUnauthorized == nil || *p.RotateUnauthorized, MinRemaining: p.MinRemaining, Account: p.Account,
			UserBudget: ub, RatePrior: p.RatePrior / 3600, BurstFactor: p.BurstFactor})
	}
	a := &app{cfg: cfg, log: log, client: client, db: db, leases: db.Collection(lease.Collection), met: newMetrics(), prog: prog,
		clock: clockwork.NewRealClock(), reach: reach}
	l, err := lease.New(a.leases, lease.Config{
		Name: cfg.LeaseName, Instance: cfg.Instance,
		LeaseDuration: cfg.LeaseDuration, RenewDeadline: cfg.LeaseRenewDeadline, RetryPeriod: cfg.LeaseRetryPeriod,
		Logger: log,
		OnChange: func(leader bool, epoch int64) {
			a.met.leader(leader, epoch)
		},
		// Epochs stored with observations: never take a lower one, even
		// when the lease records were deleted (docs/design.md "Lease").
		Floor: func(ctx context.Context) (int64, error) { return a.chk.MaxEpoch(ctx) },
	})
	if err != nil {
		return nil, err
	}
	a.lease = l
	if err := a.startNotifier(); err != nil {
		return nil, err
	}
	a.chk, err = checker.New(db, checker.Config{
		Pools: pools, Concurrency: cfg.Concurrency, Adaptive: cfg.Adaptive,
		MinInterval: cfg.MinCheckInterval, MaxInterval: cfg.MaxCheckInterval, DryRun: cfg.DryRun,
		Instance: cfg.Instance, Logger: log, RejectShare: rejectShare(cfg.RejectShare), RejectMin: cfg.RejectMin,
		Epoch: func() int64 { e, _ := l.Epoch(); return e },
	})
	if err != nil {
		return nil, err
	}
	if err := a.startKeylife(); err != nil {
		return nil, err
	}
	return a, nil
}

// upstreamClient is the one upstream client of the process: its per-key
// Retry-After and per-host backoff are shared by every pool and cycle.
func upstreamClient(cfg *config.Config, hc *http.Client) *spend.Client {
	// A Retry-After never parks a key longer than --max-check-interval.
	c := &spend.Client{HTTP: hc, RequestTimeout: cfg.RequestTimeout, HostRate: cfg.HostRate, HostBurst: cfg.Concurrency, MaxRetryAfter: cfg.MaxCheckInterval}
	if cfg.RateLimit > 0 {
		c.Limiter = rate.NewLimiter(rate.Limit(cfg.RateLimit), max(1, int(cfg.RateLimit)))
	}
	return c
}

// rejectShare maps --reject-share 0 (off) to the checker's "off" (< 0).
func rejectShare(v float64) float64 {
	if v == 0 {
		return -1
	}
	return v
}

func (a *app) close() {
	a.closeNotifier(5 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = a.client.Disconnect(ctx)
}

// prepare creates indexes and warns about a TTL on history; writes nothing
// in dry-run mode. Transient store errors (network, a primary stepping
// down, replicas racing on a fresh database) are retried with backoff: a
// one-shot command gives up at its store deadline (--store-wait), the
// daemon keeps trying until it is stopped (docs/reliability.md "Reliability").
func (a *app) prepare(ctx context.Context) error {
	if a.cfg.DryRun {
		return nil
	}
	oneShot := !a.storeDeadline.IsZero()
	if oneShot {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, a.storeDeadline)
		defer cancel()
	}
	failures := 0
	err := mongoidx.Retry(ctx, func(ctx context.Context) error {
		err := a.chk.EnsureIndexes(ctx)
		if err == nil {
			err = lease.EnsureIndexes(ctx, a.leases)
		}
		if err == nil {
			err = a.keylifeIndexes(ctx)
		}
		if err != nil && mongoidx.Transient(err) {
			if failures++; failures == 1 {
				a.log.Warn("store not ready; retrying", "err", secret.RedactMongoURI(storeerr.Line(err)))
			}
		}
		return err
	})
	if err != nil {
		if oneShot && errors.Is(err, context.DeadlineExceeded) {
			return a.unreachable(err)
		}
		return err
	}
	if failures > 0 {
		a.log.Info("store reachable again")
	}
	a.warnHistoryTTL(ctx)
	return nil
}

// waitStore starts a one-shot command's store deadline and waits until the
// store answers, retrying until --store-wait: one server selection gives
// up sooner (storeAttempt), and a command started while the store comes
// back (a restart, a failover) should still run.
func (a *app) waitStore(ctx context.Context) error {
	start := a.clock.Now()
	a.storeDeadline = start.Add(a.cfg.StoreWait)
	wctx, cancel := context.WithDeadline(ctx, a.storeDeadline)
	defer cancel()
	err := mongoidx.Retry(wctx, func(ctx context.Context) error { return a.client.Ping(ctx, nil) })
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, context.DeadlineExceeded):
		return a.unreachable(err)
	}
	return fmt.Errorf("store %s: %s", storeAddr(a.cfg.MongoURI), storeerr.Line(err))
}

// unreachable is the one line a one-shot command ends with when its store
// deadline passed: the address, the real wait and why.
func (a *app) unreachable(err error) error {
	waited := a.clock.Since(a.storeDeadline.Add(-a.cfg.StoreWait)).Round(100 * time.Millisecond)
	return fmt.Errorf("store %s unreachable after %s (--store-wait %s), giving up: %s",
		storeAddr(a.cfg.MongoURI), waited, a.cfg.StoreWait, storeerr.Reason(err))
}

// storeAddr is the URI's host list (or SRV name), without credentials.
func storeAddr(uri string) string {
	if u, err := url.Parse(uri); err == nil && u.Host != "" {
		return u.Host
	}
	return "(address unreadable)"
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	format := cfg.LogFormat
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				format = "tint"
			}
		}
	}
	switch format {
	case "tint":
		return slog.New(tint.NewHandler(w, &tint.Options{Level: level, TimeFormat: time.TimeOnly}))
	case "text":
		return slog.New(tint.NewHandler(w, &tint.Options{Level: level, TimeFormat: time.TimeOnly, NoColor: true}))
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}

func (a *app) warnHistoryTTL(ctx context.Context) {
	for _, r := range a.chk.Rotators() {
		p := r.Pool()
		name, after, found, err := history.NewStore(a.db.Collection(p.HistoryCollection)).TTLIndex(ctx)
		if err == nil && found {
			a.log.Warn("history collection has a TTL index that silently deletes spend history; drop it",
				"pool", p.Name, "collection", p.HistoryCollection, "index", name, "expire_after", after)
		}
	}
}
