package config

import (
	"errors"
	"flag"
	"strings"
	"testing"
)

// Every number setting refuses NaN and ±Inf in every spelling strconv
// reads, from a flag, the environment, the file's top level and a pool
// entry: +Inf as a threshold never rotates, NaN turns a ratio or a rate
// limit off without a word.
func TestNumberSettingsRefuseNonFinite(t *testing.T) {
	settings := []struct {
		name string
		pool bool // a pool setting: also read from a pool entry
	}{
		{"threshold", true}, {"budget-ratio", true}, {"min-remaining", true}, {"rate-prior", true}, {"burst-factor", true},
		{"rate-limit", false}, {"host-rate", false}, {"reject-share", false},
	}
	values := []string{"Inf", "+Inf", "-Inf", "inf", "infinity", "+Infinity", "-INFINITY", "NaN", "nan", "+NaN"}
	for _, s := range settings {
		for _, v := range values {
			sources := []struct {
				name, want string
				args       []string
				env        map[string]string
				file       string
			}{
				{name: "flag", args: []string{"--" + s.name, v}, want: "--" + s.name},
				{name: "environment", env: map[string]string{envVar(s.name): v}, want: envVar(s.name)},
				{name: "file", file: `"` + s.name + `": "` + v + `"`, want: "config file: " + s.name},
			}
			if s.pool {
				sources = append(sources, struct {
					name, want string
					args       []string
					env        map[string]string
					file       string
				}{name: "pool entry", file: `"pools": [{"pool": "openhands", "` + s.name + `": "` + v + `"}]`, want: "pools[0]." + s.name})
			}
			for _, src := range sources {
				t.Run(s.name+"/"+v+"/"+src.name, func(t *testing.T) {
					for k, val := range src.env {
						t.Setenv(k, val)
					}
					args := append([]string{"--mongo-uri", uri, "--provider", "deepseek"}, src.args...)
					if src.file != "" {
						args = append(args, "--config", writeFile(t, `{`+src.file+`}`))
					}
					_, err := Parse(args)
					var ue *UsageError
					if !errors.As(err, &ue) {
						t.Fatalf("err %v, want a usage error (exit 2)", err)
					}
					if msg := err.Error(); !strings.Contains(msg, src.want) || strings.Contains(msg, "\n") {
						t.Errorf("message %q: want one line naming %s", msg, src.want)
					}
				})
			}
		}
	}
}

// The table above names every number flag: one added later must refuse
// NaN and Inf too (finiteFloatVar), and join the table.
func TestEveryNumberFlagIsFinite(t *testing.T) {
	c := New()
	tr := commands(c, newParseState())
	for _, sets := range tr.std {
		for _, fs := range sets {
			fs.VisitAll(func(f *flag.Flag) {
				g, ok := f.Value.(flag.Getter)
				if !ok {
					return
				}
				if _, isFloat := g.Get().(float64); isFloat {
					if _, finite := f.Value.(finiteFloat); !finite {
						t.Errorf("--%s is a number flag that takes NaN and Inf", f.Name)
					}
				}
			})
		}
	}
}

// A whole number is read in decimal from a flag, the environment or the
// file: the flag package's own reading takes "010" as octal 8 and "0x10"
// as 16, a value other than the one written.
func TestWholeNumbersAreDecimal(t *testing.T) {
	// Every whole-number flag, one added later too, is a decimalInt.
	tr := commands(New(), newParseState())
	for _, sets := range tr.std {
		for _, fs := range sets {
			fs.VisitAll(func(f *flag.Flag) {
				if g, ok := f.Value.(flag.Getter); ok {
					if _, isInt := g.Get().(int); isInt {
						if _, dec := f.Value.(decimalInt); !dec {
							t.Errorf("--%s is a whole-number flag that reads octal and hex", f.Name)
						}
					}
				}
			})
		}
	}
	for _, name := range []string{"concurrency", "reject-min", "notify-backups-below"} {
		for _, tc := range []struct {
			value string
			want  int // 0: refused
		}{{"010", 10}, {"12", 12}, {"+12", 12}, {"0x10", 0}, {"0o10", 0}, {"0b11", 0}, {"1_000", 0}} {
			sources := []struct {
				name string
				args []string
				env  map[string]string
				file string
			}{
				{name: "flag", args: []string{"--" + name, tc.value}},
				{name: "environment", env: map[string]string{envVar(name): tc.value}},
				{name: "file", file: `{"` + name + `": "` + tc.value + `"}`},
			}
			for _, src := range sources {
				t.Run(name+"/"+tc.value+"/"+src.name, func(t *testing.T) {
					for k, v := range src.env {
						t.Setenv(k, v)
					}
					args := append([]string{"--mongo-uri", uri}, src.args...)
					if src.file != "" {
						args = append(args, "--config", writeFile(t, src.file))
					}
					c, err := Parse(args)
					if tc.want == 0 {
						var ue *UsageError
						if !errors.As(err, &ue) || !strings.Contains(err.Error(), "want a whole number") {
							t.Fatalf("err %v, want a usage error saying it wants a whole number", err)
						}
						return
					}
					if err != nil {
						t.Fatal(err)
					}
					got := map[string]int{"concurrency": c.Concurrency, "reject-min": c.RejectMin, "notify-backups-below": c.NotifyBackupsBelow}[name]
					if got != tc.want {
						t.Errorf("--%s %s read as %d, want %d", name, tc.value, got, tc.want)
					}
				})
			}
		}
	}
}
