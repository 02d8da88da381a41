package benchsummary

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBenchmarksSummaryMatchesSections fails when BENCHMARKS.md's summary
// names a figure, command or commit its section does not.
func TestBenchmarksSummaryMatchesSections(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "BENCHMARKS.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range Check("BENCHMARKS.md", b) {
		t.Error(p)
	}
}

// page is a BENCHMARKS.md in small: one summary row, its section, and
// another section with other figures.
func page(row string) string {
	return "# Benchmarks\n\n" +
		"| figure | command | target | result |\n" +
		"|---|---|---|---|\n" +
		row + "\n\n" +
		"## Memory by key count\n\n" +
		"```\ngo run ./bench -run memory\n```\n\n" +
		"**Result** at commit `0663e6e`: 10.4 MiB at\n100k keys; it read 1,000 keys in 1.5–1.8 s.\n\n" +
		"```\n  100000       10.1 MiB      106 B         10.4 MiB      110 B\n```\n\n" +
		"Before the fix, 12.13 MiB at commit a0a0a0a.\n\n" +
		"### Per key\n\n**Result**: 110 B/key at 100k keys.\n\n" +
		"## Rotation: round trips\n\n24.13 round trips, `a1b2c3d`, measured by `go test -bench\n'Rotate$' ./rotation`.\n"
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name string
		row  string
		want []string // a substring of each problem, in order
	}{
		{
			name: "figures, command and commit of the section",
			row:  "| memory | `go run ./bench -run memory` | ≤ 64 MiB | **met**: 10.4 MiB at 100k keys, 1000 keys in 1.5–1.8 s, at `0663e6e` — [memory](#memory-by-key-count) |",
		},
		{
			name: "a subsection's result is its own",
			row:  "| memory | | | 110 B a key ([memory](#per-key)) |",
		},
		{
			name: "a figure the section gives outside its result",
			row:  "| memory | | | 10.1 MiB dry ([memory](#memory-by-key-count)) |",
			want: []string{"gives 10.1, which the result of section #memory-by-key-count"},
		},
		{
			name: "an older figure the section keeps for comparison",
			row:  "| memory | | | 12.13 MiB at `a0a0a0a` ([memory](#memory-by-key-count)) |",
			want: []string{"commit a0a0a0a is not named in the result", "gives 12.13"},
		},
		{
			name: "a subsection's result is not its section's",
			row:  "| memory | | | 110 B a key ([memory](#memory-by-key-count)) |",
			want: []string{"gives 110"},
		},
		{
			name: "figures from a section without a result paragraph",
			row:  "| rotation | | | 24.13 ([rotation](#rotation-round-trips)) |",
			want: []string{"has no paragraph starting **Result**"},
		},
		{
			name: "see section",
			row:  "| rotation | `go test ./rotation` | ≤ 9 | see [the section](#rotation-round-trips) |",
			want: []string{"command `go test ./rotation` is not in section #rotation-round-trips"},
		},
		{
			name: "a commit from a section without a result paragraph",
			row:  "| rotation | | | at `a1b2c3d`, see [it](#rotation-round-trips) |",
			want: []string{"has no paragraph starting **Result**"},
		},
		{
			name: "a command wrapped in the section's prose",
			row:  "| rotation | `go test -bench 'Rotate$' ./rotation` | ≤ 9 | see [the section](#rotation-round-trips) |",
		},
		{
			name: "see section, no command",
			row:  "| rotation | | ≤ 9 | see [the section](#rotation-round-trips) |",
		},
		{
			name: "a figure the section does not give",
			row:  "| memory | `go run ./bench -run memory` | | 12.13 MiB ([memory](#memory-by-key-count)) |",
			want: []string{"gives 12.13, which the result of section #memory-by-key-count"},
		},
		{
			name: "a figure only another section gives",
			row:  "| memory | | | 24.13 ([memory](#memory-by-key-count)) |",
			want: []string{"gives 24.13"},
		},
		{
			name: "the result paragraph ends at a blank line",
			row:  "| memory | | | 10.4 MiB, 106 B a key ([memory](#memory-by-key-count)) |",
			want: []string{"gives 106,"},
		},
		{
			name: "one end of a range the section does not give",
			row:  "| memory | | | 1.5–1.9 s ([memory](#memory-by-key-count)) |",
			want: []string{"gives 1.9,"},
		},
		{
			name: "a commit the section does not name",
			row:  "| memory | | | 10.4 MiB at `a1b2c3d` ([memory](#memory-by-key-count)) |",
			want: []string{"commit a1b2c3d is not named in the result"},
		},
		{
			name: "a command the section does not run",
			row:  "| memory | `go run ./bench -run memory -mem-keys 1000` | | 10.4 MiB ([memory](#memory-by-key-count)) |",
			want: []string{"command `go run ./bench -run memory -mem-keys 1000` is not in section"},
		},
		{
			name: "no section linked",
			row:  "| memory | | | 10.4 MiB, see below |",
			want: []string{"links no section"},
		},
		{
			name: "a section that does not exist",
			row:  "| memory | | | 10.4 MiB ([memory](#memory)) |",
			want: []string{"links #memory, which no heading makes"},
		},
		{
			name: "an unescaped pipe splits the cell, as on GitHub",
			row:  "| rotation | `go test -bench 'A|B' ./rotation` | | see [it](#rotation-round-trips) |",
			want: []string{"has 5 cells"},
		},
		{
			name: "an escaped pipe does not",
			row:  "| rotation | | | see `go test -bench 'A\\|B'` in [it](#rotation-round-trips) |",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			probs := Check("B.md", []byte(page(tt.row)))
			if len(probs) != len(tt.want) {
				t.Fatalf("got %d problems %v, want %d %q", len(probs), probs, len(tt.want), tt.want)
			}
			for i, p := range probs {
				if !strings.Contains(p.Msg, tt.want[i]) || p.Line != 5 {
					t.Errorf("problem %d is %s, want line 5 and %q", i, p, tt.want[i])
				}
			}
		})
	}
}

func TestCheckWithoutSummary(t *testing.T) {
	probs := Check("B.md", []byte("# Benchmarks\n\n## Memory\n\n10 MiB\n"))
	if len(probs) != 1 || !strings.Contains(probs[0].Msg, "no summary table") {
		t.Fatalf("got %v, want one problem: no summary table", probs)
	}
}
