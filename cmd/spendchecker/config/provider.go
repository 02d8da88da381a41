package config

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spendchecker/spendchecker/spend"
)

// NewProvider builds a pool's provider: a built-in by name, a batch
// provider (batch.go), or "custom" from the pool's "custom" entry in the
// config file (docs/providers.md).
func (p PoolConfig) NewProvider(c *spend.Client) (spend.Provider, error) {
	if spend.IsBatch(p.Provider) && p.Custom == nil {
		return p.newBatchProvider(c)
	}
	if !slices.Contains(providerNames(), p.Provider) {
		return nil, fmt.Errorf("unknown provider %q%s (known: %s)", p.Provider, didYouMean(p.Provider, providerNames(), ""), strings.Join(providerNames(), ", "))
	}
	if p.Provider != "custom" {
		if p.Custom != nil {
			return nil, errors.New(`"custom" is set but the provider is ` + p.Provider + `; set "provider": "custom"`)
		}
		return spend.New(p.Provider, p.ProviderURL, c)
	}
	if p.Custom == nil {
		return nil, errors.New(`provider custom needs a "custom" object in the pool's entry of the config file`)
	}
	return spend.NewCustom(*p.Custom, c)
}

// providerNames are every provider's name: the built-in ones, custom and
// the batch providers.
func providerNames() []string {
	return slices.Concat(spend.Names, []string{"custom"}, spend.BatchNames)
}

// BalanceMinimum is the pool's minimum remaining when its provider reads a
// balance (the remaining kind), for status; nil for a spend provider
// (docs/providers.md).
func (p PoolConfig) BalanceMinimum() *float64 {
	switch {
	case p.Provider == "deepseek" || p.Provider == "moonshot" || p.Provider == "siliconflow" ||
		p.Provider == "custom" && p.Custom != nil && p.Custom.Remaining != "":
		v := p.MinRemaining
		return &v
	}
	return nil
}
