package cli

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
		{"threshold", true}, {"budget-ratio", true}, {"min-remaining", true},
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
	c := newConfig()
	tr := commands(c, newParseState(), &program{})
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
