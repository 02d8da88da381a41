package cli

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// Main runs the program as a process that owns its signals (docs/operating.md,
// "Deploying"): the first SIGTERM or SIGINT starts a graceful shutdown, a
// second one exits at once, and SIGHUP is ignored (settings are read at
// start only), so a closed terminal or a stray `kill -HUP` never kills the
// daemon without releasing its lease.
func Main(args []string, env Env) int {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	env.signals, env.shutdown = sigs, cancel
	if env.exit == nil {
		env.exit = os.Exit
	}
	return Run(ctx, args, env)
}

// handleSignals acts on the signals Main receives until stop is called.
func handleSignals(sigs <-chan os.Signal, shutdown func(), exit func(int), log *slog.Logger) (stop func()) {
	done := make(chan struct{})
	go func() {
		stopping := false
		for {
			var s os.Signal
			select {
			case <-done:
				return
			case s = <-sigs:
			}
			switch {
			case s == syscall.SIGHUP:
				log.Info("SIGHUP ignored", "why", "settings are read at start only; restart to apply a change")
			case !stopping:
				stopping = true
				log.Info("shutdown requested", "signal", s.String(), "hint", "send it again to exit at once")
				shutdown()
			default:
				log.Warn("second signal: exiting at once", "signal", s.String(),
					"note", "a rotation cut short is completed by the next recovery; the lease lapses after its duration")
				exit(ExitPartial)
				return
			}
		}
	}()
	return func() { close(done) }
}
