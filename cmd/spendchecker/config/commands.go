package config

import (
	"flag"
	"strings"

	"github.com/peterbourgon/ff/v4"
)

// command is one command's line: its help and its flags. What it does is
// package cli's; here it is only what it reads.
type command struct {
	name, usage, short, long string
	// store: the command opens the store and has the store flags;
	// settings are the rotation settings it reads (rotationSettings).
	store    bool
	settings []string
	// flags adds the command's own flags.
	flags func(fs *flag.FlagSet)
}

// daemonCommand is `spendchecker [FLAGS]`: the daemon, or with --once one
// cycle.
func daemonCommand(c *Config) command {
	return command{
		name:  "spendchecker",
		usage: "spendchecker [FLAGS]  |  spendchecker --once [FLAGS]  |  spendchecker COMMAND [FLAGS]",
		short: "keeps a pool of upstream LLM API keys healthy",
		long: "Without a command it runs the daemon: it polls each key's spend on a schedule and rotates keys\n" +
			"over their threshold. With --once it runs one cycle and exits (0 done, 1 some keys failed,\n" +
			"2 bad usage, 3 the lease is held by another live instance). `spendchecker help COMMAND`\n" +
			"shows a command's flags. Flags win over SPENDCHECKER_* variables, which win over --config.",
		store:    true,
		settings: rotationSettings,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&c.Schedule, "schedule", "", "cron expression for cycles (5 fields, or 6 with seconds)")
			fs.DurationVar(&c.Interval, "interval", c.Interval, "cycle interval when no --schedule")
			fs.BoolVar(&c.Adaptive, "adaptive", c.Adaptive, "poll only the keys that are due")
			fs.DurationVar(&c.MinCheckInterval, "min-check-interval", c.MinCheckInterval, "shortest wait between two checks of a key")
			fs.DurationVar(&c.MaxCheckInterval, "max-check-interval", c.MaxCheckInterval, "longest wait between two checks of a key")
			decimalIntVar(fs, &c.Concurrency, "concurrency", c.Concurrency, "simultaneous upstream requests")
			fs.DurationVar(&c.RequestTimeout, "request-timeout", c.RequestTimeout, "per upstream request")
			finiteFloatVar(fs, &c.RateLimit, "rate-limit", 0, "upstream requests per second at most (0: no limit)")
			finiteFloatVar(fs, &c.HostRate, "host-rate", c.HostRate, "upstream requests per second at most to one host (0: no limit)")
			finiteFloatVar(fs, &c.RejectShare, "reject-share", c.RejectShare, "rotate no rejected key when this share of the answered keys is rejected at once (0: off)")
			decimalIntVar(fs, &c.RejectMin, "reject-min", c.RejectMin, "... and at least this many keys")
			leaseNameFlag(fs, c)
			fs.DurationVar(&c.LeaseDuration, "lease-duration", c.LeaseDuration, "lease duration")
			fs.DurationVar(&c.LeaseRenewDeadline, "lease-renew-deadline", 0, "renew deadline (default: 2/3 of the lease duration)")
			fs.DurationVar(&c.LeaseRetryPeriod, "lease-retry-period", 0, "retry period (default: 2/15 of the lease duration)")
			instanceFlag(fs, c)
			listenFlag(fs, c)
			writeFlags(fs, c)
			fs.BoolVar(&c.Once, "once", false, "run one cycle, then exit")
			fs.DurationVar(&c.ShutdownGrace, "shutdown-grace", c.ShutdownGrace, "how long a cycle in flight may finish after SIGTERM")
			fs.BoolVar(&c.Version, "version", false, "print the version and exit")
			notifyFlags(fs, c)
			decimalIntVar(fs, &c.NotifyBackupsBelow, "notify-backups-below", 0, "notify once when fewer unused backups than this are left (0: off)")
			fs.DurationVar(&c.NotifyNoCycle, "notify-no-cycle-after", c.NotifyNoCycle, "notify once when no cycle has succeeded for this long (0: off)")
			fs.StringVar(&c.RotateTokenFile, "rotate-token-file", "", "file holding the bearer token that enables POST /v1/rotate (or "+EnvRotateToken+")")
		},
	}
}

