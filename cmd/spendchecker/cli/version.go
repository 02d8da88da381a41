package cli

import (
	"fmt"
	"runtime/debug"
)

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
