package cli

import (
	"errors"
	"flag"
	"io"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v4"

	"github.com/spendchecker/spendchecker/checker"
	"github.com/spendchecker/spendchecker/lease"
	"github.com/spendchecker/spendchecker/rotation"
	"github.com/spendchecker/spendchecker/spend"
)

// PoolConfig is one pool's settings: a preset with optional overrides.
type PoolConfig struct {
	Pool               string  `json:"pool"`
	KeysCollection     string  `json:"keys-collection"`
	BackupsCollection  string  `json:"backups-collection"`
	BindingsCollection string  `json:"bindings-collection"`
	BindingKeyField    string  `json:"binding-key-field"`
	HistoryCollection  string  `json:"history-collection"`
	Provider           string  `json:"provider"`
	ProviderURL        string  `json:"provider-url"`
	Threshold          float64 `json:"threshold"`
	BudgetRatio        float64 `json:"budget-ratio"`
	RotateUnauthorized *bool   `json:"rotate-unauthorized"`
	// UserBudget is the rule for LiteLLM's personal-budget refusals: auto,
	// rotate or hold (rotation.UserBudget; docs/providers.md).
	UserBudget string `json:"user-budget"`
	// MinRemaining and Account serve balance providers (docs/providers.md);
	// Custom configures the custom provider (config file only).
	MinRemaining float64           `json:"min-remaining"`
	Account      string            `json:"account"`
	Custom       *spend.CustomSpec `json:"custom,omitempty"`
	// Batch providers only, config file only (batch.go; docs/providers.md, "Batch
	// reports"). report-lag "" is the provider's default (spend.DefaultLag).
	AdminKeyFile   string            `json:"admin-key-file"`
	UpstreamKeyIDs map[string]string `json:"upstream-key-ids"`
	ReportLag      string            `json:"report-lag"`
	ReportSince    string            `json:"report-since"`
	adminKey       string            // read by loadBatch
	// Notify replaces the notification settings for this pool (notify.go).
	Notify *PoolNotify `json:"notify,omitempty"`
	// A pool that refills and retires itself, config file only
	// (keylife.go; docs/refill.md).
	RefillBelow       int     `json:"refill-below"`
	RefillTo          int     `json:"refill-to"`
	RefillKeyLimit    float64 `json:"refill-key-limit"`
	RefillMaxKeys     int     `json:"refill-max-keys-per-day"`
	RefillMaxUSD      float64 `json:"refill-max-usd-per-day"`
	Retire            bool    `json:"retire"`
	RetireGrace       string  `json:"retire-grace"`
	RetireDeleteAfter string  `json:"retire-delete-after"`
	ManagementKeyFile string  `json:"management-key-file"`
	managementKey     string  // read by loadKeylife
	keylifeOff        string  // why refill and retire are off (no key)
	// set are the keys the pool's entry in the config file sets, zero
	// included.
	set map[string]bool
}

// Defaults of the settings (docs/configuration.md, "Flags"): the flags use these,
// and those a constructor has are the constructor's own constants.
const (
	DefaultPool               = "openhands"
	DefaultThreshold          = 9.95
	DefaultMinRemaining       = 1.0
	DefaultUserBudget         = "auto"
	DefaultInterval           = 10 * time.Second
	DefaultMinCheckInterval   = checker.DefaultMinInterval
	DefaultMaxCheckInterval   = checker.DefaultMaxInterval
	DefaultConcurrency        = checker.DefaultConcurrency
	DefaultRequestTimeout     = spend.DefaultRequestTimeout
	DefaultHostRate           = 50
	DefaultRejectShare        = checker.DefaultRejectShare
	DefaultRejectMin          = checker.DefaultRejectMin
	DefaultNotifyFormat       = "json"
	DefaultNotifyNoCycle      = 15 * time.Minute
	DefaultLeaseName          = "spendchecker"
	DefaultLeaseDuration      = lease.DefaultLeaseDuration
	DefaultListen             = "127.0.0.1:9090"
	DefaultLogFormat          = "auto"
	DefaultLogLevel           = "info"
	DefaultShutdownGrace      = 30 * time.Second
	DefaultStoreWait          = time.Minute
	DefaultReason             = "manual"
	DefaultSince              = "24h"
	DefaultOutput             = "text"
	DefaultDatabase           = "fproxy"
	defaultRenewDeadlineShare = 2.0 / 3  // of the lease duration
	defaultRetryPeriodShare   = 2.0 / 15 // of the lease duration
)

