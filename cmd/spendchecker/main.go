// Command spendchecker keeps a pool of upstream LLM API keys healthy: it
// polls each key's spend and rotates keys over their threshold. See README.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/spendchecker/spendchecker/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], cli.Env{Stdout: os.Stdout, Stderr: os.Stderr})
	stop()
	os.Exit(code)
}
