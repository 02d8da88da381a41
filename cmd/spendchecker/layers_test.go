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
	"cmd/spendchecker":        6,
	"cmd/spendchecker/cli":    5,
	"cmd/spendchecker/config": 4, // the command line's settings: flags, environment, file, credentials, validation
	"rotation/proxyrotate":    5, // a proxy adopting the rotator
	"statuspage":              4, // the page at / and status's table: reads what checker, rotation and lease keep
	"checker":                 3,
	"retire":                  3, // disabling rotated keys upstream
	"refill":                  3, // creating backups upstream
	"rotation":                2,
	"lease":                   2,
	"notify":                  2, // webhook notifications: events, formats, delivery
	"keyadmin":                2, // the upstreams' key-management APIs
	"rotation/history":        1,
	"spend":                   1,
	"rotation/upstream":       0, // what an upstream's error answer says about the key
	"rotation/mongoidx":       0,
	"rotation/secret":         0, // how a secret is shown: masks, fingerprints, redacted texts
	"storeerr":                0, // a store error in one line
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

// configImports are the only packages of ours the configuration may
// import: those that own a setting's meaning or default. It connects to
// nothing and logs nothing (the program does, with what it returns), so
// the driver's client, HTTP and slog are out of it too.
var configImports = map[string]bool{
	"checker":  true, // cadence, concurrency and rejection defaults
	"lease":    true, // the lease duration's default
	"rotation": true, // pool presets, user-budget
	"spend":    true, // providers and their settings
	"notify":   true, // webhook URLs and formats
	"keyadmin": true, // which providers manage keys
	"refill":   true, // refill settings' checks
	"retire":   true, // retire-grace's default
}

var configNever = []string{"go.mongodb.org/mongo-driver/v2/mongo", "net/http", "log/slog"}

func TestConfigImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{join .Imports \" \"}}", module+"cmd/spendchecker/config").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, imp := range strings.Fields(string(out)) {
		if dep, ours := strings.CutPrefix(imp, module); ours && !configImports[dep] {
			t.Errorf("cmd/spendchecker/config imports %s: the configuration imports only the packages that own a setting (configImports)", dep)
		}
		for _, never := range configNever {
			if imp == never {
				t.Errorf("cmd/spendchecker/config imports %s: it reads settings and runs nothing", imp)
			}
		}
	}
}

// TestProductionBinaryDeps keeps the test store and the test support out
// of the shipped binary: the embedded FerretDB and its SQLite are for the
// tests and the demo only.
func TestProductionBinaryDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", module+"cmd/spendchecker").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		pkg, ours := strings.CutPrefix(dep, module)
		switch {
		case strings.HasPrefix(dep, "github.com/FerretDB/"), strings.HasPrefix(dep, "modernc.org/sqlite"):
			t.Errorf("the spendchecker binary links %s (the tests' embedded store)", dep)
		case dep == "testing", dep == "net/http/httptest":
			t.Errorf("the spendchecker binary links %s", dep)
		case ours && testSupport(pkg):
			t.Errorf("the spendchecker binary links %s (test, demo and bench support only)", pkg)
		}
	}
}
