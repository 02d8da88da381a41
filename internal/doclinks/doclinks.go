// Package doclinks checks the repository's Markdown the way a reader meets
// it on GitHub: every relative link reaches a file, every #anchor a heading
// (by GitHub's slug rules), and every section a Go or YAML comment cites by
// name ("docs/design.md, \"Lease\"") exists. It also holds the docs' style
// rules that a test can enforce (Style).
package doclinks

import (
	"bufio"
	"bytes"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"unicode"
)

// Problem is one broken link, anchor, citation or style rule, with where it is.
type Problem struct {
	File string
	Line int
	Msg  string
}

func (p Problem) String() string { return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Msg) }

// Link is one link target found in a Markdown file.
type Link struct {
	Line   int
	Target string
}

// Doc is a Markdown file read once: its lines outside fenced code, its
// links and its headings.
type Doc struct {
	// Prose is each line outside fenced code blocks, by line number (1-based).
	Prose map[int]string
	// Links are the inline, image and reference-definition targets.
	Links []Link
	// Anchors are the ids GitHub gives the headings (deduplicated with -1,
	// -2, …) and any explicit <a id> or <a name>.
	Anchors map[string]bool
	// Headings are the headings' texts as rendered (markup stripped).
	Headings []string
	// Unread are lines holding a "](" no link was read from (a link split
	// over more than two lines, say): Check reports them.
	Unread []int
}

var (
	fence      = regexp.MustCompile("^\\s{0,3}(```|~~~)")
	heading    = regexp.MustCompile(`^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$`)
	codeSpan   = regexp.MustCompile("`+[^`]*`+")
	inlineLink = regexp.MustCompile(`!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)`)
	refDef     = regexp.MustCompile(`^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(\s|$)`)
	htmlAnchor = regexp.MustCompile(`<a\s+(?:id|name)="([^"]+)"`)
	htmlHref   = regexp.MustCompile(`<(?:a|img)\s[^>]*(?:href|src)="([^"]+)"`)
)

// Parse reads a Markdown file's prose, links and headings.
func Parse(md []byte) Doc {
	d := Doc{Prose: map[int]string{}, Anchors: map[string]bool{}}
	seen := map[string]int{}
	inFence := ""
	sc := bufio.NewScanner(bytes.NewReader(md))
	sc.Buffer(make([]byte, 0, 1<<16), 1<<22)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if m := fence.FindStringSubmatch(line); m != nil {
			switch {
			case inFence == "":
				inFence = m[1]
				continue
			case m[1] == inFence:
				inFence = ""
				continue
			}
		}
		if inFence != "" {
			continue
		}
		d.Prose[n] = line
		if m := heading.FindStringSubmatch(line); m != nil {
			text := renderedText(m[2])
			d.Headings = append(d.Headings, text)
			slug := Slug(text)
			if k := seen[slug]; k > 0 {
				d.Anchors[fmt.Sprintf("%s-%d", slug, k)] = true
			} else {
				d.Anchors[slug] = true
			}
			seen[slug]++
		}
		for _, m := range htmlAnchor.FindAllStringSubmatch(line, -1) {
			d.Anchors[m[1]] = true
		}
	}
	d.findLinks()
	return d
}

// findLinks reads the links of the prose. A link's text may wrap onto the
// next line, so each line is read joined with the next; a "](" that no
// link found covers is reported in Unread.
func (d *Doc) findLinks() {
	text := map[int]string{}
	for n, line := range d.Prose {
		text[n] = codeSpan.ReplaceAllString(line, "")
	}
	covered := map[int]map[int]bool{}
	cover := func(n, from, to int) {
		if covered[n] == nil {
			covered[n] = map[int]bool{}
		}
		for i := from; i < to; i++ {
			covered[n][i] = true
		}
	}
	for n := 1; n <= maxLine(d.Prose); n++ {
		cur, ok := text[n]
		if !ok {
			continue
		}
		next, hasNext := text[n+1]
		joined := cur
		if hasNext && strings.TrimSpace(next) != "" {
			joined += "\n" + next
		}
		for _, m := range inlineLink.FindAllStringSubmatchIndex(joined, -1) {
			if m[0] >= len(cur) {
				continue // starts on the next line: found there
			}
			d.Links = append(d.Links, Link{n, joined[m[4]:m[5]]})
			cover(n, m[0], min(m[1], len(cur)))
			if m[1] > len(cur)+1 {
				cover(n+1, 0, m[1]-len(cur)-1)
			}
		}
		for _, m := range htmlHref.FindAllStringSubmatch(cur, -1) {
			d.Links = append(d.Links, Link{n, m[1]})
		}
		if m := refDef.FindStringSubmatch(cur); m != nil {
			d.Links = append(d.Links, Link{n, m[1]})
		}
	}
	for n, t := range text {
		for i := 0; i+1 < len(t); i++ {
			if t[i] == ']' && t[i+1] == '(' && !covered[n][i] {
				d.Unread = append(d.Unread, n)
				break
			}
		}
	}
}

