package cli

import (
	"context"
	"fmt"
	"runtime/debug"
)

func versionCommand(_ *Config, p *program) spec {
	return spec{
		name:  "version",
		usage: "spendchecker version",
		short: "print the version",
		exec: func(context.Context, []string) error {
			fmt.Fprintln(p.env.Stdout, versionString())
			return nil
		},
	}
}

func versionString() string {
	v := Version
	if bi, ok := debug.ReadBuildInfo(); ok && v == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v = bi.Main.Version
	}
	gv := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		gv = bi.GoVersion
	}
	return fmt.Sprintf("spendchecker %s (%s)", v, gv)
}
