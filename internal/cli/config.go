package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v4"
	"github.com/peterbourgon/ff/v4/ffhelp"
	"github.com/robfig/cron/v3"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

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
	// MinRemaining and Account serve balance providers (README, Providers);
	// Custom configures the custom provider (config file only).
	MinRemaining float64           `json:"min-remaining"`
	Account      string            `json:"account"`
	Custom       *spend.CustomSpec `json:"custom"`
}

// Config is the whole configuration after flags, environment and file.
type Config struct {
	Command   string
	Args      []string
	MongoURI  string
	Database  string
	Pools     []PoolConfig
	Schedule  string
	Interval  time.Duration
	Adaptive  bool
	MinCheck  time.Duration
	MaxCheck  time.Duration
	Conc      int
	ReqTO     time.Duration
	RateLimit float64
	LeaseName string
	LeaseDur  time.Duration
	LeaseRen  time.Duration
	LeaseRetr time.Duration
	Instance  string
	Listen    string
	LogFormat string
	LogLevel  string
	DryRun    bool
	Once      bool
	Grace     time.Duration
	StoreWait time.Duration
	Reason    string
	Since     string
	Version   bool
	// RotateTokenFile and RotateToken enable POST /v1/rotate (rotateapi.go).
	RotateTokenFile string
	RotateToken     string

	// Upstream safety (README, Reliability): a rate per upstream host, and
	// the systemic-rejection guard.
	HostRate    float64
	RejectShare float64
	RejectMin   int

	// Overrides are the pool settings of the config file that a flag or an
	// environment variable replaced; the program logs them at start.
	Overrides []Override
	// ConfigFile is the --config file read, if any.
	ConfigFile string
}

// Override is one pool setting of the config file replaced by a flag or an
// environment variable.
type Override struct {
	Pool, Setting, Value, FileValue string
}

// UsageError is bad usage or configuration: exit code 2, nothing touched.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// HelpRequest is -h or --help: Text goes to stdout, exit 0.
type HelpRequest struct{ Text string }

func (h *HelpRequest) Error() string { return "help requested" }

func usage(format string, a ...any) error { return &UsageError{fmt.Errorf(format, a...)} }

// Commands are the subcommands; "" is the daemon.
var Commands = []string{"status", "rotate", "recover", "verify", "history", "healthcheck", "version"}

