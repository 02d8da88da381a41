package config

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spendchecker/spendchecker/spend"
)

// Batch providers' settings (docs/providers.md, "Batch reports"). A pool's admin key
// is read, in this order, from its config entry's admin-key-file, the
// systemd credential admin-key-<pool>, or $SPENDCHECKER_ADMIN_KEY_<POOL>;
// never from the config file itself, which then need not be a secret.
const envAdminKeyPrefix = "SPENDCHECKER_ADMIN_KEY_"

// adminKeyEnv is the environment variable of a pool's admin key: the pool
// name upper-cased, anything but letters and digits as _.
func adminKeyEnv(pool string) string {
	return envAdminKeyPrefix + strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		}
		return '_'
	}, pool)
}

func adminKeyCredential(pool string) string { return "admin-key-" + pool }

// readAdminKey finds the pool's admin key; "" when none is given.
func readAdminKey(p PoolConfig) (string, error) {
	if p.AdminKeyFile != "" {
		b, err := os.ReadFile(p.AdminKeyFile)
		if err != nil {
			return "", fmt.Errorf("admin-key-file: %w", err)
		}
		k := strings.TrimSpace(string(b))
		if k == "" {
			return "", fmt.Errorf("admin-key-file %s is empty", p.AdminKeyFile)
		}
		return k, nil
	}
	if k, ok, err := readCredential(adminKeyCredential(p.Pool)); err != nil || ok {
		return k, err
	}
	return strings.TrimSpace(os.Getenv(adminKeyEnv(p.Pool))), nil
}

// loadBatch checks the batch settings of every pool and reads the admin
// keys. A polling run without a batch pool's admin key is a usage error;
// the commands that never poll do without it.
func loadBatch(c *Config) error {
	for i := range c.Pools {
		p := &c.Pools[i]
		if !spend.IsBatch(p.Provider) {
			if p.AdminKeyFile != "" || len(p.UpstreamKeyIDs) > 0 || p.ReportLag != "" || p.ReportSince != "" {
				return usage("pool %s: admin-key-file, upstream-key-ids, report-lag and report-since are settings of the batch providers (%s)",
					p.Pool, strings.Join(spend.BatchNames, ", "))
			}
			continue
		}
		if _, err := p.batchConfig(); err != nil {
			return usage("pool %s: %v", p.Pool, err)
		}
		k, err := readAdminKey(*p)
		if err != nil {
			return usage("pool %s: %v", p.Pool, err)
		}
		if k == "" && c.Command == "" {
			return usage("pool %s: provider %s needs an admin key: admin-key-file in the pool's config entry, the systemd credential %s, or $%s (docs/providers.md, \"Batch reports\")",
				p.Pool, p.Provider, adminKeyCredential(p.Pool), adminKeyEnv(p.Pool))
		}
		p.adminKey = k
	}
	return nil
}

// batchConfig is the pool's spend.BatchConfig.
func (p PoolConfig) batchConfig() (spend.BatchConfig, error) {
	bc := spend.BatchConfig{AdminKey: p.adminKey, KeyIDs: p.UpstreamKeyIDs}
	if p.ReportLag != "" {
		d, err := time.ParseDuration(p.ReportLag)
		if err != nil || d < 0 {
			return bc, fmt.Errorf("report-lag %q is not a duration of 0 or more (0: the provider's default)", p.ReportLag)
		}
		bc.Lag = d
	}
	if p.ReportSince != "" {
		var err error
		for _, layout := range []string{time.RFC3339, time.DateOnly} {
			if bc.Since, err = time.Parse(layout, p.ReportSince); err == nil {
				break
			}
		}
		if err != nil {
			return bc, fmt.Errorf("report-since %q is not a date (2006-01-02 or RFC 3339)", p.ReportSince)
		}
	}
	for id, up := range p.UpstreamKeyIDs {
		if id == "" || up == "" {
			return bc, fmt.Errorf("upstream-key-ids: an empty key id or report id (%q: %q)", id, up)
		}
	}
	return bc, nil
}

// newBatchProvider returns the pool's batch provider through c. A batch
// pool without its admin key (a command that never polls) gets none.
func (p PoolConfig) newBatchProvider(c *spend.Client) (spend.Provider, error) {
	if p.adminKey == "" {
		return nil, nil
	}
	bc, err := p.batchConfig()
	if err != nil {
		return nil, err
	}
	return spend.NewBatch(p.Provider, p.ProviderURL, c, bc)
}

// adminKeyFiles are the admin and management key files, for the
// readable-secret warning.
func adminKeyFiles(c *Config) []string {
	var out []string
	for _, p := range c.Pools {
		if p.AdminKeyFile != "" {
			out = append(out, p.AdminKeyFile)
		}
		if p.ManagementKeyFile != "" {
			out = append(out, p.ManagementKeyFile)
		}
	}
	return out
}