// Config is the whole configuration after flags, environment and file.
// Each field's default is the Default constant of the same name.
type Config struct {
	// Command is the subcommand ("" is the daemon); Args its arguments.
	Command string
	Args    []string
	// MongoURI is required; Database defaults to the URI's, else
	// DefaultDatabase.
	MongoURI string
	Database string
	Pools    []PoolConfig
	// Schedule is a cron expression; empty means every Interval.
	Schedule string
	Interval time.Duration
	// Adaptive polls only the keys that are due (docs/design.md, "Adaptive cadence").
	Adaptive bool
	// MinCheckInterval and MaxCheckInterval bound a key's cadence.
	MinCheckInterval time.Duration
	MaxCheckInterval time.Duration
	// Concurrency is the number of simultaneous upstream requests.
	Concurrency    int
	RequestTimeout time.Duration
	// RateLimit caps upstream requests per second (0: no limit).
	RateLimit float64
	LeaseName string
	// LeaseDuration; LeaseRenewDeadline and LeaseRetryPeriod default to
	// 2/3 and 2/15 of it.
	LeaseDuration      time.Duration
	LeaseRenewDeadline time.Duration
	LeaseRetryPeriod   time.Duration
	// Instance is this replica's identity (default hostname-pid).
	Instance  string
	Listen    string
	LogFormat string
	LogLevel  string
	DryRun    bool
	Once      bool
	// ShutdownGrace is how long a cycle in flight may run after SIGTERM.
	ShutdownGrace time.Duration
	// StoreWait bounds how long one-shot commands wait for the store.
	StoreWait time.Duration
	// Reason is rotate's rotation reason; Since is history's window.
	Reason string
	Since  string
	// Output is how status and history print: text or json.
	Output  string
	Version bool
	// RotateTokenFile and RotateToken enable POST /v1/rotate (rotateapi.go).
	RotateTokenFile string
	RotateToken     string

	// Upstream safety (docs/reliability.md, Reliability): a rate per upstream host, and
	// the systemic-rejection guard.
	HostRate    float64
	RejectShare float64
	RejectMin   int

	// Notifications (notify.go; docs/operating.md, "Notifications"): webhooks, their
	// payload format, the backups level that notifies once per crossing (0:
	// off) and how long without a successful cycle notifies once (0: off).
	NotifyURLs         urlList
	NotifyFormat       string
	NotifyBackupsBelow int
	NotifyNoCycle      time.Duration

	// Overrides are the pool settings of the config file that a flag or an
	// environment variable replaced; the program logs them at start.
	Overrides []Override
	// ConfigFile is the --config file read, if any.
	ConfigFile string
}

// newConfig is a Config holding every default: a command that has no flag
// for a setting runs with its default.
func newConfig() *Config {
	return &Config{
		Interval: DefaultInterval, Adaptive: true,
		MinCheckInterval: DefaultMinCheckInterval, MaxCheckInterval: DefaultMaxCheckInterval,
		Concurrency: DefaultConcurrency, RequestTimeout: DefaultRequestTimeout,
		HostRate: DefaultHostRate, RejectShare: DefaultRejectShare, RejectMin: DefaultRejectMin,
		NotifyFormat: DefaultNotifyFormat, NotifyNoCycle: DefaultNotifyNoCycle,
		LeaseName: DefaultLeaseName, LeaseDuration: DefaultLeaseDuration,
		Instance: defaultInstance(), Listen: DefaultListen,
		LogFormat: DefaultLogFormat, LogLevel: DefaultLogLevel,
		ShutdownGrace: DefaultShutdownGrace, StoreWait: DefaultStoreWait,
		Reason: DefaultReason, Since: DefaultSince, Output: DefaultOutput,
	}
}

// Override is one pool setting of the config file replaced by a flag or an
// environment variable.
type Override struct {
	Pool, Setting, Value, FileValue string
}

// flagSet is a command's flags: the stdlib set (for the parse errors'
// explanations) and the ff set that parses it.
type flagSet struct {
	std *flag.FlagSet
	ff  *ff.FlagSet
}

func newFlagSet(name string, add func(fs *flag.FlagSet)) flagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if add != nil {
		add(fs)
	}
	// The help names each flag's environment variable.
	fs.VisitAll(func(f *flag.Flag) { f.Usage += " [" + envVar(f.Name) + "]" })
	return flagSet{fs, ff.NewFlagSetFrom(name, fs)}
}

