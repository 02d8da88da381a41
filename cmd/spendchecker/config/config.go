// Package config is spendchecker's command line: the commands and their
// flags, the SPENDCHECKER_* environment, the --config file, the systemd
// credentials, and the checks that turn a bad setting into one clear line
// (exit 2) before anything runs. Flags win over the environment, which wins
// over the file, which wins over the defaults. It reads settings and runs
// nothing: package cli runs the command Parse selected.
package config

import (
	"time"

	"github.com/spendchecker/spendchecker/checker"
	"github.com/spendchecker/spendchecker/lease"
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
	MinRemaining float64 `json:"min-remaining"`
	// RatePrior (USD an hour) and BurstFactor tune the adaptive planner
	// (checker.Pool; docs/design.md, "Adaptive cadence"); 0 is the default.
	RatePrior   float64           `json:"rate-prior"`
	BurstFactor float64           `json:"burst-factor"`
	Account     string            `json:"account"`
	Custom      *spend.CustomSpec `json:"custom,omitempty"`
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
	// RotateTokenFile and RotateToken enable POST /v1/rotate (served by package cli).
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

// New is a Config holding every default: a command that has no flag for a
// setting runs with its default.
func New() *Config {
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
