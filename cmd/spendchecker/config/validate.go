package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/spendchecker/spendchecker/checker"
	"github.com/spendchecker/spendchecker/rotation"
	"github.com/spendchecker/spendchecker/spend"
)

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
		// The driver takes the scheme in lower case only; url.Parse would
		// take any case.
		u, err := url.Parse(c.MongoURI)
		if err != nil || !(strings.HasPrefix(c.MongoURI, "mongodb://") || strings.HasPrefix(c.MongoURI, "mongodb+srv://")) {
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
		c.Database = DefaultDatabase
	}
	if err := checkDatabaseName(c.Database); err != nil {
		return usage("database %q: %v", c.Database, err)
	}
	if c.Schedule != "" {
		parser := cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)
		if CronHasSeconds(c.Schedule) {
			parser = cron.NewParser(cron.Second | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)
		}
		if _, err := parser.Parse(c.Schedule); err != nil {
			return usage("--schedule %q: %v", c.Schedule, err)
		}
	}
	switch {
	case c.Interval <= 0:
		return usage("--interval must be positive")
	case c.MinCheckInterval <= 0 || c.MaxCheckInterval < c.MinCheckInterval:
		return usage("--min-check-interval must be positive and at most --max-check-interval")
	case c.Concurrency <= 0 || c.Concurrency > 10000:
		return usage("--concurrency must be between 1 and 10000")
	case c.RequestTimeout <= 0:
		return usage("--request-timeout must be positive")
	case !(c.RateLimit >= 0) || !finite(c.RateLimit):
		return usage("--rate-limit must be a finite number, 0 or more")
	case !(c.HostRate >= 0) || !finite(c.HostRate):
		return usage("--host-rate must be a finite number, 0 or more")
	case !(c.RejectShare >= 0 && c.RejectShare <= 1):
		return usage("--reject-share must be between 0 (off) and 1")
	case c.RejectMin < 1:
		return usage("--reject-min must be at least 1")
	case c.LeaseName == "" || c.Instance == "":
		return usage("--lease-name and --instance must not be empty")
	case !(c.LeaseRetryPeriod > 0 && c.LeaseRetryPeriod < c.LeaseRenewDeadline && c.LeaseRenewDeadline < c.LeaseDuration):
		return usage("lease timings must satisfy 0 < retry period (%s) < renew deadline (%s) < lease duration (%s)", c.LeaseRetryPeriod, c.LeaseRenewDeadline, c.LeaseDuration)
	case c.ShutdownGrace < 0:
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
	if c.Command == "rotate" && c.Args[0] == "" {
		return usage("rotate: the key id is empty (usage: spendchecker rotate KEY_ID [--reason R])")
	}
	if (c.Command == "status" || c.Command == "history") && c.Output != "text" && c.Output != "json" {
		return usage("--output must be text or json")
	}
	if c.Command == "history" {
		if _, err := ParseSince(c.Since, time.Now()); err != nil {
			return usage("--since: %v", err)
		}
	}
	if c.Command == "" && !c.Once {
		var err error
		if c.RotateToken, err = rotateToken(c.RotateTokenFile); err != nil {
			return err
		}
	}
	if !needsDB {
		return nil // no pool, no store
	}
	if err := c.validateNotify(); err != nil {
		return err
	}
	for i := range c.Pools {
		if c.Pools[i].Provider == "" {
			c.Pools[i].Provider = presetProvider(c.Pools[i].Pool)
		}
	}
	if err := loadBatch(c); err != nil {
		return err
	}
	if err := loadKeylife(c); err != nil {
		return err
	}
	names := map[string]bool{}
	var resolved []rotation.Pool
	for _, p := range c.Pools {
		pool, err := p.Resolve()
		if err != nil {
			return &UsageError{err}
		}
		if names[pool.Name] {
			return usage("pool %q configured twice", pool.Name)
		}
		names[pool.Name] = true
		if err := shareNoCollection(resolved, pool); err != nil {
			return err
		}
		resolved = append(resolved, pool)
		if !(p.Threshold > 0) || !finite(p.Threshold) {
			return usage("pool %s: --threshold must be greater than 0 and finite", pool.Name)
		}
		if !(p.BudgetRatio >= 0 && p.BudgetRatio <= 1) {
			return usage("pool %s: --budget-ratio must be between 0 and 1", pool.Name)
		}
		if !(p.MinRemaining >= 0) || math.IsInf(p.MinRemaining, 1) {
			// NaN never rotates, +Inf rotates every key (docs/providers.md).
			return usage("pool %s: --min-remaining must be a finite number, 0 or more", pool.Name)
		}
		if !(p.RatePrior >= 0) || math.IsInf(p.RatePrior, 1) {
			return usage("pool %s: --rate-prior must be a finite number of USD an hour, 0 or more", pool.Name)
		}
		if !(p.BurstFactor == 0 || p.BurstFactor >= 1 && p.BurstFactor <= checker.MaxBurstFactor) {
			return usage("pool %s: --burst-factor must be 0 (learned) or from 1 to %d", pool.Name, checker.MaxBurstFactor)
		}
		if _, err := rotation.ParseUserBudget(p.UserBudget); err != nil {
			return usage("pool %s: --%v", pool.Name, err)
		}
		if p.Provider == "" {
			continue
		}
		if _, err := p.NewProvider(&spend.Client{}); err != nil {
			return usage("pool %s: %v", pool.Name, err)
		}
	}
	for _, p := range c.Pools {
		// Only polling talks to the upstream: recover, verify, status,
		// rotate and history work on a pool without a provider.
		if p.Provider == "" && c.Command == "" {
			return usage("pool %s: no built-in provider serves its upstream; name one with --provider (%s) and --provider-url, or \"provider\" in its config entry",
				p.Pool, strings.Join(providerNames(), ", "))
		}
	}
	return nil
}