// Parse reads the configuration: flags win over SPENDCHECKER_* environment
// variables, which win over --config FILE, which wins over defaults.
func Parse(args []string) (*Config, error) {
	c := &Config{}
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		c.Command = args[0]
		args = args[1:]
		known := false
		for _, k := range Commands {
			known = known || k == c.Command
		}
		if !known {
			return nil, usage("unknown command %q (commands: %s)", c.Command, strings.Join(Commands, ", "))
		}
	}
	// rotate KEY_ID may come before the flags.
	if c.Command == "rotate" && len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		c.Args = append(c.Args, args[0])
		args = args[1:]
	}

	fs := flag.NewFlagSet("spendchecker", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var p PoolConfig
	var rotateUnauth bool
	fs.String("config", credentialPath(credConfig), "read settings (and several pools) from this JSON file (default: the systemd credential config.json)")
	fs.StringVar(&c.MongoURI, "mongo-uri", "", "MongoDB connection string (required)")
	fs.StringVar(&c.Database, "database", "", "database name (default: the URI's, else fproxy)")
	fs.StringVar(&p.Pool, "pool", "openhands", "pool preset: "+strings.Join(rotation.PresetNames(), " or "))
	fs.StringVar(&p.KeysCollection, "keys-collection", "", "override the pool's keys collection")
	fs.StringVar(&p.BackupsCollection, "backups-collection", "", "override the pool's backups collection")
	fs.StringVar(&p.BindingsCollection, "bindings-collection", "", "override the pool's bindings collection")
	fs.StringVar(&p.BindingKeyField, "binding-key-field", "", "override the bindings' key field")
	fs.StringVar(&p.HistoryCollection, "history-collection", "", "override the pool's history collection")
	fs.StringVar(&p.Provider, "provider", "", "upstream: "+strings.Join(spend.Names, ", ")+", custom (default: openhands for the openhands pool; the factory pool has none)")
	fs.StringVar(&p.ProviderURL, "provider-url", "", "upstream base URL (default: the provider's public URL)")
	fs.Float64Var(&p.Threshold, "threshold", 9.95, "USD spend at or above which a key rotates")
	fs.Float64Var(&p.BudgetRatio, "budget-ratio", 0, "also rotate at this fraction of a known budget (0: off)")
	fs.BoolVar(&rotateUnauth, "rotate-unauthorized", true, "rotate keys the upstream rejects (401/403)")
	fs.Float64Var(&p.MinRemaining, "min-remaining", 1, "balance providers: rotate a key when its account's remaining balance is at or below this (the balance's currency)")
	fs.StringVar(&p.Account, "account", "", "balance providers: the upstream account every key of the pool belongs to (one request per cycle; one pool only); a key's spendAccount wins, and a key rotated in from a backup without one is its own account")
	fs.StringVar(&c.Schedule, "schedule", "", "cron expression for cycles (5 fields, or 6 with seconds)")
	fs.DurationVar(&c.Interval, "interval", 10*time.Second, "cycle interval when no --schedule")
	fs.BoolVar(&c.Adaptive, "adaptive", true, "poll only the keys that are due")
	fs.DurationVar(&c.MinCheck, "min-check-interval", 10*time.Second, "shortest wait between two checks of a key")
	fs.DurationVar(&c.MaxCheck, "max-check-interval", 30*time.Minute, "longest wait between two checks of a key")
	fs.IntVar(&c.Conc, "concurrency", 16, "simultaneous upstream requests")
	fs.DurationVar(&c.ReqTO, "request-timeout", 15*time.Second, "per upstream request")
	fs.Float64Var(&c.RateLimit, "rate-limit", 0, "upstream requests per second at most (0: no limit)")
	fs.Float64Var(&c.HostRate, "host-rate", 50, "upstream requests per second at most to one host (0: no limit)")
	fs.Float64Var(&c.RejectShare, "reject-share", 0.5, "rotate no rejected key when this share of the answered keys is rejected at once (0: off)")
	fs.IntVar(&c.RejectMin, "reject-min", 3, "... and at least this many keys")
	fs.StringVar(&c.LeaseName, "lease-name", "spendchecker", "lease record name")
	fs.DurationVar(&c.LeaseDur, "lease-duration", 15*time.Second, "lease duration")
	fs.DurationVar(&c.LeaseRen, "lease-renew-deadline", 0, "renew deadline (default: 2/3 of the lease duration)")
	fs.DurationVar(&c.LeaseRetr, "lease-retry-period", 0, "retry period (default: 2/15 of the lease duration)")
	fs.StringVar(&c.Instance, "instance", defaultInstance(), "this replica's identity")
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:9090", "address for /metrics, /healthz, /readyz (empty: off)")
	fs.StringVar(&c.LogFormat, "log-format", "auto", "auto, text or json")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&c.DryRun, "dry-run", false, "report what would rotate; write nothing")
	fs.BoolVar(&c.Once, "once", false, "run one cycle, then exit")
	fs.DurationVar(&c.Grace, "shutdown-grace", 30*time.Second, "how long a cycle in flight may finish after SIGTERM")
	fs.DurationVar(&c.StoreWait, "store-wait", time.Minute, "one-shot commands: how long to wait for the store (and the lease) before giving up with exit 1")
	fs.StringVar(&c.Reason, "reason", "manual", "rotate: the rotation reason")
	fs.StringVar(&c.Since, "since", "24h", "history: a duration back from now (24h, 90m, 7d, 1d12h), or a date (2006-01-02 or RFC 3339)")
	fs.BoolVar(&c.Version, "version", false, "print the version and exit")
	fs.StringVar(&c.RotateTokenFile, "rotate-token-file", "", "file holding the bearer token that enables POST /v1/rotate (or "+EnvRotateToken+")")

	ffs := ff.NewFlagSetFrom("spendchecker", fs)
	file := &fileState{top: map[string]bool{}, user: map[string]bool{}}
	err := ff.Parse(ffs, args,
		ff.WithEnvVarPrefix("SPENDCHECKER"),
		ff.WithConfigFileFlag("config"),
		ff.WithConfigFileParser(jsonParser(file, ffs)),
	)
	if errors.Is(err, flag.ErrHelp) {
		return nil, &HelpRequest{Text: ffhelp.Flags(ffs, "spendchecker [COMMAND] [FLAGS]   (commands: "+strings.Join(Commands, ", ")+")").String()}
	}
	if err != nil {
		msg := strings.TrimPrefix(err.Error(), "parse args: ")
		msg = strings.Replace(msg, "parse config file: config file: ", "config file: ", 1)
		return nil, usage("%s", explainParseError(msg, fs))
	}
	c.Args = append(c.Args, ffs.GetArgs()...)
	if f, ok := ffs.GetFlag("config"); ok {
		c.ConfigFile = f.GetValue()
	}
	if c.MongoURI == "" {
		// Flags, environment and file said nothing: the systemd credential.
		uri, _, err := readCredential(credMongoURI)
		if err != nil {
			return nil, usage("%v", err)
		}
		c.MongoURI = uri
	}
	if c.Version {
		c.Command = "version"
	}
	p.RotateUnauthorized = &rotateUnauth
	if len(file.pools) > 0 {
		if c.Pools, c.Overrides, err = file.resolvePools(p); err != nil {
			return nil, err
		}
	} else {
		c.Pools = []PoolConfig{p}
	}
	if c.LeaseRen == 0 {
		c.LeaseRen = c.LeaseDur * 2 / 3
	}
	if c.LeaseRetr == 0 {
		c.LeaseRetr = c.LeaseDur * 2 / 15
	}
	return c, c.validate()
}

