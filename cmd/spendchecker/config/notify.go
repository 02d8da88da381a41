package config

import (
	"encoding/json"
	"errors"
	"strings"

	"github.com/spendchecker/spendchecker/notify"
)

// urlList is a repeatable flag; one value may hold several URLs separated
// by spaces (an environment variable or the file's list).
type urlList []string

func (l *urlList) String() string { return strings.Join(*l, " ") }
func (l *urlList) Set(s string) error {
	*l = append(*l, strings.Fields(s)...)
	return nil
}

// PoolNotify is a pool's "notify" entry in the config file; what it names
// replaces the top-level notification settings for that pool's events.
type PoolNotify struct {
	URL          stringOrList `json:"url"`
	Format       string       `json:"format"`
	BackupsBelow *int64       `json:"backups-below"`
}

// stringOrList reads "url" as one string or a list of them.
type stringOrList []string

func (s *stringOrList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*s = []string{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("url: want a string or a list of strings")
	}
	*s = many
	return nil
}

// validateNotify checks the notification settings (docs/operating.md,
// "Notifications"); errors name the URL without its secret.
func (c *Config) validateNotify() error {
	if _, err := notify.ParseFormat(c.NotifyFormat); err != nil {
		return usage("--notify-format: %v", err)
	}
	for _, u := range c.NotifyURLs {
		if _, err := notify.ParseURL(u); err != nil {
			return usage("--notify-url: %v", err)
		}
	}
	if c.NotifyBackupsBelow < 0 {
		return usage("--notify-backups-below must not be negative")
	}
	if c.NotifyNoCycle < 0 {
		return usage("--notify-no-cycle-after must not be negative")
	}
	for _, p := range c.Pools {
		if p.Notify == nil {
			continue
		}
		if p.Notify.Format != "" {
			if _, err := notify.ParseFormat(p.Notify.Format); err != nil {
				return usage("pool %s: notify: %v", p.Pool, err)
			}
		}
		if p.Notify.URL != nil && len(p.Notify.URL) == 0 {
			return usage("pool %s: notify: url is an empty list: name the pool's receivers, or leave url out for the top level's", p.Pool)
		}
		for _, u := range p.Notify.URL {
			if _, err := notify.ParseURL(u); err != nil {
				return usage("pool %s: notify: %v", p.Pool, err)
			}
		}
		if p.Notify.BackupsBelow != nil && *p.Notify.BackupsBelow < 0 {
			return usage("pool %s: notify: backups-below must not be negative", p.Pool)
		}
	}
	return nil
}

// NotifyConfig turns the settings into the notifier's routes.
func (cfg *Config) NotifyConfig() notify.Config {
	targets := func(urls []string, format string) []notify.Target {
		var ts []notify.Target
		for _, u := range urls {
			ts = append(ts, notify.Target{URL: u, Format: notify.Format(format)})
		}
		return ts
	}
	nc := notify.Config{
		Default:      notify.Route{Targets: targets(cfg.NotifyURLs, cfg.NotifyFormat), BackupsBelow: int64(cfg.NotifyBackupsBelow)},
		NoCycleAfter: cfg.NotifyNoCycle, Instance: cfg.Instance,
	}
	for _, p := range cfg.Pools {
		if p.Notify == nil {
			continue
		}
		pool, _ := p.Resolve() // validated by Parse
		r := notify.Route{BackupsBelow: nc.Default.BackupsBelow}
		format := cfg.NotifyFormat
		if p.Notify.Format != "" {
			format = p.Notify.Format
		}
		urls := []string(cfg.NotifyURLs)
		if len(p.Notify.URL) > 0 {
			urls = p.Notify.URL
		}
		r.Targets = targets(urls, format)
		if p.Notify.BackupsBelow != nil {
			r.BackupsBelow = *p.Notify.BackupsBelow
		}
		if nc.Pools == nil {
			nc.Pools = map[string]notify.Route{}
		}
		nc.Pools[pool.Name] = r
	}
	return nc
}
