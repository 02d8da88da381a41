package notify

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/spendchecker/spendchecker/rotation/secret"
)

// Collection is the default name of the collection that records which
// events were claimed for which receiver.
const Collection = "notifications"

// Target is one receiver.
type Target struct {
	URL    string
	Format Format
}

// Route is where a pool's events go, and its low-backups threshold.
type Route struct {
	Targets []Target
	// BackupsBelow: notify when fewer unused backups than this are left
	// (0: never).
	BackupsBelow int64
}

// Config configures a Notifier. Zero values take the defaults noted.
type Config struct {
	// Default routes the events of pools without an entry in Pools, and
	// no_successful_cycle goes to every target of every route.
	Default Route
	Pools   map[string]Route
	// NoCycleAfter: notify once when no cycle has succeeded for this long
	// (0: never).
	NoCycleAfter time.Duration
	// Store de-duplicates across replicas (nil: no de-duplication).
	Store *mongo.Collection
	// Epoch returns the lease epoch this replica holds and whether it
	// holds it (nil: always leading, in one epoch).
	Epoch    func() (int64, bool)
	Instance string

	QueueSize      int           // per target; default 100
	MaxAttempts    int           // default 5
	BaseBackoff    time.Duration // default 1s; doubled per attempt
	MaxBackoff     time.Duration // default 1m
	MaxRetryAfter  time.Duration // a longer Retry-After gives up; default 5m
	RequestTimeout time.Duration // default 10s
	StoreTimeout   time.Duration // one claim, read or record; default 10s
	// SweepEvery: how often the stale claims are counted and this
	// replica's earlier runs' stale claims resumed (0: never; the daemon's
	// setting, not a one-shot command's).
	SweepEvery time.Duration
	// HTTP sends the requests (default: a client of its own). Its redirect
	// policy is replaced: a redirect is never followed.
	HTTP   *http.Client
	Clock  clockwork.Clock
	Logger *slog.Logger
	// Registerer receives the metrics (nil: not registered).
	Registerer prometheus.Registerer
	// Jitter returns a duration in [0, d) (default: uniformly random).
	Jitter func(d time.Duration) time.Duration
}

// Notifier delivers events. Its methods never block on the network or the
// store: work goes to a bounded queue per target, drained by one goroutine
// each; a full queue drops the event and counts it.
type Notifier struct {
	cfg     Config
	log     *slog.Logger
	clock   clockwork.Clock
	targets map[string]*target // by key()
	routes  map[string][]*target
	all     []*target

	sent, failed, dropped, duplicate *prometheus.CounterVec
	stale                            *prometheus.GaugeVec

	// run names this process in its claims; deliveries counts the
	// deliveries it started (each claim names the one that took it).
	run        string
	deliveries atomic.Int64
	bound      time.Duration // one delivery's, from its start to its outcome

	mu          sync.Mutex
	resuming    map[string]bool       // claim ids of stale claims queued to resume
	unrecorded  map[string]unrecorded // by claim id: outcomes the sweep writes
	low         map[string]bool       // pool → below the threshold (notified)
	lowEpoch    int64                 // the lease epoch low was observed in
	lastSuccess time.Time
	polling     bool // this replica made the last cycle attempt as leader
	noCycleSent bool

	// qmu guards closed against sends on the closed queues.
	qmu    sync.RWMutex
	closed bool
	stop   chan struct{} // ends watchCycles
	ctx    context.Context
	cancel context.CancelFunc // abandons deliveries in flight
	wg     sync.WaitGroup

	// onWait, in tests, sees every wait between two attempts; onSweep
	// every sweep's end.
	onWait  func(time.Duration)
	onSweep func()
}

type target struct {
	Target
	fp    string // names the target in claims, never the URL
	queue chan job
}

func (t Target) key() string { return string(t.Format) + " " + t.URL }

type job struct {
	ev    Event
	rearm bool   // delete the claim of ev.ID for this target
	from  *Claim // a stale claim of an earlier run to take over
}

// The defaults of Config.
const (
	defaultMaxAttempts    = 5
	defaultMaxBackoff     = time.Minute
	defaultMaxRetryAfter  = 5 * time.Minute
	defaultRequestTimeout = 10 * time.Second
	defaultStoreTimeout   = 10 * time.Second
)

