package main_test

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/spendchecker/spendchecker/"

// layers is the tree read top-down (docs/design.md, "Architecture"): a package
// imports only packages of a lower layer. Test support, the demo and the
// bench (internal/, cmd/spendchecker-demo, bench) may import anything; no
// production package imports them.
var layers = map[string]int{
	"cmd/spendchecker":     6,
	"cmd/spendchecker/cli": 5,
	"rotation/proxyrotate": 5, // a proxy adopting the rotator
	"statuspage":           4, // the page at / and status's table: reads what checker, rotation and lease keep
	"checker":              3,
	"retire":               3, // disabling rotated keys upstream
	"refill":               3, // creating backups upstream
	"rotation":             2,
	"lease":                2,
	"notify":               2, // webhook notifications: events, formats, delivery
	"keyadmin":             2, // the upstreams' key-management APIs
	"rotation/history":     1,
	"spend":                1,
	"rotation/upstream":    0, // what an upstream's error answer says about the key
	"rotation/mongoidx":    0,
	"rotation/secret":      0, // how a secret is shown: masks, fingerprints, redacted texts
	"storeerr":             0, // a store error in one line
}

func testSupport(pkg string) bool {
	return strings.HasPrefix(pkg, "internal/") || pkg == "bench" || pkg == "cmd/spendchecker-demo"
}

func TestLayers(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", module+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(fields[0], module)
		if testSupport(pkg) {
			continue
		}
		layer, ok := layers[pkg]
		if !ok {
			t.Errorf("package %s has no layer: add it to layers (and to docs/design.md's architecture)", pkg)
			continue
		}
		for _, imp := range fields[1:] {
			dep, ours := strings.CutPrefix(imp, module)
			switch {
			case !ours:
			case testSupport(dep):
				t.Errorf("production package %s imports %s (test, demo and bench support only)", pkg, dep)
			case layers[dep] >= layer:
				t.Errorf("%s (layer %d) imports %s (layer %d): imports point down the tree only", pkg, layer, dep, layers[dep])
			}
		}
	}
}
