// Package cli is the spendchecker program: configuration, wiring, signals,
// the daemon and the subcommands, one file each. cmd/spendchecker is a thin
// main around it, and the demo drives the same code.
//
// Every command returns an error; Run alone turns it into the exit code and
// prints it to stderr, once. Results go to stdout.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/peterbourgon/ff/v4"

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

// UsageError is bad usage or configuration: exit code 2, nothing touched.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// HelpRequest is -h, --help or `help`: Text goes to stdout, exit 0.
type HelpRequest struct{ Text string }

func (h *HelpRequest) Error() string { return "help requested" }

func usage(format string, a ...any) error { return &UsageError{fmt.Errorf(format, a...)} }

// Run runs the program with args (without the program name) and returns the
// exit code. ctx ending is a shutdown request (SIGINT/SIGTERM).
func Run(ctx context.Context, args []string, env Env) int {
	return exitCode(run(ctx, args, env), env)
}

// exitCode is the one place an error becomes an exit code and a line on
// stderr.
func exitCode(err error, env Env) int {
	var (
		hr *HelpRequest
		ue *UsageError
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

// program is one run: what the commands' Exec functions share.
type program struct {
	cfg *Config
	env Env
	log *slog.Logger
}

func run(ctx context.Context, args []string, env Env) error {
	p := &program{env: env}
	cfg, cmd, err := parse(args, p)
	if err != nil {
		return err
	}
	p.cfg = cfg
	p.log = newLogger(cfg, env.Stderr)
	if env.signals != nil {
		defer handleSignals(env.signals, env.shutdown, env.exit, p.log)()
	}
	for _, e := range exposedSecrets(cfg.ConfigFile, unitEnvFile, append([]string{cfg.RotateTokenFile}, adminKeyFiles(cfg)...)...) {
		p.log.Warn("secret file readable by other users: make it private (chmod 600) or hand it over as a systemd credential",
			"file", e.path, "mode", fmt.Sprintf("%#o", e.mode))
	}
	for _, o := range cfg.Overrides {
		p.log.Info("a flag or environment variable overrides the config file", "pool", o.Pool, "setting", o.Setting, "value", o.Value, "file_value", o.FileValue)
	}
	return cmd.Exec(ctx, cfg.Args)
}

// withApp connects to the store for a command and disconnects after it. A
// one-shot command (every command, and --once) first waits for the store,
// up to --store-wait; the daemon reports and keeps trying instead.
func (p *program) withApp(run func(ctx context.Context, a *app) error) func(context.Context, []string) error {
	return func(ctx context.Context, _ []string) error {
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
}

// spec is one command as its file declares it.
type spec struct {
	name, usage, short, long string
	// store: the command opens the store and has the store flags;
	// settings are the rotation settings it reads (rotationSettings).
	store    bool
	settings []string
	// flags adds the command's own flags.
	flags func(fs *flag.FlagSet)
	exec  func(ctx context.Context, args []string) error
}

// tree is the command tree: the daemon at the root, the subcommands below
// it, each with its own flags (and the store flags as their parent), and
// each command's stdlib flag sets for explainParseError.
type tree struct {
	root *ff.Command
	std  map[*ff.Command][]*flag.FlagSet
}

func commands(c *Config, st *parseState, p *program) *tree {
	t := &tree{std: map[*ff.Command][]*flag.FlagSet{}}
	t.root = t.command(rootCommand(c, p), c, st)
	for _, s := range []spec{
		statusCommand(c, p), rotateCommand(c, p), recoverCommand(c, p), verifyCommand(c, p),
		historyCommand(c, p), healthcheckCommand(c, p), versionCommand(c, p),
	} {
		t.root.Subcommands = append(t.root.Subcommands, t.command(s, c, st))
	}
	return t
}

func (t *tree) command(s spec, c *Config, st *parseState) *ff.Command {
	own := newFlagSet(s.name, s.flags)
	sets := []*flag.FlagSet{own.std}
	if s.store {
		store := newFlagSet("store and pools", storeFlags(c, st, s.settings))
		own.ff.SetParent(store.ff)
		sets = append(sets, store.std)
	}
	cmd := &ff.Command{Name: s.name, Usage: s.usage, ShortHelp: s.short, LongHelp: s.long, Flags: own.ff, Exec: s.exec}
	t.std[cmd] = sets
	return cmd
}

func (t *tree) subcommand(name string) *ff.Command {
	for _, sc := range t.root.Subcommands {
		if sc.Name == name {
			return sc
		}
	}
	return nil
}

func (t *tree) names() string {
	var names []string
	for _, sc := range t.root.Subcommands {
		names = append(names, sc.Name)
	}
	return strings.Join(append(names, "help"), ", ")
}

// allFlags are the flags of every command, by name: keys a config file
// may hold.
func (t *tree) allFlags() map[string]flag.Value {
	known := map[string]flag.Value{}
	for _, sets := range t.std {
		for _, fs := range sets {
			fs.VisitAll(func(f *flag.Flag) { known[f.Name] = f.Value })
		}
	}
	return known
}

// help is `spendchecker help [COMMAND]`.
func (t *tree) help(args []string) error {
	switch {
	case len(args) == 0:
		return &HelpRequest{Text: helpText(t.root)}
	case len(args) > 1:
		return usage("usage: spendchecker help [COMMAND]")
	}
	if sc := t.subcommand(args[0]); sc != nil {
		return &HelpRequest{Text: helpText(sc)}
	}
	return usage("unknown command %q (commands: %s)", args[0], t.names())
}