// envVar is a flag's environment variable: SPENDCHECKER_<FLAG_IN_UPPER_SNAKE>.
func envVar(flagName string) string {
	return "SPENDCHECKER_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseState is what one parse fills besides the Config: the top-level pool
// flags and whether rotate-unauthorized was given.
type parseState struct {
	pool         PoolConfig
	rotateUnauth bool
}

// newParseState holds the pool settings' defaults, for the commands that
// have no flag for them.
func newParseState() *parseState {
	return &parseState{pool: PoolConfig{Pool: DefaultPool, Threshold: DefaultThreshold, MinRemaining: DefaultMinRemaining, UserBudget: DefaultUserBudget}, rotateUnauth: true}
}

// storeFlags are the flags of every command that opens the store: the
// connection, the pools, logging, and of the pool settings that decide
// when a key rotates (rotationSettings) those the command reads.
func storeFlags(c *Config, st *parseState, settings []string) func(*flag.FlagSet) {
	return func(fs *flag.FlagSet) {
		p := &st.pool
		fs.String("config", credentialPath(credConfig), "read settings (and several pools) from this JSON file (default: the systemd credential config.json)")
		fs.StringVar(&c.MongoURI, "mongo-uri", "", "MongoDB connection string (required)")
		fs.StringVar(&c.Database, "database", "", "database name (default: the proxy's "+envProxyDB+", else the URI's, else "+DefaultDatabase+")")
		fs.StringVar(&p.Pool, "pool", DefaultPool, "pool preset: "+strings.Join(rotation.PresetNames(), " or "))
		fs.StringVar(&p.KeysCollection, "keys-collection", "", "override the pool's keys collection")
		fs.StringVar(&p.BackupsCollection, "backups-collection", "", "override the pool's backups collection")
		fs.StringVar(&p.BindingsCollection, "bindings-collection", "", "override the pool's bindings collection")
		fs.StringVar(&p.BindingKeyField, "binding-key-field", "", "override the bindings' key field")
		fs.StringVar(&p.HistoryCollection, "history-collection", "", "override the pool's history collection")
		// The upstream belongs to the pool, as its collections do: every
		// command checks it, and scripts pass it to every command.
		fs.StringVar(&p.Provider, "provider", "", "upstream: "+strings.Join(providerNames(), ", ")+" (default: openhands for the openhands pool; the factory pool has none)")
		fs.StringVar(&p.ProviderURL, "provider-url", "", "upstream base URL (default: the provider's public URL)")
		for _, name := range settings {
			poolSettingFlag(fs, st, name)
		}
		fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "auto, text or json")
		fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	}
}

// poolSettingFlag adds the flag of one pool setting. A command without it
// keeps the setting's default (newParseState).
func poolSettingFlag(fs *flag.FlagSet, st *parseState, name string) {
	p := &st.pool
	switch name {
	case "threshold":
		finiteFloatVar(fs, &p.Threshold, name, DefaultThreshold, "USD spend at or above which a key rotates")
	case "budget-ratio":
		finiteFloatVar(fs, &p.BudgetRatio, name, 0, "also rotate at this fraction of a known budget (0: off)")
	case "rotate-unauthorized":
		fs.BoolVar(&st.rotateUnauth, name, true, "rotate keys the upstream rejects (401, 402 or 403 with its own JSON error, or an error naming the key invalid or revoked)")
	case "min-remaining":
		finiteFloatVar(fs, &p.MinRemaining, name, DefaultMinRemaining, "balance providers: rotate a key when its account's remaining balance is at or below this (the balance's currency)")
	case "user-budget":
		fs.StringVar(&p.UserBudget, name, DefaultUserBudget, "LiteLLM's refusal of a key owner's personal budget: auto (rotate unless another key of the pool names the same user: then hold), rotate or hold")
	case "account":
		fs.StringVar(&p.Account, name, "", "balance providers: the upstream account every key of the pool belongs to (one request per cycle; one pool only); a key's spendAccount wins, and a key rotated in from a backup without one is its own account")
	default:
		panic("unknown pool setting " + name)
	}
}

// The flags more than one command has.
func instanceFlag(fs *flag.FlagSet, c *Config) {
	fs.StringVar(&c.Instance, "instance", c.Instance, "this replica's identity (hostname-pid)")
}

func leaseNameFlag(fs *flag.FlagSet, c *Config) {
	fs.StringVar(&c.LeaseName, "lease-name", c.LeaseName, "lease record name")
}

func writeFlags(fs *flag.FlagSet, c *Config) {
	fs.BoolVar(&c.DryRun, "dry-run", false, "report what would rotate; write nothing")
	storeWaitFlag(fs, c)
}

func storeWaitFlag(fs *flag.FlagSet, c *Config) {
	fs.DurationVar(&c.StoreWait, "store-wait", c.StoreWait, "how long to wait for the store (and the lease) before giving up with exit 1")
}

func listenFlag(fs *flag.FlagSet, c *Config) {
	fs.StringVar(&c.Listen, "listen", c.Listen, "address for the status page at /, /metrics, /healthz, /readyz (empty: off)")
}

