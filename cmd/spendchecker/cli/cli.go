// Package cli is the spendchecker program: wiring, signals, the daemon and
// the subcommands, one file each; what they read is package config's.
// cmd/spendchecker is a thin main around it, and the demo drives the same
// code.
//
// Every command returns an error; Run alone turns it into the exit code and
// prints it to stderr, once. Results go to stdout.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spendchecker/spendchecker/cmd/spendchecker/config"
	"github.com/spendchecker/spendchecker/rotation/secret"
	"github.com/spendchecker/spendchecker/storeerr"
)

// Exit codes (docs/configuration.md, "Exit codes").
const (
	ExitOK        = 0
	ExitPartial   = 1
	ExitUsage     = 2
	ExitLeaseHeld = 3
)

// Version is set at build time with -ldflags "-X .../cmd/spendchecker/cli.Version=...".
var Version = "dev"

// Env is what the program reads and writes besides its arguments.
type Env struct {
	Stdout, Stderr io.Writer

	// Set by Main: the process's signals, the shutdown they trigger and
	// how to exit at once.
	signals  <-chan os.Signal
	shutdown func()
	exit     func(int)
}

// ExitError ends a command with Code. Err, when set, is printed to stderr.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}
func (e *ExitError) Unwrap() error { return e.Err }

// partial is exit 1: the command ran, but not everything succeeded.
func partial(format string, a ...any) error {
	return &ExitError{Code: ExitPartial, Err: fmt.Errorf(format, a...)}
}

// usage is a command's refusal of its input (config.UsageError): exit 2,
// nothing touched.
func usage(format string, a ...any) error { return &config.UsageError{Err: fmt.Errorf(format, a...)} }

// Run runs the program with args (without the program name) and returns the
// exit code. ctx ending is a shutdown request (SIGINT/SIGTERM).
func Run(ctx context.Context, args []string, env Env) int {
	return exitCode(run(ctx, args, env), env)
}

// exitCode is the one place an error becomes an exit code and a line on
// stderr.
func exitCode(err error, env Env) int {
	var (
		hr *config.HelpRequest
		ue *config.UsageError
		ee *ExitError
	)
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &hr):
		fmt.Fprintln(env.Stdout, hr.Text)
		return ExitOK
	case errors.As(err, &ue):
		fmt.Fprintf(env.Stderr, "spendchecker: %s\n", secret.RedactMongoURI(storeerr.Line(err)))
		return ExitUsage
	case errors.As(err, &ee) && ee.Err == nil:
		return ee.Code
	case errors.As(err, &ee):
		fmt.Fprintf(env.Stderr, "spendchecker: %s\n", secret.RedactMongoURI(storeerr.Line(err)))
		return ee.Code
	}
	fmt.Fprintf(env.Stderr, "spendchecker: %s\n", secret.RedactMongoURI(storeerr.Line(err)))
	return ExitPartial
}

// program is one run: what the commands share.
type program struct {
	cfg *config.Config
	env Env
	log *slog.Logger
}

func run(ctx context.Context, args []string, env Env) error {
	cfg, err := config.Parse(args)
	if err != nil {
		return err
	}
	p := &program{cfg: cfg, env: env}
	p.log = newLogger(cfg, env.Stderr)
	if env.signals != nil {
		defer handleSignals(env.signals, env.shutdown, env.exit, p.log)()
	}
	for _, e := range cfg.ExposedSecrets() {
		p.log.Warn("secret file readable by other users: make it private (chmod 600) or hand it over as a systemd credential",
			"file", e.Path, "mode", fmt.Sprintf("%#o", e.Mode))
	}
	for _, o := range cfg.Overrides {
		p.log.Info("a flag or environment variable overrides the config file", "pool", o.Pool, "setting", o.Setting, "value", o.Value, "file_value", o.FileValue)
	}
	return p.exec(ctx)
}

// exec runs the command Parse selected.
func (p *program) exec(ctx context.Context) error {
	out := p.env.Stdout
	switch p.cfg.Command {
	case "":
		return p.withApp(ctx, func(ctx context.Context, a *app) error {
			if p.cfg.Once {
				return a.once(ctx, out)
			}
			return a.daemon(ctx)
		})
	case "status":
		return p.withApp(ctx, func(ctx context.Context, a *app) error { return a.status(ctx, out) })
	case "rotate":
		return p.withApp(ctx, func(ctx context.Context, a *app) error { return a.rotate(ctx, out) })
	case "recover":
		return p.withApp(ctx, func(ctx context.Context, a *app) error { return a.recoverAll(ctx, out) })
	case "verify":
		return p.withApp(ctx, func(ctx context.Context, a *app) error { return a.verify(ctx, out) })
	case "history":
		return p.withApp(ctx, func(ctx context.Context, a *app) error { return a.history(ctx, out) })
	case "healthcheck":
		return healthcheck(ctx, p.cfg, out)
	case "version":
		fmt.Fprintln(out, versionString())
		return nil
	}
	// Parse knows no other command.
	return fmt.Errorf("command %q has nothing to run", p.cfg.Command)
}

// withApp connects to the store for a command and disconnects after it. A
// one-shot command (every command, and --once) first waits for the store,
// up to --store-wait; the daemon reports and keeps trying instead.
func (p *program) withApp(ctx context.Context, run func(ctx context.Context, a *app) error) error {
	a, err := connect(ctx, p.cfg, p.log)
	if err != nil {
		return &ExitError{Code: ExitPartial, Err: err}
	}
	defer a.close()
	if p.cfg.Once || p.cfg.Command != "" {
		if err := a.waitStore(ctx); err != nil {
			return &ExitError{Code: ExitPartial, Err: err}
		}
	}
	return run(ctx, a)
}
