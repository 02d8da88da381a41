package proxyrotate_test

import (
	"bytes"
	"go/version"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The proxy is built with Go 1.25 (its go.mod says go 1.25.3), so no module
// it would pull in through the rotator may ask for a newer Go (README,
// "Running next to the proxy"). .ci/run also builds ./rotation with a real
// go1.25.0 toolchain.
const proxyGo = "go1.25"

func goCmd(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	// Judge go directives with the toolchain at hand, never by switching.
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local", "GOFLAGS=-mod=mod", "GOWORK=off")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

func TestGoDirectivesAllowGo125(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	// Every module in the build of every package and test, ours included.
	out := goCmd(t, root, "list", "-deps", "-test", "-f", "{{with .Module}}{{.Path}} {{.GoVersion}}{{end}}", "./...")
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		path, gv, _ := strings.Cut(line, " ")
		if seen[path] || gv == "" {
			continue
		}
		seen[path] = true
		if version.Compare(version.Lang("go"+gv), proxyGo) > 0 {
			t.Errorf("module %s says go %s: a Go 1.25 program could not import the rotator", path, gv)
		}
	}
	if !seen["github.com/spendchecker/spendchecker"] || !seen["go.mongodb.org/mongo-driver/v2"] {
		t.Fatalf("go list did not report the expected modules:\n%s", out)
	}
}

// TestImportableByGo125Program builds a program on go 1.25.0 that imports
// the rotator, as the proxy would: the go command would raise the program's
// go line if anything it pulls in needed more.
func TestImportableByGo125Program(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	app := t.TempDir()
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"go.mod": "module example.com/proxy\n\ngo 1.25.0\n\nrequire github.com/spendchecker/spendchecker v0.0.0\n\n" +
			"replace github.com/spendchecker/spendchecker => " + root + "\n",
		"go.sum": string(sum),
		"main.go": `package main

import (
	"github.com/spendchecker/spendchecker/examples/proxyrotate"
	"github.com/spendchecker/spendchecker/rotation"
)

var _ = rotation.New
var _ = proxyrotate.Open

func main() {}
`,
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(app, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	goCmd(t, app, "build", "-o", os.DevNull, ".")
	mod, err := os.ReadFile(filepath.Join(app, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mod), "\ngo 1.25.0\n") {
		t.Fatalf("importing the rotator raised the program's go line:\n%s", mod)
	}
}
