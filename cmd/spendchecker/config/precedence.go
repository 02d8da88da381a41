package config

import (
	"strconv"
	"strings"
)

// fileState is what the config file said, and which settings the command
// line or the environment had set before it was read.
type fileState struct {
	pools   []PoolConfig
	present []map[string]bool // per pool entry: the keys it sets (zero and false included)
	top     map[string]bool   // top-level keys the file sets
	user    map[string]bool   // settings given by a flag or an environment variable
}

// Pool settings that a flag overrides in every pool, and those that name
// one pool's collections.
var (
	poolSettings       = append([]string{"provider", "provider-url"}, rotationSettings...)
	rotationSettings   = []string{"threshold", "budget-ratio", "rotate-unauthorized", "min-remaining", "account", "user-budget", "rate-prior", "burst-factor"}
	collectionSettings = []string{"keys-collection", "backups-collection", "bindings-collection", "binding-key-field", "history-collection"}
)

// resolvePools applies the precedence of pool settings (docs/configuration.md,
// "Precedence of pool settings"): a flag, then the environment, then the pool's own entry
// in the file, then the file's top level, then the default. top holds the
// value ff settled on from all but the pool entries. An explicit zero or
// false in an entry is a value. A --pool from the command line, the
// environment or the file's top level selects one of the file's pools.
func (st *fileState) resolvePools(top PoolConfig) ([]PoolConfig, []Override, error) {
	type entry struct {
		p   PoolConfig
		set map[string]bool
	}
	var entries []entry
	var names []string
	for i, fp := range st.pools {
		if !st.present[i]["pool"] {
			fp.Pool = top.Pool
		}
		names = append(names, fp.Pool)
		entries = append(entries, entry{fp, st.present[i]})
	}
	if st.user["pool"] || st.top["pool"] {
		var kept []entry
		for _, e := range entries {
			if e.p.Pool == top.Pool {
				kept = append(kept, e)
			}
		}
		if len(kept) == 0 {
			return nil, nil, usage("--pool %q is not among the config file's pools (%s)", top.Pool, strings.Join(names, ", "))
		}
		entries = kept
	}
	for _, k := range collectionSettings {
		if (st.user[k] || st.top[k]) && len(entries) > 1 {
			name := "--" + k
			if !st.user[k] {
				name = "config file: " + k
			}
			return nil, nil, usage("%s names one pool's collection; with %d pools in the config file, select one with --pool or set it in the pool's entry", name, len(entries))
		}
	}
	if (st.user["account"] || st.top["account"]) && len(entries) > 1 {
		// One label for every pool's keys would tell the poller that keys
		// of different pools (different upstream accounts, as a rule) share
		// one balance (docs/providers.md, "Balance providers").
		name := "--account"
		if !st.user["account"] {
			name = "config file: account"
		}
		return nil, nil, usage("%s names one upstream account; with %d pools in the config file, set \"account\" in each pool's entry or select one pool with --pool", name, len(entries))
	}
	var out []PoolConfig
	var overrides []Override
	for _, e := range entries {
		fp := e.p
		for _, k := range append(append([]string{}, poolSettings...), collectionSettings...) {
			switch {
			case st.user[k]:
				if e.set[k] && showSetting(&fp, k) != showSetting(&top, k) {
					overrides = append(overrides, Override{Pool: fp.Pool, Setting: k, Value: showSetting(&top, k), FileValue: showSetting(&fp, k)})
				}
				copySetting(&fp, &top, k)
			case e.set[k]:
			case k == "provider-url" && fp.Provider != top.Provider:
				// Another provider than the top level's: its own default URL.
			default:
				copySetting(&fp, &top, k)
			}
		}
		fp.set = e.set
		out = append(out, fp)
	}
	return out, overrides, nil
}

func (p *PoolConfig) setting(k string) any {
	switch k {
	case "provider":
		return &p.Provider
	case "provider-url":
		return &p.ProviderURL
	case "threshold":
		return &p.Threshold
	case "budget-ratio":
		return &p.BudgetRatio
	case "rotate-unauthorized":
		return &p.RotateUnauthorized
	case "min-remaining":
		return &p.MinRemaining
	case "rate-prior":
		return &p.RatePrior
	case "burst-factor":
		return &p.BurstFactor
	case "account":
		return &p.Account
	case "user-budget":
		return &p.UserBudget
	case "keys-collection":
		return &p.KeysCollection
	case "backups-collection":
		return &p.BackupsCollection
	case "bindings-collection":
		return &p.BindingsCollection
	case "binding-key-field":
		return &p.BindingKeyField
	case "history-collection":
		return &p.HistoryCollection
	}
	panic("unknown pool setting " + k)
}

func copySetting(dst, src *PoolConfig, k string) {
	switch d := dst.setting(k).(type) {
	case *string:
		*d = *src.setting(k).(*string)
	case *float64:
		*d = *src.setting(k).(*float64)
	case **bool:
		*d = *src.setting(k).(**bool)
	}
}

func showSetting(p *PoolConfig, k string) string {
	switch v := p.setting(k).(type) {
	case *string:
		return *v
	case *float64:
		return strconv.FormatFloat(*v, 'f', -1, 64)
	case **bool:
		if *v != nil {
			return strconv.FormatBool(**v)
		}
	}
	return ""
}
