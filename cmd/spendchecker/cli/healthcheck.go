package cli

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/spendchecker/spendchecker/cmd/spendchecker/config"
)

// healthcheck probes a running daemon's /healthz (for container checks).
func healthcheck(ctx context.Context, cfg *config.Config, out io.Writer) error {
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
