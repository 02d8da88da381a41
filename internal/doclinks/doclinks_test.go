package doclinks

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// root is the repository, two levels up from this package.
const root = "../.."

// maxWords is the longest paragraph or list item the docs keep.
const maxWords = 150

// TestRepositoryDocs reads the README, the docs pages and BENCHMARKS.md as
// GitHub shows them and fails on any relative link or #anchor that does not
// resolve, and (README and docs/ only) on any break of the docs' style.
func TestRepositoryDocs(t *testing.T) {
	pages, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil || len(pages) == 0 {
		t.Fatalf("no docs pages under %s/docs (err %v)", root, err)
	}
	styled := []string{"README.md"}
	for _, p := range pages {
		styled = append(styled, strings.TrimPrefix(filepath.ToSlash(p), root+"/"))
	}
	probs, err := Check(root, append(slices.Clone(styled), "BENCHMARKS.md"))
	if err != nil {
		t.Fatal(err)
	}
	known := declaredTests(t)
	for _, f := range append(slices.Clone(styled), "BENCHMARKS.md") {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		d := Parse(b)
		probs = append(probs, CitedTests(f, d, known)...)
		if f != "BENCHMARKS.md" {
			probs = append(probs, Style(f, d, maxWords)...)
		}
	}
	for _, p := range probs {
		t.Error(p)
	}
}

