// Command spendchecker keeps a pool of upstream LLM API keys healthy: it
// polls each key's spend and rotates keys over their threshold. See README.md and docs/.
package main

import (
	"os"

	"github.com/spendchecker/spendchecker/cmd/spendchecker/cli"
)

// cli.Main owns the signals: SIGTERM/SIGINT shut down gracefully (a second
// one exits at once), SIGHUP is ignored. It returns the exit code its one
// error-to-code mapping (cli.exitCode) chose; one file per command lives in
// cli/ (status.go, rotate.go, ...).
func main() {
	os.Exit(cli.Main(os.Args[1:], cli.Env{Stdout: os.Stdout, Stderr: os.Stderr}))
}
