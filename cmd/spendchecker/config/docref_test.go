package config

import (
	"flag"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spendchecker/spendchecker/spend"
)

// The configuration reference (docs/configuration.md) is checked against the
// definitions both ways: every flag, variable, credential and file key the
// code has is documented, and every one documented exists with the default
// the page gives. Only names, defaults and variables are compared; the
// meanings are the page's own words.

const configDoc = "../../../docs/configuration.md"

// flagDef is one flag as the commands define it.
type flagDef struct {
	def      string // flag.Flag.DefValue
	value    any    // its type, from flag.Getter (nil for a plain flag.Value)
	commands []string
}

// definedFlags are every command's flags, by name, with the commands that
// take each ("daemon" for the root).
func definedFlags(t *testing.T) map[string]*flagDef {
	t.Helper()
	// A credentials directory would make --config's default a path.
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	tr := commands(New(), &parseState{})
	defs := map[string]*flagDef{}
	for cmd, sets := range tr.std {
		name := cmd.Name
		if cmd == tr.root {
			name = "daemon"
		}
		for _, fs := range sets {
			fs.VisitAll(func(f *flag.Flag) {
				d := defs[f.Name]
				if d == nil {
					d = &flagDef{def: f.DefValue}
					if g, ok := f.Value.(flag.Getter); ok {
						d.value = g.Get()
					}
					defs[f.Name] = d
				} else if d.def != f.DefValue {
					t.Errorf("--%s has default %q in one command and %q in another", f.Name, d.def, f.DefValue)
				}
				d.commands = append(d.commands, name)
			})
		}
	}
	for _, d := range defs {
		slices.Sort(d.commands)
	}
	return defs
}

// storeCommands are what the page's "all" stands for.
var storeCommands = []string{"daemon", "history", "recover", "rotate", "status", "verify"}

// computedDefaults are flags whose default depends on the machine: the page
// describes it in words, and the test checks only that it is not empty.
var computedDefaults = map[string]bool{"instance": true}

func TestConfigurationReferenceFlags(t *testing.T) {
	defs := definedFlags(t)
	doc := readDoc(t, configDoc)
	rows := doc.table(t, "Flags", "flag", "variable", "default", "commands")
	seen := map[string]bool{}
	for _, r := range rows {
		names := codeSpans(r["flag"])
		if len(names) != 1 || !strings.HasPrefix(names[0], "--") {
			t.Errorf("row %q: want exactly one `--flag` in the flag column", r["flag"])
			continue
		}
		name := strings.TrimPrefix(names[0], "--")
		if seen[name] {
			t.Errorf("--%s: documented twice", name)
		}
		seen[name] = true
		d, ok := defs[name]
		if !ok {
			t.Errorf("--%s: documented, but no command defines it", name)
			continue
		}
		if got, want := strings.Trim(r["variable"], "` "), envVar(name); got != want {
			t.Errorf("--%s: variable %q, the flag's is %q", name, got, want)
		}
		if msg := checkDefault(name, d, r["default"]); msg != "" {
			t.Errorf("--%s: %s", name, msg)
		}
		if got := docCommands(r["commands"]); !slices.Equal(got, d.commands) {
			t.Errorf("--%s: commands %v, the flag is defined for %v", name, got, d.commands)
		}
	}
	for name, d := range defs {
		if !seen[name] {
			t.Errorf("--%s (default %q, commands %v): defined, but not in the flags table", name, d.def, d.commands)
		}
	}
}

// checkDefault compares a default cell with the flag's default. A cell that
// starts with a code span states the value: it must equal the flag's, read
// as the flag's type (`30m` is 30m0s). A cell in words describes a default
// the code computes: the flag's own default must then be its zero value.
func checkDefault(name string, d *flagDef, cell string) string {
	cell = strings.TrimSpace(cell)
	if !strings.HasPrefix(cell, "`") {
		switch {
		case computedDefaults[name]:
			if d.def == "" {
				return "a computed default, but the flag's is empty"
			}
		case !isZero(d.value, d.def):
			return "the page describes the default in words, but the flag's is " + strconv.Quote(d.def) + ": write it as `" + d.def + "`"
		}
		return ""
	}
	lit := codeSpans(cell)[0]
	if !sameValue(d.value, lit, d.def) {
		return "default `" + lit + "` on the page, " + strconv.Quote(d.def) + " in the flag"
	}
	return ""
}

