// Package benchsummary checks that BENCHMARKS.md's summary table gives no
// figure its sections do not: each summary row links the section that
// measures it, and every number and commit the row names must be in that
// section's result paragraph (the one starting "**Result**"), every command
// in the section. A figure re-measured in its section and not in the summary
// (or the other way round) then fails the test suite instead of leaving the
// page contradicting itself; an older figure the section keeps for
// comparison does not count.
package benchsummary

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/spendchecker/spendchecker/internal/doclinks"
)

// Header is the summary table's header row, cells in order; the table is
// found by it.
var Header = []string{"figure", "command", "target", "result"}

var (
	fence    = regexp.MustCompile("^\\s{0,3}(```|~~~)")
	heading  = regexp.MustCompile(`^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$`)
	codeSpan = regexp.MustCompile("`+([^`]*)`+")
	link     = regexp.MustCompile(`\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*([^)\s]*)\s*\)`)
	// number is a figure: digits with optional thousands commas and
	// decimals, and a k for thousands ("100k keys").
	number = regexp.MustCompile(`\d+(?:,\d{3})*(?:\.\d+)?k?`)
	commit = regexp.MustCompile(`^[0-9a-f]{7,40}$`)
	// cellSplit splits a table row as GitHub does: at every pipe not
	// escaped, code spans included.
	cellSplit = regexp.MustCompile(`(^|[^\\])\|`)
)

// section is a heading's text up to the next heading of its level or above,
// code blocks included (that is where the benchmarks' output is).
type section struct {
	anchor string
	body   []string
	line   int
	// result is the section's own paragraph starting "**Result**" (not a
	// subsection's), or empty.
	result string
}

// resultMark starts a section's result paragraph.
const resultMark = "**Result**"

// Check returns every place where file's summary table names a figure its
// section does not give:
//   - a row linking no section of the page (or one that does not exist);
//   - a command (a code span of the command cell) not written in the section;
//   - a commit (a code span of 7 to 40 hex digits in the result) or a number
//     in the result (outside code spans and link targets; 1,000, 1000 and 1k
//     are one number) that the section's result paragraph does not give, or
//     a number where the section has no result paragraph.
//
// Only the result cell is read for numbers: a target is a requirement, not
// a measurement. A row whose result says only "see section" passes.
func Check(file string, md []byte) []doclinks.Problem {
	lines := strings.Split(string(md), "\n")
	sections := split(lines)
	header, rows := summary(lines)
	if header == 0 {
		return []doclinks.Problem{{File: file, Line: 1, Msg: fmt.Sprintf("no summary table (header %q)", strings.Join(Header, " | "))}}
	}
	var probs []doclinks.Problem
	bad := func(n int, format string, args ...any) {
		probs = append(probs, doclinks.Problem{File: file, Line: n, Msg: fmt.Sprintf(format, args...)})
	}
	for _, n := range rows {
		cells := cells(lines[n-1])
		if len(cells) != len(Header) {
			bad(n, "summary row has %d cells, want %d", len(cells), len(Header))
			continue
		}
		name, command, result := cells[0], cells[1], cells[3]
		anchor := ""
		for _, m := range link.FindAllStringSubmatch(result, -1) {
			if strings.HasPrefix(m[2], "#") {
				anchor = strings.TrimPrefix(m[2], "#")
			}
		}
		if anchor == "" {
			bad(n, "summary row %q links no section of this page in its result", name)
			continue
		}
		sec, ok := sections[anchor]
		if !ok {
			bad(n, "summary row %q links #%s, which no heading makes", name, anchor)
			continue
		}
		// A command wrapped in prose is the same command.
		body := strings.Join(strings.Fields(strings.Join(sec.body, "\n")), " ")
		for _, m := range codeSpan.FindAllStringSubmatch(command, -1) {
			if cmd := unescape(m[1]); !strings.Contains(body, strings.Join(strings.Fields(cmd), " ")) {
				bad(n, "summary row %q: command `%s` is not in section #%s (line %d)", name, cmd, anchor, sec.line)
			}
		}
		prose := link.ReplaceAllString(codeSpan.ReplaceAllString(result, ""), "$1")
		figures := number.FindAllString(prose, -1)
		var commits []string
		for _, m := range codeSpan.FindAllStringSubmatch(result, -1) {
			if commit.MatchString(m[1]) {
				commits = append(commits, m[1])
			}
		}
		if sec.result == "" {
			if len(figures)+len(commits) > 0 {
				bad(n, "summary row %q gives figures, but section #%s (line %d) has no paragraph starting %s to take them from", name, anchor, sec.line, resultMark)
			}
			continue
		}
		for _, c := range commits {
			if !strings.Contains(sec.result, c) {
				bad(n, "summary row %q: commit %s is not named in the result of section #%s (line %d)", name, c, anchor, sec.line)
			}
		}
		given := numbers(sec.result)
		for _, f := range figures {
			if !given[normal(f)] {
				bad(n, "summary row %q gives %s, which the result of section #%s (line %d) does not", name, f, anchor, sec.line)
			}
		}
	}
	return probs
}