// shareNoCollection refuses a pool whose keys or backups collection is
// one of an earlier pool's: each pool would poll and rotate the other's
// documents through its own journal entries (unique per pool), so one
// backup could go live in both pools.
func shareNoCollection(earlier []rotation.Pool, p rotation.Pool) error {
	roles := func(q rotation.Pool) [][2]string {
		return [][2]string{{q.KeysCollection, "keys"}, {q.BackupsCollection, "backups"}}
	}
	for _, q := range earlier {
		for _, a := range roles(q) {
			for _, b := range roles(p) {
				if a[0] == b[0] {
					return usage("pools %s and %s share collection %q (%s of %s, %s of %s): give each pool its own keys and backups collections",
						q.Name, p.Name, a[0], a[1], q.Name, b[1], p.Name)
				}
			}
		}
	}
	return nil
}

// presetProvider is the provider that serves a preset's upstream. The
// factory pool's keys talk to an upstream no built-in provider serves, so it
// must name one (docs/proxy.md, "Running next to the proxy").
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
// sharing the proxy's environment uses the proxy's database (docs/proxy.md,
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

// Resolve turns the preset and overrides into the rotation package's Pool.
func (p PoolConfig) Resolve() (rotation.Pool, error) {
	pool, err := rotation.Preset(p.Pool)
	if err != nil {
		return pool, fmt.Errorf("--pool: %w", err)
	}
	for _, o := range []struct {
		dst        *string
		v, name    string
		collection bool
	}{
		{&pool.KeysCollection, p.KeysCollection, "keys collection", true},
		{&pool.BackupsCollection, p.BackupsCollection, "backups collection", true},
		{&pool.BindingsCollection, p.BindingsCollection, "bindings collection", true},
		{&pool.BindingKeyField, p.BindingKeyField, "binding key field", false},
		{&pool.HistoryCollection, p.HistoryCollection, "history collection", true},
	} {
		if o.v == "" {
			continue
		}
		// A space around a name (an environment file's trailing blank) would
		// name another, empty collection; system.* ones the store refuses.
		if strings.TrimSpace(o.v) != o.v {
			return pool, fmt.Errorf("pool %q: %s %q has spaces around it", pool.Name, o.name, o.v)
		}
		if o.collection && strings.HasPrefix(o.v, "system.") {
			return pool, fmt.Errorf("pool %q: %s %q: system.* names are reserved by MongoDB", pool.Name, o.name, o.v)
		}
		*o.dst = o.v
	}
	return pool, pool.Validate()
}

// checkDatabaseName refuses a name MongoDB refuses only at the first
// command (its rules on Unix, and the length limit).
func checkDatabaseName(name string) error {
	if strings.ContainsAny(name, "/\\. \"$\x00") || strings.TrimSpace(name) != name {
		return errors.New(`MongoDB refuses a database name holding / \ . " $, a space or NUL`)
	}
	if len(name) >= 64 {
		return fmt.Errorf("MongoDB takes database names of at most 63 bytes, not %d", len(name))
	}
	return nil
}

// ParseSince reads --since: a duration back from now, in Go's units or with
// whole days first (7d, 1d12h), or a date (docs/operating.md, "Operations").
func ParseSince(s string, now time.Time) (time.Time, error) {
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

// CronHasSeconds reports a 6-field expression (seconds first): validate
// reads --schedule so, and the scheduler must too.
func CronHasSeconds(expr string) bool {
	return len(strings.Fields(expr)) == 6
}