// declaredTests are the tests of every Go file in the repository.
func declaredTests(t *testing.T) map[string]bool {
	t.Helper()
	known := map[string]bool{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && strings.HasPrefix(d.Name(), ".") && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, n := range TestFuncs(src) {
			known[n] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return known
}

// TestCodeCitesExistingSections fails when a comment in Go or YAML cites a
// docs section ("docs/design.md, \"Lease\"") that no heading carries: a
// renamed heading must take its citations along.
func TestCodeCitesExistingSections(t *testing.T) {
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata" || d.Name() == "doclinks") {
			return filepath.SkipDir // this package's examples are broken on purpose
		}
		if ext := filepath.Ext(path); d.IsDir() || ext != ".go" && ext != ".yaml" && ext != ".yml" {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		for _, p := range Citations(root, rel, src) {
			t.Error(p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestSlug(t *testing.T) {
	for _, c := range []struct{ heading, want string }{
		{"Running next to the proxy", "running-next-to-the-proxy"},
		{"The .deb", "the-deb"},
		{"Way 2: the sidecar endpoint (any language)", "way-2-the-sidecar-endpoint-any-language"},
		{"`--once` from cron or a Kubernetes CronJob", "--once-from-cron-or-a-kubernetes-cronjob"},
		{"What `SpendcheckerNoLeader` means", "what-spendcheckernoleader-means"},
		{"one_api & new-api", "one_api--new-api"},
		{"**Bold** [link](x.md) text", "bold-link-text"},
		{"Ünïcode Straße", "ünïcode-straße"},
	} {
		d := Parse([]byte("# " + c.heading + "\n"))
		if !d.Anchors[c.want] {
			t.Errorf("heading %q: anchors %v, want %q", c.heading, d.Anchors, c.want)
		}
	}
}

func TestDuplicateHeadingsAndExplicitAnchors(t *testing.T) {
	d := Parse([]byte("# A\n## A\n### A\n<a id=\"custom\"></a>\n```\n# not a heading\n```\n"))
	want := []string{"a", "a-1", "a-2", "custom"}
	for _, a := range want {
		if !d.Anchors[a] {
			t.Errorf("anchor %q missing: %v", a, d.Anchors)
		}
	}
	if len(d.Anchors) != len(want) {
		t.Errorf("anchors %v, want exactly %v (a heading in a code block is none)", d.Anchors, want)
	}
}

// TestCheck builds a small repository and checks that each kind of broken
// link is found, and nothing else.
func TestCheck(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "README.md", strings.Join([]string{
		"# Top", // 1
		"[ok](docs/a.md) [ok](docs/a.md#section-one) [ok](#top)", // 2
		"[missing file](docs/nope.md)",                           // 3
		"[missing anchor](docs/a.md#section-two)",                // 4
		"[self anchor](#nowhere)",                                // 5
		"[outside](../x.md) ![img](docs/pic.png)",                // 6
		"`[in code](nope.md)` [ext](https://example.com/x#y)",    // 7
		"```",                   // 8
		"[in a fence](nope.md)", // 9
		"```",                   // 10
		"[ref]: docs/gone.md",   // 11
		"[dir](docs) [anchor into a dir](docs#x)", // 12
		"a link whose [text wraps",                // 13
		"onto the next line](docs/a.md#nope).",    // 14
		"[three", "lines", "long](docs/a.md)",     // 15-17: unread
	}, "\n"))
	write(t, dir, "docs/a.md", "# Page A\n## Section one\n[back](../README.md#top) [bad](../README.md#bottom)\n")
	write(t, dir, "docs/pic.png", "")
	probs, err := Check(dir, []string{"README.md", "docs/a.md"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, p := range probs {
		got[p.File] |= 1 << p.Line
	}
	want := map[string]int{"README.md": 1<<3 | 1<<4 | 1<<5 | 1<<6 | 1<<11 | 1<<12 | 1<<13 | 1<<17, "docs/a.md": 1 << 3}
	if got["README.md"] != want["README.md"] || got["docs/a.md"] != want["docs/a.md"] {
		t.Errorf("problems on the wrong lines: %v", probs)
	}
	if len(probs) != 9 {
		t.Errorf("%d problems, want 9: %v", len(probs), probs)
	}
}

func TestCitations(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "docs/design.md", "# Design\n## Lease\n## Way 2: the sidecar\n")
	src := strings.Join([]string{
		`// as the lease promises (docs/design.md, "Lease").`, // 1 ok
		`// see docs/design.md "Way 2".`,                      // 2 ok: prefix before a colon
		`// the fence (docs/design.md, "Rotation`,             // 3 broken, wrapped
		`// guarantees").`,                                    // 4
		`# docs/gone.md, "Anything"`,                          // 5 broken page
		`// docs/design.md "Lea"`,                             // 6 broken: not a whole title
		`description: "see (docs/design.md, \"Lease\")."`,     // 7 ok: escaped quotes
		`description: "see (docs/design.md, \"Leash\")."`,     // 8 broken
	}, "\n")
	probs := Citations(dir, "x.go", []byte(src))
	var lines []int
	for _, p := range probs {
		lines = append(lines, p.Line)
	}
	if !slices.Equal(lines, []int{3, 5, 6, 8}) {
		t.Errorf("problems %v, want lines 3, 5, 6, 8", probs)
	}
}

func TestStyle(t *testing.T) {
	long := strings.Repeat("word ", 151)
	for _, c := range []struct {
		name, md string
		bad      bool
	}{
		{"plain", "# T\nThe daemon rotates a key once.\n", false},
		{"outside document", "As DESIGN.md says.\n", true},
		{"extra marker", "A flag (extra).\n", true},
		{"issue number", "Issue 13's target.\n", true},
		{"issue hash", "fixed in #12.\n", true},
		{"test series", "see the adv13 tests\n", true},
		{"test in prose", "Proved (`TestRotate`).\n", true},
		{"test in a table", "| guarantee | proved by |\n|---|---|\n| once | `TestRotate` |\n", false},
		{"test in a code block", "```sh\ngo test -run TestChaos ./cmd/spendchecker\n```\n", false},
		{"long paragraph", long + "\n", true},
		{"long paragraph over lines", strings.Repeat("word word word word word\n", 31), true},
		{"short list items", strings.Repeat("- "+strings.Repeat("w ", 100)+"\n", 3), false},
		{"long list item", "- " + long + "\n", true},
		{"paragraphs split by a blank line", strings.Repeat("w ", 100) + "\n\n" + strings.Repeat("w ", 100) + "\n", false},
		{"code block splits", strings.Repeat("w ", 100) + "\n```\nx\n```\n" + strings.Repeat("w ", 100) + "\n", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			probs := Style("x.md", Parse([]byte(c.md)), maxWords)
			if (len(probs) > 0) != c.bad {
				t.Errorf("problems %v, want bad=%v", probs, c.bad)
			}
		})
	}
}

func TestCitedTests(t *testing.T) {
	known := map[string]bool{"TestRotateOnce": true, "TestAdv13c_Quiet": true, "FuzzParsers": true}
	md := "| a | `TestRotateOnce`, `FuzzParsers` |\n| b | `TestGone` |\n| c | `TestAdv13c_*` |\n| d | `TestNope_*` |\n| e | `go test -run 'TestRot\\|TestAdv' .` |\n| f | `TestRot` |\n"
	var lines []int
	for _, p := range CitedTests("x.md", Parse([]byte(md)), known) {
		lines = append(lines, p.Line)
	}
	slices.Sort(lines)
	if !slices.Equal(lines, []int{2, 4, 6}) {
		t.Errorf("problems on lines %v, want 2, 4 and 6", lines)
	}
	if got := TestFuncs([]byte("package x\nfunc TestA(t *testing.T) {}\nfunc helper() {}\nfunc ExampleB() {}\n")); !slices.Equal(got, []string{"TestA", "ExampleB"}) {
		t.Errorf("TestFuncs = %v", got)
	}
}

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
