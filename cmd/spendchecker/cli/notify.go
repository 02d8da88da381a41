package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"net/http"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"

	"github.com/spendchecker/spendchecker/checker"
	"github.com/spendchecker/spendchecker/notify"
)

// urlList is a repeatable flag; one value may hold several URLs separated
// by spaces (an environment variable or the file's list).
type urlList []string

func (l *urlList) String() string { return strings.Join(*l, " ") }
func (l *urlList) Set(s string) error {
	*l = append(*l, strings.Fields(s)...)
	return nil
}

// PoolNotify is a pool's "notify" entry in the config file; what it names
// replaces the top-level notification settings for that pool's events.
type PoolNotify struct {
	URL          stringOrList `json:"url"`
	Format       string       `json:"format"`
	BackupsBelow *int64       `json:"backups-below"`
}

// stringOrList reads "url" as one string or a list of them.
type stringOrList []string

func (s *stringOrList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*s = []string{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("url: want a string or a list of strings")
	}
	*s = many
	return nil
}

// validateNotify checks the notification settings (docs/operating.md,
// "Notifications"); errors name the URL without its secret.
func (c *Config) validateNotify() error {
	if _, err := notify.ParseFormat(c.NotifyFormat); err != nil {
		return usage("--notify-format: %v", err)
	}
	for _, u := range c.NotifyURLs {
		if _, err := notify.ParseURL(u); err != nil {
			return usage("--notify-url: %v", err)
		}
	}
	if c.NotifyBackupsBelow < 0 {
		return usage("--notify-backups-below must not be negative")
	}
	if c.NotifyNoCycle < 0 {
		return usage("--notify-no-cycle-after must not be negative")
	}
	for _, p := range c.Pools {
		if p.Notify == nil {
			continue
		}
		if p.Notify.Format != "" {
			if _, err := notify.ParseFormat(p.Notify.Format); err != nil {
				return usage("pool %s: notify: %v", p.Pool, err)
			}
		}
		if p.Notify.URL != nil && len(p.Notify.URL) == 0 {
			return usage("pool %s: notify: url is an empty list: name the pool's receivers, or leave url out for the top level's", p.Pool)
		}
		for _, u := range p.Notify.URL {
			if _, err := notify.ParseURL(u); err != nil {
				return usage("pool %s: notify: %v", p.Pool, err)
			}
		}
		if p.Notify.BackupsBelow != nil && *p.Notify.BackupsBelow < 0 {
			return usage("pool %s: notify: backups-below must not be negative", p.Pool)
		}
	}
	return nil
}

// notifyConfig turns the settings into the notifier's routes.
func notifyConfig(cfg *Config) notify.Config {
	targets := func(urls []string, format string) []notify.Target {
		var ts []notify.Target
		for _, u := range urls {
			ts = append(ts, notify.Target{URL: u, Format: notify.Format(format)})
		}
		return ts
	}
	nc := notify.Config{
		Default:      notify.Route{Targets: targets(cfg.NotifyURLs, cfg.NotifyFormat), BackupsBelow: int64(cfg.NotifyBackupsBelow)},
		NoCycleAfter: cfg.NotifyNoCycle, Instance: cfg.Instance,
	}
	for _, p := range cfg.Pools {
		if p.Notify == nil {
			continue
		}
		pool, _ := p.resolve() // validated by Parse
		r := notify.Route{BackupsBelow: nc.Default.BackupsBelow}
		format := cfg.NotifyFormat
		if p.Notify.Format != "" {
			format = p.Notify.Format
		}
		urls := []string(cfg.NotifyURLs)
		if len(p.Notify.URL) > 0 {
			urls = p.Notify.URL
		}
		r.Targets = targets(urls, format)
		if p.Notify.BackupsBelow != nil {
			r.BackupsBelow = *p.Notify.BackupsBelow
		}
		if nc.Pools == nil {
			nc.Pools = map[string]notify.Route{}
		}
		nc.Pools[pool.Name] = r
	}
	return nc
}

// startNotifier wires the notifier: metrics on the daemon's registry,
// claims in the store, only the lease holder's counts. Off in dry-run
// mode, which writes nothing anywhere.
func (a *app) startNotifier() error {
	nc := notifyConfig(a.cfg)
	if a.cfg.DryRun || (a.cfg.Command != "" && a.cfg.Command != "rotate") {
		// Cycles notify (the daemon and --once), and rotations on request.
		nc = notify.Config{}
	}
	if sweepsClaims(a.cfg) {
		nc.SweepEvery = claimSweep
	}
	j := true
	nc.Store = a.db.Collection(notify.Collection, options.Collection().
		SetWriteConcern(&writeconcern.WriteConcern{W: "majority", Journal: &j}))
	nc.Epoch = a.lease.Epoch
	nc.Logger = a.log
	nc.Registerer = a.met.reg
	nc.HTTP = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	n, err := notify.New(nc)
	if err != nil {
		return &UsageError{err}
	}
	a.notifier = n
	return nil
}

// sweepsClaims: only the daemon lives long enough to count the stale claims
// for its metrics and to resume its earlier runs' (docs/operating.md, "Notifications").
func sweepsClaims(c *Config) bool { return c.Command == "" && !c.Once && !c.DryRun }

// notifyCycle passes a cycle's events, backup counts and result on.
func (a *app) notifyCycle(sum checker.Summary, err error) {
	for _, p := range sum.Pools {
		for _, ev := range p.Events {
			a.notifier.Notify(ev)
		}
		if !p.BackupsUnknown {
			a.notifier.Backups(p.Pool, p.BackupsLeft)
		}
	}
	a.notifier.CycleEnded(err == nil && sum.Clean())
}

// closeNotifier gives queued notifications a moment to go out.
func (a *app) closeNotifier(d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	a.notifier.Close(ctx)
}

// claimSweep is how often the daemon sweeps the notification claims.
const claimSweep = time.Minute

// notifyOnExit is how long a one-shot command (--once, rotate) waits for its
// notifications to go out before it exits.
const notifyOnExit = 30 * time.Second

// notifyFlags are the commands' that notify: the webhooks and their format.
func notifyFlags(fs *flag.FlagSet, c *Config) {
	fs.Var(&c.NotifyURLs, "notify-url", "POST events to this webhook (repeatable; several separated by spaces)")
	fs.StringVar(&c.NotifyFormat, "notify-format", c.NotifyFormat, "webhook payload: json, slack or discord")
}
