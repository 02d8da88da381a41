package config

import (
	"fmt"
	"math"
	"os"
	"strings"
	"time"

	"github.com/spendchecker/spendchecker/keyadmin"
	"github.com/spendchecker/spendchecker/refill"
	"github.com/spendchecker/spendchecker/retire"
)

// A pool that refills and retires itself (docs/refill.md): its settings in
// the pool's config entry, its management key, and the passes the leader's
// cycle runs after the checks.

// A pool's management key (OpenRouter's management key, LiteLLM's master
// key) is read, in this order, from its entry's management-key-file, the
// systemd credential management-key-<pool>, $SPENDCHECKER_MANAGEMENT_KEY_<POOL>,
// or, for provider openrouter-keys, its admin key (the same management
// key); never from the config file itself.
const envManagementKeyPrefix = "SPENDCHECKER_MANAGEMENT_KEY_"

// DefaultRetireGrace is retire-grace's default.
const DefaultRetireGrace = retire.DefaultGrace

func managementKeyEnv(pool string) string {
	return envManagementKeyPrefix + strings.TrimPrefix(adminKeyEnv(pool), envAdminKeyPrefix)
}

func managementKeyCredential(pool string) string { return "management-key-" + pool }

// KeylifeSet reports whether the pool's entry has any refill or retire
// setting.
func (p PoolConfig) KeylifeSet() bool {
	return p.RefillSet() || p.Retire || p.RetireGrace != "" || p.RetireDeleteAfter != "" || p.ManagementKeyFile != ""
}

// RefillSet reports whether the pool's entry has any refill setting.
func (p PoolConfig) RefillSet() bool {
	return p.RefillBelow != 0 || p.RefillTo != 0 || p.RefillKeyLimit != 0 || p.RefillMaxKeys != 0 || p.RefillMaxUSD != 0
}

// readManagementKey finds the pool's management key; "" when none is given.
func readManagementKey(p PoolConfig) (string, error) {
	if p.ManagementKeyFile != "" {
		b, err := os.ReadFile(p.ManagementKeyFile)
		if err != nil {
			return "", fmt.Errorf("management-key-file: %w", err)
		}
		k := strings.TrimSpace(string(b))
		if k == "" {
			return "", fmt.Errorf("management-key-file %s is empty", p.ManagementKeyFile)
		}
		return k, nil
	}
	if k, ok, err := readCredential(managementKeyCredential(p.Pool)); err != nil || ok {
		return k, err
	}
	if k := strings.TrimSpace(os.Getenv(managementKeyEnv(p.Pool))); k != "" {
		return k, nil
	}
	if p.Provider == "openrouter-keys" {
		return p.adminKey, nil
	}
	return "", nil
}

// RefillConfig is the pool's refill settings; Limit defaults to the
// threshold rounded up to whole dollars (a $9.95 threshold, $10 keys).
func (p PoolConfig) RefillConfig() refill.Config {
	limit := p.RefillKeyLimit
	if limit == 0 {
		limit = math.Ceil(p.Threshold)
	}
	return refill.Config{Below: p.RefillBelow, To: p.RefillTo, Limit: limit, MaxKeysPerDay: p.RefillMaxKeys, MaxUSDPerDay: p.RefillMaxUSD}
}

// RetireTimes parses retire-grace and retire-delete-after.
func (p PoolConfig) RetireTimes() (grace, deleteAfter time.Duration, err error) {
	grace = DefaultRetireGrace
	if p.RetireGrace != "" {
		if grace, err = time.ParseDuration(p.RetireGrace); err != nil || grace <= 0 {
			return 0, 0, fmt.Errorf("retire-grace %q is not a positive duration", p.RetireGrace)
		}
	}
	if p.RetireDeleteAfter != "" {
		if deleteAfter, err = time.ParseDuration(p.RetireDeleteAfter); err != nil || deleteAfter <= 0 {
			return 0, 0, fmt.Errorf("retire-delete-after %q is not a positive duration", p.RetireDeleteAfter)
		}
	}
	return grace, deleteAfter, nil
}

// loadKeylife checks the refill and retire settings of every pool and
// reads the management keys. A pool whose key is missing keeps both off;
// keylifeOff says why (logged once at start).
func loadKeylife(c *Config) error {
	for i := range c.Pools {
		p := &c.Pools[i]
		if !p.KeylifeSet() {
			continue
		}
		if keyadmin.For(p.Provider) == "" || p.Custom != nil {
			return usage("pool %s: refill and retire need an upstream with a key-management API (provider openrouter, openrouter-keys or litellm), not %s", p.Pool, p.Provider)
		}
		if p.RefillSet() {
			if p.RefillBelow == 0 || p.RefillTo == 0 {
				return usage("pool %s: refill needs refill-below and refill-to", p.Pool)
			}
			if !finite(p.RefillKeyLimit) || !finite(p.RefillMaxUSD) {
				return usage("pool %s: refill-key-limit and refill-max-usd-per-day must be finite numbers", p.Pool)
			}
			// A 0 written is a value, not the default: a cap of 0 would
			// otherwise create the default keys a day.
			for _, k := range []struct {
				name string
				zero bool
			}{{"refill-max-keys-per-day", p.RefillMaxKeys == 0}, {"refill-max-usd-per-day", p.RefillMaxUSD == 0}, {"refill-key-limit", p.RefillKeyLimit == 0}} {
				if k.zero && p.set[k.name] {
					return usage("pool %s: %s must be above 0 (to stop creating keys, remove refill-below and refill-to)", p.Pool, k.name)
				}
			}
			if err := p.RefillConfig().Validate(); err != nil {
				return usage("pool %s: %v", p.Pool, err)
			}
		}
		if !p.Retire && (p.RetireGrace != "" || p.RetireDeleteAfter != "") {
			return usage(`pool %s: retire-grace and retire-delete-after need "retire": true`, p.Pool)
		}
		if _, _, err := p.RetireTimes(); err != nil {
			return usage("pool %s: %v", p.Pool, err)
		}
		k, err := readManagementKey(*p)
		if err != nil {
			return usage("pool %s: %v", p.Pool, err)
		}
		if k == "" {
			p.keylifeOff = fmt.Sprintf("no management key: management-key-file in the pool's entry, the systemd credential %s, or $%s",
				managementKeyCredential(p.Pool), managementKeyEnv(p.Pool))
			continue
		}
		p.managementKey = k
	}
	return nil
}

// ManagementKey is the pool's management key, read by Parse; "" when
// refill and retire are off (KeylifeOff says why).
func (p PoolConfig) ManagementKey() string { return p.managementKey }

// KeylifeOff is why the pool's refill and retire are off though its entry
// sets them: no management key.
func (p PoolConfig) KeylifeOff() string { return p.keylifeOff }
