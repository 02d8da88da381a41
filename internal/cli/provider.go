package cli

import (
	"errors"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/spend"
)

// newProvider builds a pool's provider: a built-in by name, or "custom"
// from the pool's "custom" entry in the config file (README, Providers).
func (p PoolConfig) newProvider(c *spend.Client) (spend.Provider, error) {
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

// readingColumns adjusts status's SPEND and % THRESHOLD columns for the
// other kinds: a balance shows what remains, a key without a reading (a
// one-api unlimited token) says so rather than $0 (README, Providers).
func readingColumns(d bson.Raw, spendS, pct string) (string, string) {
	if v, err := d.LookupErr("spendRemaining"); err == nil {
		if f, ok := v.AsFloat64OK(); ok {
			cur, _ := d.Lookup("spendCurrency").StringValueOK()
			return remainingString(f, cur), "-"
		}
	}
	if e, _ := d.Lookup("spendCheckError").StringValueOK(); e == "no_reading" {
		return "no reading (unlimited)", "-"
	}
	return spendS, pct
}

func remainingString(v float64, currency string) string {
	if currency == "" {
		currency = "(currency unknown)"
	}
	return fmt.Sprintf("left %.2f %s", v, currency)
}

// rotatesAt says what rotates a pool's keys, for status: the threshold, or
// for a balance provider the minimum remaining.
func (p PoolConfig) rotatesAt() string {
	switch {
	case p.Provider == "deepseek" || p.Provider == "moonshot" || p.Provider == "siliconflow" ||
		p.Provider == "custom" && p.Custom != nil && p.Custom.Remaining != "":
		return fmt.Sprintf("min remaining %.2f", p.MinRemaining)
	}
	return fmt.Sprintf("threshold $%.2f", p.Threshold)
}