func isZero(v any, def string) bool {
	switch v.(type) {
	case time.Duration:
		dur, err := time.ParseDuration(def)
		return err == nil && dur == 0
	case float64, int:
		f, err := strconv.ParseFloat(def, 64)
		return err == nil && f == 0
	case bool:
		return def == "false"
	}
	return def == ""
}

func sameValue(v any, lit, def string) bool {
	switch v.(type) {
	case time.Duration:
		a, err1 := time.ParseDuration(lit)
		b, err2 := time.ParseDuration(def)
		return err1 == nil && err2 == nil && a == b
	case float64, int:
		a, err1 := strconv.ParseFloat(lit, 64)
		b, err2 := strconv.ParseFloat(def, 64)
		return err1 == nil && err2 == nil && a == b
	}
	return lit == def
}

// docCommands reads a commands cell: "all" and "daemon" are words, the
// subcommands code spans.
func docCommands(cell string) []string {
	var cmds []string
	for _, part := range strings.Split(cell, ",") {
		part = strings.TrimSpace(part)
		switch {
		case part == "all":
			cmds = append(cmds, storeCommands...)
		case part == "daemon":
			cmds = append(cmds, "daemon")
		default:
			cmds = append(cmds, strings.Trim(part, "`"))
		}
	}
	slices.Sort(cmds)
	return slices.Compact(cmds)
}

// TestConfigurationReferenceEnvironment checks the variables that are no
// flag's, and the systemd credentials, against the names the program's
// code reads.
func TestConfigurationReferenceEnvironment(t *testing.T) {
	doc := readDoc(t, configDoc)
	defs := definedFlags(t)
	documented := map[string]bool{}
	for _, r := range doc.table(t, "Other environment variables", "variable") {
		documented[strings.Trim(r["variable"], "` ")] = true
	}
	inCode := map[string]bool{}
	for _, s := range productionStrings(t) {
		if !regexp.MustCompile(`^(SPENDCHECKER|MONGODB|CREDENTIALS)_[A-Z0-9_]+$`).MatchString(s) {
			continue
		}
		if name, ok := strings.CutPrefix(s, "SPENDCHECKER_"); ok {
			if _, isFlag := defs[strings.ToLower(strings.ReplaceAll(name, "_", "-"))]; isFlag {
				continue // a flag's own variable, in the flags table
			}
		}
		if strings.HasSuffix(s, "_") {
			s += "<POOL>" // a prefix: the page names the whole pattern
		}
		inCode[s] = true
	}
	delete(inCode, "SPENDCHECKER_<POOL>") // the flags' prefix itself
	compareSets(t, "environment variable", documented, inCode)
	if got := adminKeyEnv("my-pool"); got != "SPENDCHECKER_ADMIN_KEY_MY_POOL" {
		t.Errorf("the admin key of pool my-pool is in %s; the page says upper-cased, other characters as _", got)
	}

	creds := map[string]bool{}
	for _, r := range doc.table(t, "systemd credentials", "credential") {
		creds[strings.Trim(r["credential"], "` ")] = true
	}
	compareSets(t, "credential", creds, map[string]bool{
		credMongoURI: true, credConfig: true, adminKeyCredential("<pool>"): true, managementKeyCredential("<pool>"): true,
	})
}

// TestConfigurationReferenceFileKeys checks the keys of a pool entry and of
// its notify object, and (docs/providers.md) of a custom provider's object,
// against the JSON names the config file is decoded with.
func TestConfigurationReferenceFileKeys(t *testing.T) {
	doc := readDoc(t, configDoc)
	tables := []struct {
		doc     *mdDoc
		heading string
		typ     reflect.Type
		nth     int
	}{
		{doc, "Pool entries", reflect.TypeFor[PoolConfig](), 0},
		{doc, "Pool entries", reflect.TypeFor[PoolNotify](), 1},
		{readDoc(t, "../../../docs/providers.md"), "A configured provider", reflect.TypeFor[spend.CustomSpec](), 0},
	}
	for _, tb := range tables {
		documented := map[string]bool{}
		for _, r := range tb.doc.nthTable(t, tb.heading, tb.nth) {
			key := r[tb.doc.firstColumn(t, tb.heading, tb.nth)]
			for _, k := range codeSpans(key) {
				documented[k] = true
			}
		}
		compareSets(t, tb.typ.Name()+" key", documented, jsonKeys(tb.typ))
	}
}