// subcommands are the commands below the daemon, in the help's order.
func subcommands(c *Config) []command {
	return []command{
		{
			name:  "status",
			usage: "spendchecker status [FLAGS]",
			short: "a table of keys (spend, budget, % of threshold, rate, last and next check), backups left, lease holder",
			store: true,
			// The table shows spend as a share of the threshold, or a balance
			// pool's remaining against its minimum; the LiteLLM users keys
			// share hold them under user-budget auto.
			settings: []string{"threshold", "min-remaining", "user-budget"},
			flags: func(fs *flag.FlagSet) {
				leaseNameFlag(fs, c)
				outputFlag(fs, c)
				storeWaitFlag(fs, c)
			},
		},
		{
			name:  "rotate",
			usage: "spendchecker rotate KEY_ID [FLAGS]",
			short: "rotate one key by hand through the shared rotator",
			store: true,
			// The rotation's history record names the threshold.
			settings: []string{"threshold"},
			flags: func(fs *flag.FlagSet) {
				fs.StringVar(&c.Reason, "reason", c.Reason, "the rotation reason recorded in the history")
				instanceFlag(fs, c)
				writeFlags(fs, c)
				notifyFlags(fs, c)
			},
		},
		{
			name:  "recover",
			usage: "spendchecker recover [FLAGS]",
			short: "complete or undo the rotations a crash left unfinished",
			store: true,
			flags: func(fs *flag.FlagSet) {
				instanceFlag(fs, c)
				writeFlags(fs, c)
			},
		},
		{
			name:  "verify",
			usage: "spendchecker verify [FLAGS]",
			short: "check the invariants and the schema (orphan bindings, stranded claims, TTL on history, indexes); exit 1 when something is wrong",
			store: true,
			// Under user-budget auto, LiteLLM users shared by keys are named:
			// their personal-budget refusals hold those keys.
			settings: []string{"user-budget"},
			flags:    func(fs *flag.FlagSet) { storeWaitFlag(fs, c) },
		},
		{
			name:  "history",
			usage: "spendchecker history [FLAGS]",
			short: "the rotations of a recent window, every pool's",
			store: true,
			flags: func(fs *flag.FlagSet) {
				fs.StringVar(&c.Since, "since", c.Since, "a duration back from now (24h, 90m, 7d, 1d12h), or a date (2006-01-02 or RFC 3339)")
				outputFlag(fs, c)
				storeWaitFlag(fs, c)
			},
		},
		{
			name:  "healthcheck",
			usage: "spendchecker healthcheck [FLAGS]",
			short: "probe a running daemon's /healthz (for container health checks)",
			flags: func(fs *flag.FlagSet) {
				fs.String("config", credentialPath(credConfig), "read --listen from this JSON file (default: the systemd credential config.json)")
				listenFlag(fs, c)
			},
		},
		{
			name:  "version",
			usage: "spendchecker version",
			short: "print the version",
		},
	}
}

// tree is the command tree: the daemon at the root, the subcommands below
// it, each with its own flags (and the store flags as their parent), and
// each command's stdlib flag sets for explainParseError.
type tree struct {
	root *ff.Command
	std  map[*ff.Command][]*flag.FlagSet
}

func commands(c *Config, st *parseState) *tree {
	t := &tree{std: map[*ff.Command][]*flag.FlagSet{}}
	t.root = t.command(daemonCommand(c), c, st)
	for _, s := range subcommands(c) {
		t.root.Subcommands = append(t.root.Subcommands, t.command(s, c, st))
	}
	return t
}

func (t *tree) command(s command, c *Config, st *parseState) *ff.Command {
	own := newFlagSet(s.name, s.flags)
	sets := []*flag.FlagSet{own.std}
	if s.store {
		store := newFlagSet("store and pools", storeFlags(c, st, s.settings))
		own.ff.SetParent(store.ff)
		sets = append(sets, store.std)
	}
	cmd := &ff.Command{Name: s.name, Usage: s.usage, ShortHelp: s.short, LongHelp: s.long, Flags: own.ff}
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