// jsonParser reads a JSON object: flat keys are flag names (ff applies them
// with the right precedence and rejects unknown ones); "pools" is a list of
// pool objects, decoded strictly.
// explainParseError replaces the flag package's bare "parse error" (it drops
// strconv's reason) with what the setting wants, whichever of the flag, the
// environment variable or the file key carried the value.
func explainParseError(msg string, fs *flag.FlagSet) string {
	rest, ok := strings.CutSuffix(msg, "parse error")
	if !ok {
		return msg
	}
	want := ""
	fs.VisitAll(func(f *flag.Flag) {
		env := "SPENDCHECKER_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_")) + "="
		if !strings.Contains(msg, "--"+f.Name+":") && !strings.Contains(msg, env) && !strings.Contains(msg, "config file: "+f.Name+":") {
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
	if want == "" {
		return msg
	}
	return rest + want
}

func jsonParser(st *fileState, ffs *ff.FlagSet) ff.ConfigFileParseFunc {
	return func(r io.Reader, set func(name, value string) error) error {
		// ff reads the file last: what is set now came from a flag or the
		// environment.
		_ = ffs.WalkFlags(func(f ff.Flag) error {
			if name, ok := f.GetLongName(); ok && f.IsSet() {
				st.user[name] = true
			}
			return nil
		})
		var top map[string]json.RawMessage
		dec := json.NewDecoder(r)
		if err := dec.Decode(&top); err != nil {
			return fmt.Errorf("config file: %w", err)
		}
		for k, raw := range top {
			if k == "pools" {
				pd := json.NewDecoder(bytes.NewReader(raw))
				pd.DisallowUnknownFields()
				if err := pd.Decode(&st.pools); err != nil {
					return fmt.Errorf("config file: pools: %w", err)
				}
				var present []map[string]json.RawMessage
				_ = json.Unmarshal(raw, &present)
				for _, m := range present {
					keys := map[string]bool{}
					for k := range m {
						keys[k] = true
					}
					st.present = append(st.present, keys)
				}
				continue
			}
			if k == "config" {
				return errors.New("config file: \"config\" cannot be set from a config file")
			}
			st.top[k] = true
			var v any
			if err := json.Unmarshal(raw, &v); err != nil {
				return fmt.Errorf("config file: %s: %w", k, err)
			}
			var s string
			switch x := v.(type) {
			case string:
				s = x
			case bool:
				s = strconv.FormatBool(x)
			case float64:
				s = strconv.FormatFloat(x, 'f', -1, 64)
			default:
				return fmt.Errorf("config file: %s: want a string, number or boolean", k)
			}
			if err := set(k, s); err != nil {
				// ff's error starts with the name again.
				return fmt.Errorf("config file: %s: set %q: %s", k, s, strings.TrimPrefix(err.Error(), k+": "))
			}
		}
		return nil
	}
}

func (c *Config) validate() error {
	// Flags after a stray argument are not parsed: say so before anything
	// they would have set looks missing.
	if len(c.Args) > 0 && c.Command != "rotate" {
		return usage("unexpected argument %q (flags go before arguments)", c.Args[0])
	}
	if c.Command == "rotate" && len(c.Args) > 1 {
		return usage("unexpected argument %q (flags go before arguments)", c.Args[1])
	}
	needsDB := c.Command != "healthcheck" && c.Command != "version"
	uriFlag := "--mongo-uri"
	if needsDB {
		uriFlag = proxyEnvFallback(c)
	}
	if needsDB && c.MongoURI == "" {
		return usage("--mongo-uri (or SPENDCHECKER_MONGO_URI, the systemd credential mongo-uri, or the proxy's MONGODB_URI) is required")
	}
	if c.MongoURI != "" {
		u, err := url.Parse(c.MongoURI)
		if err != nil || (u.Scheme != "mongodb" && u.Scheme != "mongodb+srv") {
			return usage("%s must be a mongodb:// or mongodb+srv:// URI", uriFlag)
		}
		if err := validateURI(u); err != nil {
			return usage("--mongo-uri: %v", err)
		}
		if c.Database == "" && uriFlag != envProxyURI {
			c.Database = strings.TrimPrefix(u.Path, "/")
		}
	}
	if c.Database == "" {
		c.Database = "fproxy"
	}
	if c.Schedule != "" {
		parser := cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)
		if len(strings.Fields(c.Schedule)) == 6 {
			parser = cron.NewParser(cron.Second | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)
		}
		if _, err := parser.Parse(c.Schedule); err != nil {
			return usage("--schedule %q: %v", c.Schedule, err)
		}
	}
	switch {
	case c.Interval <= 0:
		return usage("--interval must be positive")
	case c.MinCheck <= 0 || c.MaxCheck < c.MinCheck:
		return usage("--min-check-interval must be positive and at most --max-check-interval")
	case c.Conc <= 0 || c.Conc > 10000:
		return usage("--concurrency must be between 1 and 10000")
	case c.ReqTO <= 0:
		return usage("--request-timeout must be positive")
	case c.RateLimit < 0:
		return usage("--rate-limit must not be negative")
	case c.HostRate < 0:
		return usage("--host-rate must not be negative")
	case !(c.RejectShare >= 0 && c.RejectShare <= 1):
		return usage("--reject-share must be between 0 (off) and 1")
	case c.RejectMin < 1:
		return usage("--reject-min must be at least 1")
	case c.LeaseName == "" || c.Instance == "":
		return usage("--lease-name and --instance must not be empty")
	case !(c.LeaseRetr > 0 && c.LeaseRetr < c.LeaseRen && c.LeaseRen < c.LeaseDur):
		return usage("lease timings must satisfy 0 < retry period (%s) < renew deadline (%s) < lease duration (%s)", c.LeaseRetr, c.LeaseRen, c.LeaseDur)
	case c.Grace < 0:
		return usage("--shutdown-grace must not be negative")
	case c.StoreWait <= 0:
		return usage("--store-wait must be positive")
	}
	switch c.LogFormat {
	case "auto", "text", "json":
	default:
		return usage("--log-format must be auto, text or json")
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return usage("--log-level must be debug, info, warn or error")
	}
	if c.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			return usage("--listen %q: %v", c.Listen, err)
		}
	}
	if c.Command == "rotate" && len(c.Args) != 1 {
		return usage("usage: spendchecker rotate KEY_ID [--reason R]")
	}
	if c.Command == "history" {
		if _, err := parseSince(c.Since, time.Now()); err != nil {
			return usage("--since: %v", err)
		}
	}
	if c.Command == "" && !c.Once {
		var err error
		if c.RotateToken, err = rotateToken(c.RotateTokenFile); err != nil {
			return err
		}
	}
	for i := range c.Pools {
		if c.Pools[i].Provider == "" {
			c.Pools[i].Provider = presetProvider(c.Pools[i].Pool)
		}
	}
	names := map[string]bool{}
	for _, p := range c.Pools {
		pool, err := p.resolve()
		if err != nil {
			return &UsageError{err}
		}
		if names[pool.Name] {
			return usage("pool %q configured twice", pool.Name)
		}
		names[pool.Name] = true
		if p.Threshold <= 0 || p.Threshold != p.Threshold {
			return usage("pool %s: --threshold must be greater than 0", pool.Name)
		}
		if p.BudgetRatio < 0 || p.BudgetRatio > 1 {
			return usage("pool %s: --budget-ratio must be between 0 and 1", pool.Name)
		}
		if !(p.MinRemaining >= 0) || math.IsInf(p.MinRemaining, 1) {
			// NaN never rotates, +Inf rotates every key (README, Providers).
			return usage("pool %s: --min-remaining must be a finite number, 0 or more", pool.Name)
		}
		if p.Provider == "" {
			continue
		}
		if _, err := p.newProvider(&spend.Client{}); err != nil {
			return usage("pool %s: %v", pool.Name, err)
		}
	}
	for _, p := range c.Pools {
		// Only polling talks to the upstream: recover, verify, status,
		// rotate and history work on a pool without a provider.
		if p.Provider == "" && c.Command == "" {
			return usage("pool %s: no built-in provider serves its upstream; name one with --provider (%s) and --provider-url, or \"provider\" in its config entry",
				p.Pool, strings.Join(spend.Names, ", "))
		}
	}
	return nil
}

