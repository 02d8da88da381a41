package config

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spendchecker/spendchecker/notify"
)

func TestNotifyFlags(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.json")
	if err := os.WriteFile(file, []byte(`{"notify-url": ["https://a.example/h1", "https://b.example/h2"], "notify-format": "slack",
  "pools": [{"pool": "openhands"}, {"pool": "factory", "provider": "litellm", "provider-url": "http://litellm:4000",
    "notify": {"url": "https://hooks.slack.com/services/T0/B0/X", "format": "discord", "backups-below": 4}}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse([]string{"--mongo-uri", uri, "--config", file, "--notify-backups-below", "2"})
	if err != nil {
		t.Fatal(err)
	}
	nc := cfg.NotifyConfig()
	if len(nc.Default.Targets) != 2 || nc.Default.Targets[1].URL != "https://b.example/h2" || nc.Default.Targets[0].Format != notify.Slack || nc.Default.BackupsBelow != 2 {
		t.Errorf("default route %+v", nc.Default)
	}
	if f := nc.Pools["factory"]; len(f.Targets) != 1 || f.Targets[0].Format != notify.Discord || f.BackupsBelow != 4 {
		t.Errorf("factory route %+v", f)
	}
	if _, ok := nc.Pools["openhands"]; ok {
		t.Error("openhands has no notify entry: it takes the default route")
	}
	if cfg.NotifyNoCycle != 15*time.Minute {
		t.Errorf("--notify-no-cycle-after default %s", cfg.NotifyNoCycle)
	}
	t.Setenv("SPENDCHECKER_NOTIFY_URL", "https://c.example/1 https://d.example/2")
	t.Setenv("SPENDCHECKER_NOTIFY_FORMAT", "discord")
	t.Setenv("SPENDCHECKER_NOTIFY_NO_CYCLE_AFTER", "5m")
	cfg, err = Parse([]string{"--mongo-uri", uri})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.NotifyURLs) != 2 || cfg.NotifyFormat != "discord" || cfg.NotifyNoCycle != 5*time.Minute {
		t.Errorf("from the environment: %v %s %s", cfg.NotifyURLs, cfg.NotifyFormat, cfg.NotifyNoCycle)
	}
	cfg, err = Parse([]string{"--mongo-uri", uri, "--notify-url", "https://e.example/1", "--notify-url", "https://f.example/2"})
	if err != nil || len(cfg.NotifyURLs) != 2 || cfg.NotifyURLs[0] != "https://e.example/1" {
		t.Errorf("repeated flag: %v %v", cfg.NotifyURLs, err)
	}
}