// renderedText is a heading's text as GitHub shows it: code spans keep
// their content, links their text, emphasis markers go.
func renderedText(s string) string {
	s = inlineLink.ReplaceAllString(s, "$1")
	s = codeSpan.ReplaceAllStringFunc(s, func(c string) string { return strings.Trim(c, "`") })
	s = strings.NewReplacer("**", "", "*", "").Replace(s)
	return strings.TrimSpace(s)
}

// Slug is GitHub's anchor for a heading's rendered text: lower case, every
// character but letters, digits, spaces, hyphens and underscores dropped,
// each space a hyphen. (Duplicates get -1, -2, … in Parse.)
func Slug(text string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(text) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.Is(unicode.Mn, r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// Check reads the Markdown files (paths relative to root) and returns every
// relative link that does not resolve: a missing file, a path leaving the
// repository, or an #anchor no heading of the target makes.
func Check(root string, files []string) ([]Problem, error) {
	docs := map[string]Doc{}
	load := func(rel string) (Doc, error) {
		if d, ok := docs[rel]; ok {
			return d, nil
		}
		b, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			return Doc{}, err
		}
		d := Parse(b)
		docs[rel] = d
		return d, nil
	}
	var probs []Problem
	for _, f := range files {
		d, err := load(f)
		if err != nil {
			return nil, err
		}
		for _, l := range d.Links {
			if msg := checkLink(root, f, l.Target, load); msg != "" {
				probs = append(probs, Problem{f, l.Line, msg})
			}
		}
		for _, n := range d.Unread {
			probs = append(probs, Problem{f, n, "a link the checker cannot read: keep a link's text within two lines"})
		}
	}
	return probs, nil
}

func checkLink(root, from, target string, load func(string) (Doc, error)) string {
	u, err := url.Parse(target)
	switch {
	case target == "":
		return "empty link"
	case err != nil:
		return fmt.Sprintf("link %q: %v", target, err)
	case u.Scheme != "" || u.Host != "":
		return "" // external: not ours to check
	}
	rel := filepath.ToSlash(filepath.Clean(filepath.Join(filepath.Dir(from), u.Path)))
	if u.Path == "" {
		rel = from
	}
	if rel == ".." || strings.HasPrefix(rel, "../") || filepath.IsAbs(u.Path) {
		return fmt.Sprintf("link %q leaves the repository", target)
	}
	st, err := os.Stat(filepath.Join(root, rel))
	if err != nil {
		return fmt.Sprintf("link %q: no such file %s", target, rel)
	}
	if u.Fragment == "" {
		return ""
	}
	if st.IsDir() || !strings.HasSuffix(rel, ".md") {
		return fmt.Sprintf("link %q: an anchor into %s, which is not a Markdown file", target, rel)
	}
	d, err := load(rel)
	if err != nil {
		return fmt.Sprintf("link %q: %v", target, err)
	}
	if !d.Anchors[u.Fragment] {
		return fmt.Sprintf("link %q: %s has no heading with anchor #%s", target, rel, u.Fragment)
	}
	return ""
}

// citation is a comment naming a docs page's section: docs/x.md, "Title"
// (the comma optional, the title possibly wrapped onto the next comment line).
var citation = regexp.MustCompile(`(docs/[a-z0-9_-]+\.md|README\.md|BENCHMARKS\.md)'?s?,?\s+\\?"([^"\\]+)\\?"`)

// commentPrefix is a comment's marker at the start of a line (Go's //, YAML's #).
var commentPrefix = regexp.MustCompile(`^\s*(//|#)\s*`)

// Citations returns every section citation in a source file that names no
// heading of the cited page (root is the repository). A citation may wrap
// onto the next comment line. It matches a heading equal to it, or one that
// starts with it and goes on after a colon ("Way 2" names "Way 2: the
// sidecar endpoint").
func Citations(root, file string, src []byte) []Problem {
	lines := strings.Split(string(src), "\n")
	var probs []Problem
	for i, line := range lines {
		text := line
		if i+1 < len(lines) {
			text += " " + commentPrefix.ReplaceAllString(lines[i+1], "")
		}
		for _, m := range citation.FindAllStringSubmatchIndex(text, -1) {
			if m[0] >= len(line) {
				continue // starts on the next line: found there
			}
			page, title := text[m[2]:m[3]], text[m[4]:m[5]]
			b, err := os.ReadFile(filepath.Join(root, page))
			switch {
			case err != nil:
				probs = append(probs, Problem{file, i + 1, fmt.Sprintf("cites %s, which does not exist", page)})
			case !hasHeading(Parse(b).Headings, title):
				probs = append(probs, Problem{file, i + 1, fmt.Sprintf("cites %s %q: no such heading", page, title)})
			}
		}
	}
	return probs
}

func hasHeading(hs []string, title string) bool {
	for _, h := range hs {
		if strings.EqualFold(h, title) {
			return true
		}
		if len(h) > len(title) && strings.EqualFold(h[:len(title)], title) && strings.HasPrefix(h[len(title):], ":") {
			return true
		}
	}
	return false
}

// The docs speak to a reader who has only the repository: no document
// outside it, no internal jargon, and tests named only where proof is asked
// for (a table's "proved by" column, or a command in a code block).
var styleRules = []struct {
	re  *regexp.Regexp
	msg string
}{
	{regexp.MustCompile(`DESIGN\.md`), "names a document outside the repository"},
	{regexp.MustCompile(`\(extra\)`), `marks a feature "(extra)": say what it does`},
	{regexp.MustCompile(`(?i)\bissues? #?\d+|(^|[^\w&])#\d+\b`), "cites an issue number"},
	{regexp.MustCompile(`(?i)\badv\d+[a-z]?\b`), `uses an internal test-series name ("adv…")`},
}

var testName = regexp.MustCompile(`\b(Test|Fuzz|Benchmark)[A-Z0-9]\w*`)

// listItem starts a list item, which counts as a paragraph of its own.
var listItem = regexp.MustCompile(`^\s*([-*+]|\d+[.)])\s`)

// Style returns where a Markdown file breaks the docs' rules: the phrases
// above anywhere outside code blocks, a test name in prose (outside a
// table), and a paragraph or list item of more than maxWords words.
func Style(file string, d Doc, maxWords int) []Problem {
	var probs []Problem
	words, start := 0, 0
	flush := func() {
		if words > maxWords {
			probs = append(probs, Problem{file, start, fmt.Sprintf("paragraph of %d words (at most %d): cut it into shorter ones or a list", words, maxWords)})
		}
		words, start = 0, 0
	}
	last := 0
	for n := 1; n <= maxLine(d.Prose); n++ {
		line, ok := d.Prose[n]
		if !ok {
			continue
		}
		for _, r := range styleRules {
			if r.re.MatchString(line) {
				probs = append(probs, Problem{file, n, r.msg})
			}
		}
		trimmed := strings.TrimSpace(line)
		table := strings.HasPrefix(trimmed, "|")
		if m := testName.FindString(line); m != "" && !table {
			probs = append(probs, Problem{file, n, fmt.Sprintf("test name %s in prose: cite tests in a table's \"proved by\" column, or drop it", m)})
		}
		switch {
		case trimmed == "" || table || heading.MatchString(line) || n != last+1:
			flush()
		case listItem.MatchString(line):
			flush()
			start, words = n, len(strings.Fields(line))-1
		default:
			if start == 0 {
				start = n
			}
			words += len(strings.Fields(line))
		}
		last = n
	}
	flush()
	return probs
}

func maxLine(m map[int]string) int {
	hi := 0
	for n := range m {
		hi = max(hi, n)
	}
	return hi
}

// testFunc is a test, fuzz test, benchmark or example declared in a Go file.
var testFunc = regexp.MustCompile(`(?m)^func ((?:Test|Fuzz|Benchmark|Example)\w*)\(`)

// TestFuncs returns the names of the tests declared in Go source.
func TestFuncs(src []byte) []string {
	var names []string
	for _, m := range testFunc.FindAllSubmatch(src, -1) {
		names = append(names, string(m[1]))
	}
	return names
}

// CitedTests returns every test a Markdown file names that is not among
// known (a proof must point at a test that exists). A name followed by *
// ("TestAdv13c_*") stands for every test with that prefix, as does a name in
// a `go test -run` pattern; each must match at least one test.
func CitedTests(file string, d Doc, known map[string]bool) []Problem {
	var probs []Problem
	for n, line := range d.Prose {
		for _, m := range citedTest.FindAllStringSubmatchIndex(line, -1) {
			name := line[m[2]:m[3]]
			prefix := m[4] >= 0 || strings.Contains(line[:m[0]], "-run")
			if known[name] || prefix && anyPrefix(known, name) {
				continue
			}
			probs = append(probs, Problem{file, n, fmt.Sprintf("cites test %s, which no Go file declares", line[m[0]:m[1]])})
		}
	}
	return probs
}

var citedTest = regexp.MustCompile(`\b((?:Test|Fuzz|Benchmark)[A-Z0-9]\w*)(\*)?`)

func anyPrefix(known map[string]bool, prefix string) bool {
	for k := range known {
		if strings.HasPrefix(k, prefix) {
			return true
		}
	}
	return false
}
