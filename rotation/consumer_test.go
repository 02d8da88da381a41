package rotation_test

import (
	"bytes"
	"encoding/json"
	"go/version"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// consumerGo and consumerV1 are the proxy's: its go.mod says go 1.25 and
// requires mongo-driver v1.13.1.
const (
	consumerGo = "1.25"
	consumerV1 = "v1.13.1"
	ourModule  = "github.com/spendchecker/spendchecker/rotation"
)

// TestConsumerModuleGraph builds the proxy's situation twice — a module on
// go 1.25 with mongo-driver v1.13.1, importing mongo-driver v2 alone
// (the control), then importing every package of the rotator's module
// through a replace to this checkout — tidies both, and fails on any
// difference in `go list -m all` other than the rotator's own line: taking
// the rotator must move none of the consumer's modules beyond what
// mongo-driver v2 itself does, nor its go line.
func TestConsumerModuleGraph(t *testing.T) {
	if testing.Short() {
		t.Skip("tidies two modules through the module proxy")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatalf("no go command: %v", err)
	}
	root, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	v2 := requiredVersion(t, root, "go.mongodb.org/mongo-driver/v2")

	// The v1 client stays in use, as in the proxy, so tidy keeps it.
	const useV1 = `	mongov1 "go.mongodb.org/mongo-driver/mongo"
`
	control := consumer(t, "", v2, useV1+`	"go.mongodb.org/mongo-driver/v2/mongo"
`, "var _ = mongov1.Connect\nvar _ = mongo.Connect\n")
	pkgs := ourPackages(t, root)
	var imports, uses strings.Builder
	imports.WriteString(useV1)
	uses.WriteString("var _ = mongov1.Connect\n")
	for _, p := range pkgs {
		imports.WriteString("\t_ " + `"` + p + "\"\n")
	}
	subject := consumer(t, root, v2, imports.String(), uses.String())

	want := listModules(t, control)
	got := listModules(t, subject)
	delete(got, ourModule)
	for m, v := range got {
		if want[m] != v {
			if want[m] == "" {
				t.Errorf("importing the rotator adds %s %s", m, v)
			} else {
				t.Errorf("importing the rotator moves %s from %s to %s", m, want[m], v)
			}
		}
	}
	for m, v := range want {
		if _, ok := got[m]; !ok {
			t.Errorf("importing the rotator drops %s %s", m, v)
		}
	}
	// Tidy writes "go 1.25" as "go 1.25.0"; anything more is a raise.
	for _, dir := range []string{control, subject} {
		var m struct{ Go string }
		if err := json.Unmarshal([]byte(goIn(t, dir, "mod", "edit", "-json")), &m); err != nil {
			t.Fatal(err)
		}
		if version.Compare("go"+m.Go, "go"+consumerGo+".0") > 0 {
			t.Errorf("tidy raised the consumer's go line to %s (in %s)", m.Go, dir)
		}
	}
	// And the program builds on its go line, with the rotator in it.
	goIn(t, subject, "build", "-o", os.DevNull, ".")
}

// consumer writes a module on go 1.25 requiring mongo-driver v1.13.1 and v2
// at v2; replaceRoot, when set, adds the rotator through a replace to it.
// Then it tidies the module.
func consumer(t *testing.T, replaceRoot, v2, imports, uses string) string {
	t.Helper()
	dir := t.TempDir()
	mod := "module example.com/proxy\n\ngo " + consumerGo + "\n\nrequire (\n" +
		"\tgo.mongodb.org/mongo-driver " + consumerV1 + "\n" +
		"\tgo.mongodb.org/mongo-driver/v2 " + v2 + "\n"
	if replaceRoot != "" {
		mod += "\t" + ourModule + " v0.0.0-00010101000000-000000000000\n)\n\nreplace " + ourModule + " => " + replaceRoot + "\n"
	} else {
		mod += ")\n"
	}
	src := "package main\n\nimport (\n" + imports + ")\n\n" + uses + "\nfunc main() {}\n"
	for name, text := range map[string]string{"go.mod": mod, "main.go": src} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	goIn(t, dir, "mod", "tidy")
	return dir
}

// ourPackages lists every non-test package of the rotator's module.
func ourPackages(t *testing.T, root string) []string {
	t.Helper()
	out := goIn(t, root, "list", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "./...")
	var pkgs []string
	for _, p := range strings.Fields(out) {
		if strings.HasPrefix(p, ourModule) {
			pkgs = append(pkgs, p)
		}
	}
	if len(pkgs) < 2 {
		t.Fatalf("go list found %d packages of the rotator's module:\n%s", len(pkgs), out)
	}
	return pkgs
}

func requiredVersion(t *testing.T, root, module string) string {
	t.Helper()
	var m struct {
		Require []struct{ Path, Version string }
	}
	if err := json.Unmarshal([]byte(goIn(t, root, "mod", "edit", "-json")), &m); err != nil {
		t.Fatal(err)
	}
	for _, r := range m.Require {
		if r.Path == module {
			return r.Version
		}
	}
	t.Fatalf("the rotator's go.mod does not require %s", module)
	return ""
}

func listModules(t *testing.T, dir string) map[string]string {
	t.Helper()
	mods := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(goIn(t, dir, "list", "-m", "all")), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] != "example.com/proxy" {
			mods[f[0]] = f[1]
		}
	}
	return mods
}

func goIn(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	// The consumer is its own module (no workspace), judged with the
	// toolchain at hand: never switch toolchains to satisfy a go line.
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod", "GOTOOLCHAIN=local")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go %s (in %s): %v\n%s", strings.Join(args, " "), dir, err, stderr.String())
	}
	return string(out)
}
