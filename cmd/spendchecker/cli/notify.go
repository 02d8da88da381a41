package cli

import (
	"context"
	"net/http"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"

	"github.com/spendchecker/spendchecker/checker"
	"github.com/spendchecker/spendchecker/cmd/spendchecker/config"
	"github.com/spendchecker/spendchecker/notify"
)

// startNotifier wires the notifier: metrics on the daemon's registry,
// claims in the store, only the lease holder's counts. Off in dry-run
// mode, which writes nothing anywhere.
func (a *app) startNotifier() error {
	nc := a.cfg.NotifyConfig()
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
		return &config.UsageError{Err: err}
	}
	a.notifier = n
	return nil
}

// sweepsClaims: only the daemon lives long enough to count the stale claims
// for its metrics and to resume its earlier runs' (docs/operating.md, "Notifications").
func sweepsClaims(c *config.Config) bool { return c.Command == "" && !c.Once && !c.DryRun }

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