// Parse reads the configuration: flags win over SPENDCHECKER_* environment
// variables, which win over --config FILE, which wins over defaults. Each
// command accepts only its own flags; a config file may hold the settings
// of every command.
func Parse(args []string) (*Config, error) {
	c, _, err := parse(args, &program{})
	return c, err
}

// parse selects the command, parses its flags and validates them. The
// commands it builds run through p.
func parse(args []string, p *program) (*Config, *ff.Command, error) {
	c := newConfig()
	st := newParseState()
	t := commands(c, st, p)
	cmd := t.root
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		c.Command = args[0]
		args = args[1:]
		if c.Command == "help" {
			return nil, nil, t.help(args)
		}
		cmd = t.subcommand(c.Command)
		if cmd == nil {
			return nil, nil, usage("unknown command %q%s (commands: %s; see spendchecker --help)", c.Command, t.commandHint(c.Command), t.names())
		}
	}
	// rotate KEY_ID may come before the flags.
	if c.Command == "rotate" && len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		c.Args = append(c.Args, args[0])
		args = args[1:]
	}
	ffs := cmd.Flags.(*ff.FlagSet)
	opts := []ff.Option{ff.WithEnvVarPrefix("SPENDCHECKER")}
	file := &fileState{top: map[string]bool{}, user: map[string]bool{}}
	if _, ok := ffs.GetFlag("config"); ok {
		opts = append(opts, ff.WithConfigFileFlag("config"), ff.WithConfigFileParser(jsonParser(file, ffs, t.allFlags())))
	}
	err := ff.Parse(ffs, args, opts...)
	if errors.Is(err, ff.ErrHelp) || errors.Is(err, flag.ErrHelp) {
		return nil, nil, &HelpRequest{Text: helpText(cmd)}
	}
	if err != nil {
		msg := strings.TrimPrefix(err.Error(), "parse args: ")
		msg = strings.Replace(msg, "parse config file: config file: ", "config file: ", 1)
		return nil, nil, usage("%s%s", explainParseError(msg, t.std[cmd]), t.flagHint(cmd, err))
	}
	if rest := ffs.GetArgs(); c.Command == "" && len(rest) > 0 {
		if err := t.commandLast(args, len(args)-len(rest)); err != nil {
			return nil, nil, err
		}
	}
	c.Args = append(c.Args, ffs.GetArgs()...)
	if f, ok := ffs.GetFlag("config"); ok {
		c.ConfigFile = f.GetValue()
	}
	if c.MongoURI == "" {
		// Flags, environment and file said nothing: the systemd credential.
		uri, _, err := readCredential(credMongoURI)
		if err != nil {
			return nil, nil, usage("%v", err)
		}
		c.MongoURI = uri
	}
	if c.Version {
		c.Command = "version"
		cmd = t.subcommand("version")
	}
	pc := st.pool
	pc.RotateUnauthorized = &st.rotateUnauth
	if len(file.pools) > 0 {
		if c.Pools, c.Overrides, err = file.resolvePools(pc); err != nil {
			return nil, nil, err
		}
	} else {
		c.Pools = []PoolConfig{pc}
	}
	if c.LeaseRenewDeadline == 0 {
		c.LeaseRenewDeadline = time.Duration(float64(c.LeaseDuration) * defaultRenewDeadlineShare)
	}
	if c.LeaseRetryPeriod == 0 {
		c.LeaseRetryPeriod = time.Duration(float64(c.LeaseDuration) * defaultRetryPeriodShare)
	}
	return c, cmd, c.validate()
}

// explainParseError replaces the flag package's bare "parse error" (it drops
// strconv's reason) with what the setting wants, whichever of the flag, the
// environment variable or the file key carried the value.
func explainParseError(msg string, sets []*flag.FlagSet) string {
	// The flag package's error, before the file's position if any.
	i := strings.LastIndex(msg, "parse error")
	if i < 0 {
		return msg
	}
	rest, tail := msg[:i], msg[i+len("parse error"):]
	want := ""
	for _, fs := range sets {
		fs.VisitAll(func(f *flag.Flag) {
			if !strings.Contains(msg, "--"+f.Name+":") && !strings.Contains(msg, envVar(f.Name)+"=") && !strings.Contains(msg, "config file: "+f.Name+":") {
				return
			}
			g, ok := f.Value.(flag.Getter)
			if !ok {
				return
			}
			switch g.Get().(type) {
			case float64:
				want = "want a number"
			case int:
				want = "want a whole number"
			case bool:
				want = "want true or false"
			case time.Duration:
				want = "want a duration with a unit, such as 30s or 5m"
			}
		})
	}
	if want == "" {
		return msg
	}
	return rest + want + tail
}
