package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

func healthcheckCommand(c *Config, p *program) spec {
	return spec{
		name:  "healthcheck",
		usage: "spendchecker healthcheck [FLAGS]",
		short: "probe a running daemon's /healthz (for container health checks)",
		flags: func(fs *flag.FlagSet) {
			fs.String("config", credentialPath(credConfig), "read --listen from this JSON file (default: the systemd credential config.json)")
			listenFlag(fs, c)
		},
		exec: func(ctx context.Context, _ []string) error { return healthcheck(ctx, c, p.env.Stdout) },
	}
}

// healthcheck probes a running daemon's /healthz (for container checks).
func healthcheck(ctx context.Context, cfg *Config, out io.Writer) error {
	if cfg.Listen == "" {
		return usage("healthcheck needs --listen")
	}
	host, port, _ := net.SplitHostPort(cfg.Listen)
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(host, port)+"/healthz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return partial("unhealthy: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return partial("unhealthy: %s", resp.Status)
	}
	fmt.Fprintln(out, "healthy")
	return nil
}