func withDefaults(cfg Config) Config {
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 100
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = defaultMaxAttempts
	}
	if cfg.BaseBackoff <= 0 {
		cfg.BaseBackoff = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = defaultMaxBackoff
	}
	if cfg.MaxRetryAfter <= 0 {
		cfg.MaxRetryAfter = defaultMaxRetryAfter
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = defaultRequestTimeout
	}
	if cfg.StoreTimeout <= 0 {
		cfg.StoreTimeout = defaultStoreTimeout
	}
	// A copy: the caller's client keeps its own policy. Following a
	// redirect would re-POST the payload to wherever the Location points
	// (307, 308), or turn it into a GET whose 200 looks delivered (301-303),
	// and every hop would carry the webhook URL, secret and all, in Referer.
	hc := http.Client{}
	if cfg.HTTP != nil {
		hc = *cfg.HTTP
	}
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	cfg.HTTP = &hc
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Jitter == nil {
		cfg.Jitter = func(d time.Duration) time.Duration {
			if d <= 0 {
				return 0
			}
			return rand.N(d)
		}
	}
	return cfg
}

// New validates the configuration, registers the metrics and starts one
// delivery goroutine per target. Close stops them.
func New(cfg Config) (*Notifier, error) {
	cfg = withDefaults(cfg)
	n := &Notifier{
		cfg: cfg, log: cfg.Logger, clock: cfg.Clock,
		targets: map[string]*target{}, routes: map[string][]*target{}, low: map[string]bool{},
		resuming: map[string]bool{}, unrecorded: map[string]unrecorded{}, lastSuccess: cfg.Clock.Now(), run: runID(), bound: bound(cfg),
	}
	add := func(ts []Target) ([]*target, error) {
		var out []*target
		for _, t := range ts {
			if _, err := ParseURL(t.URL); err != nil {
				return nil, err
			}
			if _, err := ParseFormat(string(t.Format)); err != nil {
				return nil, err
			}
			nt, ok := n.targets[t.key()]
			if !ok {
				nt = &target{Target: t, fp: secret.Fingerprint(t.key()), queue: make(chan job, cfg.QueueSize)}
				n.targets[t.key()] = nt
				n.all = append(n.all, nt)
			}
			out = append(out, nt)
		}
		return out, nil
	}
	def, err := add(cfg.Default.Targets)
	if err != nil {
		return nil, err
	}
	n.routes[""] = def
	for pool, r := range cfg.Pools {
		if n.routes[pool], err = add(r.Targets); err != nil {
			return nil, fmt.Errorf("pool %s: %w", pool, err)
		}
	}
	labels := []string{"pool", "format"}
	n.sent = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "spendchecker_notifications_sent_total",
		Help: "Notifications a receiver accepted."}, labels)
	n.failed = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "spendchecker_notifications_failed_total",
		Help: "Notifications given up after their retries (or refused by the receiver)."}, labels)
	n.dropped = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "spendchecker_notifications_dropped_total",
		Help: "Notifications dropped because the receiver's queue was full."}, labels)
	n.duplicate = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "spendchecker_notifications_duplicate_total",
		Help: "Notifications not sent because the store shows them claimed already (by another replica, or before a restart)."}, labels)
	n.stale = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "spendchecker_notifications_stale_claims",
		Help: "Claims left claimed past their deadline (their owner stopped before recording an outcome): events that may never have been sent."},
		[]string{"pool"})
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{n.sent, n.failed, n.dropped, n.duplicate, n.stale} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("register notification metrics: %w", err)
			}
		}
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.stop = make(chan struct{})
	for _, t := range n.all {
		n.wg.Add(1)
		go n.work(t)
	}
	if cfg.NoCycleAfter > 0 && len(n.all) > 0 {
		// The ticker is armed here, not in the goroutine: its period then
		// starts with lastSuccess, and a clock advanced as soon as New
		// returns (a fake one in tests) cannot pass it unseen and delay the
		// first check by a whole period.
		every := min(max(cfg.NoCycleAfter/4, time.Second), time.Minute)
		n.wg.Add(1)
		go n.watchCycles(n.clock.NewTicker(every))
	}
	if cfg.SweepEvery > 0 && cfg.Store != nil && len(n.all) > 0 {
		n.wg.Add(1)
		go n.sweepEvery(n.clock.NewTicker(cfg.SweepEvery))
	}
	return n, nil
}

// runID tells this process's claims from those of an earlier run of the
// same replica.
func runID() string {
	b := make([]byte, 6)
	_, _ = crand.Read(b)
	return hex.EncodeToString(b)
}

// Enabled reports whether any receiver is configured.
func (n *Notifier) Enabled() bool { return n != nil && len(n.all) > 0 }

func (n *Notifier) route(pool string) ([]*target, Route) {
	if ts, ok := n.routes[pool]; ok && pool != "" {
		return ts, n.cfg.Pools[pool]
	}
	return n.routes[""], n.cfg.Default
}

func poolLabel(pool string) string {
	if pool == "" {
		return "all"
	}
	return pool
}

// Notify queues the event for its pool's targets (every target for an
// event without a pool). It never blocks: a full queue drops the event.
func (n *Notifier) Notify(ev Event) {
	if !n.Enabled() {
		return
	}
	if ev.Instance == "" {
		ev.Instance = n.cfg.Instance
	}
	ts := n.all
	if ev.Pool != "" {
		ts, _ = n.route(ev.Pool)
	}
	for _, t := range ts {
		n.enqueue(t, job{ev: ev})
	}
}

