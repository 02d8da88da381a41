// Command embeddedstore runs the embedded store in a process of its own.
// Tests built with the race detector use it (internal/mongotest): FerretDB
// and its SQLite, C translated to Go, run about ten times slower
// instrumented, and they are not the code under test. It prints the store's
// URI on a line, serves until its standard input closes (the test process
// has ended), then removes its files. Errors go to standard error.
package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spendchecker/spendchecker/internal/embedded"
)

func main() {
	dir, err := os.MkdirTemp("", "spendchecker-store-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "embeddedstore:", err)
		os.Exit(1)
	}
	defer os.RemoveAll(dir)
	s, err := embedded.Start(dir, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	if err != nil {
		fmt.Fprintln(os.Stderr, "embeddedstore:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	fmt.Println(s.URI())
	_, _ = io.Copy(io.Discard, os.Stdin)
	s.Close()
}