// split returns the sections of the page by anchor (GitHub's slug of the
// heading; a repeated heading keeps its first section).
func split(lines []string) map[string]section {
	type open struct {
		level  int
		anchor string
	}
	sections := map[string]section{}
	var stack []open
	inFence := ""
	inResult := false
	for i, line := range lines {
		if strings.TrimSpace(line) == "" || inFence != "" {
			inResult = false
		}
		if m := fence.FindStringSubmatch(line); m != nil {
			switch {
			case inFence == "":
				inFence = m[1]
			case m[1] == inFence:
				inFence = ""
			}
		}
		if m := heading.FindStringSubmatch(line); m != nil && inFence == "" {
			level := len(m[1])
			inResult = false
			for len(stack) > 0 && stack[len(stack)-1].level >= level {
				stack = stack[:len(stack)-1]
			}
			anchor := doclinks.Slug(link.ReplaceAllString(codeSpan.ReplaceAllString(m[2], "$1"), "$1"))
			if _, dup := sections[anchor]; !dup {
				sections[anchor] = section{anchor: anchor, line: i + 1}
				stack = append(stack, open{level, anchor})
			}
			continue
		}
		if inFence == "" && len(stack) > 0 && strings.HasPrefix(strings.TrimSpace(line), resultMark) {
			if s := sections[stack[len(stack)-1].anchor]; s.result == "" {
				inResult = true
			}
		}
		for j, o := range stack {
			s := sections[o.anchor]
			s.body = append(s.body, line)
			if inResult && j == len(stack)-1 {
				s.result += line + "\n"
			}
			sections[o.anchor] = s
		}
	}
	return sections
}

// summary finds the table whose header is Header: its header's line number
// (0 if none) and its data rows' (1-based).
func summary(lines []string) (header int, rows []int) {
	for i, line := range lines {
		if header == 0 {
			c := cells(line)
			if len(c) == len(Header) && strings.EqualFold(strings.Join(c, "|"), strings.Join(Header, "|")) {
				header = i + 1
			}
			continue
		}
		t := strings.TrimSpace(line)
		if !strings.HasPrefix(t, "|") {
			break
		}
		if i+1 == header+1 && strings.Trim(t, "|-: ") == "" {
			continue // the delimiter row
		}
		rows = append(rows, i+1)
	}
	return header, rows
}

// cells are a table row's cells, trimmed; nil for a line that is no row.
func cells(line string) []string {
	t := strings.TrimSpace(line)
	if !strings.HasPrefix(t, "|") {
		return nil
	}
	t = strings.TrimSuffix(strings.TrimPrefix(t, "|"), "|")
	parts := cellSplit.ReplaceAllString(t, "$1\x00")
	var out []string
	for _, c := range strings.Split(parts, "\x00") {
		out = append(out, strings.TrimSpace(c))
	}
	return out
}

func unescape(s string) string { return strings.ReplaceAll(s, `\|`, "|") }

// numbers is the set of the figures in text, normalised.
func numbers(text string) map[string]bool {
	set := map[string]bool{}
	for _, f := range number.FindAllString(text, -1) {
		set[normal(f)] = true
	}
	return set
}

// normal writes a figure one way: no thousands commas, a k as three zeros.
func normal(f string) string {
	f = strings.ReplaceAll(f, ",", "")
	if k, ok := strings.CutSuffix(f, "k"); ok && !strings.Contains(k, ".") {
		f = k + "000"
	}
	return f
}