func (n *Notifier) enqueue(t *target, j job) bool {
	n.qmu.RLock()
	defer n.qmu.RUnlock()
	if n.closed {
		return false
	}
	select {
	case t.queue <- j:
		return true
	default:
	}
	switch {
	case j.rearm:
		// Without the re-arm the next crossing goes unreported:
		// worth a line, not a metric.
		n.log.Warn("notification queue full; low-backups alarm not re-armed", "pool", j.ev.Pool, "url", secret.RedactURL(t.URL))
	case j.from != nil:
		// The claim stays stale: the next sweep tries again.
		n.log.Warn("notification queue full; stale claim not resumed yet", "pool", j.ev.Pool, "id", j.ev.ID, "url", secret.RedactURL(t.URL))
	default:
		n.dropped.WithLabelValues(poolLabel(j.ev.Pool), string(t.Format)).Inc()
		n.log.Warn("notification queue full; event dropped", "pool", j.ev.Pool, "event", j.ev.Kind, "id", j.ev.ID,
			"url", secret.RedactURL(t.URL))
	}
	return false
}

// Backups reports a pool's unused backups after a cycle counted them. The
// first count below the pool's threshold notifies backups_low; later ones
// do not until a count at or above it re-arms the alarm. Only the leader's
// counts are taken (docs/operating.md, "Notifications").
func (n *Notifier) Backups(pool string, left int64) {
	if !n.Enabled() {
		return
	}
	var epoch int64
	if n.cfg.Epoch != nil {
		var leader bool
		if epoch, leader = n.cfg.Epoch(); !leader {
			return
		}
	}
	ts, r := n.route(pool)
	if r.BackupsBelow <= 0 || len(ts) == 0 {
		return
	}
	now := n.clock.Now()
	n.mu.Lock()
	if epoch != n.lowEpoch {
		// Another leader may have seen the crossing end and a new one
		// begin meanwhile: what this replica remembers is stale.
		n.low, n.lowEpoch = map[string]bool{}, epoch
	}
	low, seen := n.low[pool]
	n.low[pool] = left < r.BackupsBelow
	n.mu.Unlock()
	ev := backupsLowEvent(pool, left, r.BackupsBelow, now)
	ev.Instance = n.cfg.Instance
	switch {
	case left < r.BackupsBelow && !low:
		// The claim in the store keeps a replica that starts (or takes
		// over) during the same crossing from repeating it.
		for _, t := range ts {
			n.enqueue(t, job{ev: ev})
		}
	case left >= r.BackupsBelow && (low || !seen):
		// Re-arm: also on the first count after a start, since the
		// crossing may have ended while no replica was watching.
		for _, t := range ts {
			n.enqueue(t, job{ev: ev, rearm: true})
		}
	}
}

// CycleStarted records that this replica, as the leader, started a cycle:
// it is the one to report an outage of cycles.
func (n *Notifier) CycleStarted() {
	n.mu.Lock()
	n.polling = true
	n.mu.Unlock()
}

// CycleEnded records a cycle's result; a success re-arms
// no_successful_cycle.
func (n *Notifier) CycleEnded(ok bool) {
	if !ok {
		return
	}
	n.mu.Lock()
	n.lastSuccess = n.clock.Now()
	n.noCycleSent = false
	n.mu.Unlock()
}

// watchCycles checks for an outage of cycles on every tick of tk, a few
// times per NoCycleAfter.
func (n *Notifier) watchCycles(tk clockwork.Ticker) {
	defer n.wg.Done()
	defer tk.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-tk.Chan():
			n.checkCycles()
		}
	}
}

func (n *Notifier) checkCycles() {
	now := n.clock.Now()
	n.mu.Lock()
	due := n.polling && !n.noCycleSent && now.Sub(n.lastSuccess) >= n.cfg.NoCycleAfter
	last := n.lastSuccess
	if due {
		n.noCycleSent = true
	}
	n.mu.Unlock()
	if due {
		n.Notify(noCycleEvent(n.cfg.Instance, last, now))
	}
}

// Close stops accepting events and waits, until ctx ends, for the queued
// ones to be delivered; then it abandons the rest.
func (n *Notifier) Close(ctx context.Context) {
	if n == nil {
		return
	}
	n.qmu.Lock()
	if n.closed {
		n.qmu.Unlock()
		return
	}
	n.closed = true
	close(n.stop)
	for _, t := range n.all {
		close(t.queue)
	}
	n.qmu.Unlock()
	done := make(chan struct{})
	go func() { n.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	n.cancel()
	<-done
}