// presetProvider is the provider that serves a preset's upstream. The
// factory pool's keys talk to an upstream no built-in provider serves, so it
// must name one (README, "Running next to the proxy").
func presetProvider(pool string) string {
	if pool == "openhands" {
		return "openhands"
	}
	return ""
}

// The serving proxy's own variables (its db package).
const (
	envProxyURI = "MONGODB_URI"
	envProxyDB  = "MONGODB_DB_NAME"
)

// proxyEnvFallback fills the URI and database from the proxy's variables
// when neither a flag, SPENDCHECKER_* nor the file set them, so a sidecar
// sharing the proxy's environment uses the proxy's database (README,
// "Running next to the proxy"). It returns the name the URI came by.
func proxyEnvFallback(c *Config) string {
	from := "--mongo-uri"
	if c.MongoURI == "" {
		if v := os.Getenv(envProxyURI); v != "" {
			c.MongoURI, from = v, envProxyURI
		}
	}
	if c.Database == "" {
		// Above our URI's path: the proxy reads this name, whatever its
		// URI's path says (that path is only the authentication database).
		c.Database = os.Getenv(envProxyDB)
	}
	return from
}

// resolve turns the preset and overrides into the rotation package's Pool.
func (p PoolConfig) resolve() (rotation.Pool, error) {
	pool, err := rotation.Preset(p.Pool)
	if err != nil {
		return pool, fmt.Errorf("--pool: %w", err)
	}
	for _, o := range []struct {
		dst *string
		v   string
	}{
		{&pool.KeysCollection, p.KeysCollection}, {&pool.BackupsCollection, p.BackupsCollection},
		{&pool.BindingsCollection, p.BindingsCollection}, {&pool.BindingKeyField, p.BindingKeyField},
		{&pool.HistoryCollection, p.HistoryCollection},
	} {
		if o.v != "" {
			*o.dst = o.v
		}
	}
	return pool, pool.Validate()
}