func jsonKeys(t reflect.Type) map[string]bool {
	keys := map[string]bool{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name != "" && name != "-" && f.IsExported() {
			keys[name] = true
		}
	}
	return keys
}

func compareSets(t *testing.T, what string, documented, defined map[string]bool) {
	t.Helper()
	for k := range documented {
		if !defined[k] {
			t.Errorf("%s %s: documented, but the code has no such name", what, k)
		}
	}
	for k := range defined {
		if !documented[k] {
			t.Errorf("%s %s: in the code, but not documented", what, k)
		}
	}
}

// productionStrings are the string literals of this package's non-test files.
func productionStrings(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(af, func(n ast.Node) bool {
			if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
				if s, err := strconv.Unquote(lit.Value); err == nil {
					out = append(out, s)
				}
			}
			return true
		})
	}
	return out
}

// mdDoc is a Markdown page's lines, enough to find a section's tables.
type mdDoc struct {
	path  string
	lines []string
}

func readDoc(t *testing.T, path string) *mdDoc {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return &mdDoc{path, strings.Split(string(b), "\n")}
}

var codeSpan = regexp.MustCompile("`([^`]+)`")

func codeSpans(s string) []string {
	var out []string
	for _, m := range codeSpan.FindAllStringSubmatch(s, -1) {
		out = append(out, m[1])
	}
	return out
}

// tableLines are the rows (header first, separator dropped) of the nth
// table in the section under a heading, up to the next heading.
func (d *mdDoc) tableLines(t *testing.T, heading string, nth int) [][]string {
	t.Helper()
	start := -1
	for i, l := range d.lines {
		if h, ok := strings.CutPrefix(l, "#"); ok && strings.TrimSpace(strings.TrimLeft(h, "#")) == heading {
			start = i + 1
			break
		}
	}
	if start < 0 {
		t.Fatalf("%s: no heading %q", d.path, heading)
	}
	var tables [][][]string
	var cur [][]string
	for _, l := range d.lines[start:] {
		if strings.HasPrefix(l, "#") {
			break
		}
		if !strings.HasPrefix(l, "|") {
			if cur != nil {
				tables, cur = append(tables, cur), nil
			}
			continue
		}
		if regexp.MustCompile(`^\|[-:| ]+\|$`).MatchString(l) {
			continue
		}
		cur = append(cur, splitRow(l))
	}
	if cur != nil {
		tables = append(tables, cur)
	}
	if nth >= len(tables) {
		t.Fatalf("%s, %q: no table %d", d.path, heading, nth+1)
	}
	return tables[nth]
}

// splitRow splits a table row on the pipes that are not escaped (\|).
func splitRow(l string) []string {
	l = strings.Trim(strings.TrimSpace(l), "|")
	var cells []string
	var b strings.Builder
	for i := 0; i < len(l); i++ {
		switch {
		case l[i] == '\\' && i+1 < len(l) && l[i+1] == '|':
			b.WriteByte('|')
			i++
		case l[i] == '|':
			cells = append(cells, strings.TrimSpace(b.String()))
			b.Reset()
		default:
			b.WriteByte(l[i])
		}
	}
	return append(cells, strings.TrimSpace(b.String()))
}

func (d *mdDoc) nthTable(t *testing.T, heading string, nth int) []map[string]string {
	t.Helper()
	lines := d.tableLines(t, heading, nth)
	var rows []map[string]string
	for _, cells := range lines[1:] {
		r := map[string]string{}
		for i, h := range lines[0] {
			if i < len(cells) {
				r[h] = cells[i]
			}
		}
		rows = append(rows, r)
	}
	return rows
}

func (d *mdDoc) firstColumn(t *testing.T, heading string, nth int) string {
	return d.tableLines(t, heading, nth)[0][0]
}

// table is the first table under heading; it must have the columns named.
func (d *mdDoc) table(t *testing.T, heading string, columns ...string) []map[string]string {
	t.Helper()
	header := d.tableLines(t, heading, 0)[0]
	for _, c := range columns {
		if !slices.Contains(header, c) {
			t.Fatalf("%s, %q: the table has no column %q (columns %v)", d.path, heading, c, header)
		}
	}
	return d.nthTable(t, heading, 0)
}
