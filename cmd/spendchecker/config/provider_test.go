package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/spendchecker/spendchecker/spend"
)

func TestCustomProviderConfig(t *testing.T) {
	pool := func(custom string) string {
		return `{"pools":[{"pool":"factory","provider":"custom","account":"acme","min-remaining":2.5,"custom":` + custom + `}]}`
	}
	good := pool(`{"url":"https://api.example.com/v1/me?k={{.Key | urlquery}}","headers":{"X-Api-Key":"{{.Key}}"},
		"remaining":"data.balance","currency":"data.currency","ok":"success","scale":0.01,"min-interval":"1s"}`)
	c, err := Parse([]string{"--mongo-uri", uri, "--config", writeFile(t, good)})
	if err != nil {
		t.Fatal(err)
	}
	if p := c.Pools[0]; p.Custom == nil || p.Account != "acme" || p.MinRemaining != 2.5 || p.Custom.Remaining != "data.balance" {
		t.Fatalf("pool %+v", p)
	}
	bad := map[string]string{
		"path":            pool(`{"url":"https://x/","spend":"data..usage"}`),
		"template":        pool(`{"url":"https://x/{{.Key","spend":"a"}`),
		"template field":  pool(`{"url":"https://x/{{.Token}}","spend":"a"}`),
		"header template": pool(`{"url":"https://x/","spend":"a","headers":{"X-K":"{{end}}"}}`),
		"no figure":       pool(`{"url":"https://x/"}`),
		"unknown setting": pool(`{"url":"https://x/","spend":"a","spend-path":"b"}`),
		"missing":         `{"pools":[{"pool":"factory","provider":"custom"}]}`,
		"wrong provider":  `{"pools":[{"pool":"factory","provider":"litellm","provider-url":"https://x","custom":{"url":"https://x/","spend":"a"}}]}`,
	}
	for name, file := range bad {
		_, err := Parse([]string{"--mongo-uri", uri, "--config", writeFile(t, file)})
		var ue *UsageError
		if !errors.As(err, &ue) {
			t.Errorf("%s: err %v, want a usage error (exit 2)", name, err)
			continue
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %q is not one line", name, err)
		}
	}
}

func TestBalanceProviderFlags(t *testing.T) {
	c, err := Parse([]string{"--mongo-uri", uri, "--pool", "factory", "--provider", "deepseek", "--min-remaining", "0.5", "--account", "team-a"})
	if err != nil {
		t.Fatal(err)
	}
	if p := c.Pools[0]; p.MinRemaining != 0.5 || p.Account != "team-a" {
		t.Fatalf("pool %+v", p)
	}
	if _, err := Parse([]string{"--mongo-uri", uri, "--pool", "factory", "--provider", "oneapi"}); err == nil {
		t.Fatal("oneapi without a URL accepted")
	}
}

func TestStatusSaysWhatRotates(t *testing.T) {
	for _, tc := range []struct {
		p    PoolConfig
		want float64 // -1: a spend pool
	}{
		{PoolConfig{Provider: "litellm", Threshold: 9.95}, -1},
		{PoolConfig{Provider: "oneapi", Threshold: 5}, -1},
		{PoolConfig{Provider: "deepseek", Threshold: 9.95, MinRemaining: 1}, 1},
		{PoolConfig{Provider: "custom", Custom: &spend.CustomSpec{Remaining: "a"}, MinRemaining: 2}, 2},
		{PoolConfig{Provider: "custom", Custom: &spend.CustomSpec{Spend: "a"}, Threshold: 3}, -1},
	} {
		got := -1.0
		if m := tc.p.BalanceMinimum(); m != nil {
			got = *m
		}
		if got != tc.want {
			t.Errorf("%+v: %v, want %v", tc.p, got, tc.want)
		}
	}
}