// parseSince reads --since: a duration back from now, in Go's units or with
// whole days first (7d, 1d12h), or a date (README, "Operations").
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	if days, rest, ok := strings.Cut(s, "d"); ok && days != "" && strings.Trim(days, "0123456789") == "" {
		n, err := strconv.Atoi(days)
		d := time.Duration(0)
		if rest != "" {
			d, err = time.ParseDuration(rest)
		}
		if err == nil && d >= 0 && n <= 100000 {
			return now.AddDate(0, 0, -n).Add(-d), nil
		}
	}
	for _, layout := range []string{time.RFC3339, time.DateOnly} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is neither a duration (24h, 7d) nor a date (2006-01-02)", s)
}

func defaultInstance() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "spendchecker"
	}
	return fmt.Sprintf("%s-%d", h, os.Getpid())
}

// validateURI checks the connection string's options as the driver will
// read them, so a bad option is a usage error (exit 2) and not a failure
// to connect that a supervisor would restart for ever. A mongodb+srv:// URI
// is checked without its DNS lookup: a name that does not resolve now is
// an outage, not bad configuration.
func validateURI(u *url.URL) error {
	v := *u
	if v.Scheme == "mongodb+srv" {
		if v.Port() != "" || strings.Contains(v.Host, ",") || v.Hostname() == "" {
			return errors.New("a mongodb+srv:// URI names exactly one host, without a port")
		}
		q := v.Query()
		for k := range q {
			if strings.EqualFold(k, "srvServiceName") || strings.EqualFold(k, "srvMaxHosts") {
				q.Del(k)
			}
		}
		v.Scheme, v.RawQuery = "mongodb", q.Encode()
	}
	if err := options.Client().ApplyURI(v.String()).Validate(); err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "error parsing uri: "))
	}
	return nil
}
