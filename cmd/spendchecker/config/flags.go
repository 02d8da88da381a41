package config

import (
	"flag"
	"io"
	"strings"

	"github.com/peterbourgon/ff/v4"
	"github.com/spendchecker/spendchecker/rotation"
)

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
	case "rate-prior":
		finiteFloatVar(fs, &p.RatePrior, name, 0, "adaptive: USD an hour any key of the pool may start spending at, before it shows a rate of its own (0: the threshold an hour)")
	case "burst-factor":
		finiteFloatVar(fs, &p.BurstFactor, name, 0, "adaptive: how many times its sustained rate a key may burst to, from 1 to 32 (0: learned, from 8 up)")
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

// notifyFlags are the commands' that notify: the webhooks and their format.
func notifyFlags(fs *flag.FlagSet, c *Config) {
	fs.Var(&c.NotifyURLs, "notify-url", "POST events to this webhook (repeatable; several separated by spaces)")
	fs.StringVar(&c.NotifyFormat, "notify-format", c.NotifyFormat, "webhook payload: json, slack or discord")
}

func outputFlag(fs *flag.FlagSet, c *Config) {
	fs.StringVar(&c.Output, "output", c.Output, "text or json")
}
