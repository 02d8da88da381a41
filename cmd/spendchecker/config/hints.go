package config

import (
	"errors"
	"flag"
	"slices"
	"strconv"
	"strings"

	"github.com/peterbourgon/ff/v4"
)

// commandHint suggests the command a mistyped one meant.
func (t *tree) commandHint(name string) string {
	return didYouMean(name, strings.Split(t.names(), ", "), "")
}

// flagHint explains an unknown flag: another command's, or a typo of one
// of cmd's. "" for any other parse error.
func (t *tree) flagHint(cmd *ff.Command, err error) string {
	if !errors.Is(err, ff.ErrUnknownFlag) {
		return ""
	}
	_, quoted, _ := strings.Cut(err.Error(), ff.ErrUnknownFlag.Error()+" ")
	name, uerr := strconv.Unquote(quoted)
	if uerr != nil {
		return ""
	}
	var own, others []string
	for c, sets := range t.std {
		for _, fs := range sets {
			fs.VisitAll(func(f *flag.Flag) {
				switch {
				case c == cmd:
					own = append(own, f.Name)
				case f.Name == name && !slices.Contains(others, c.Name):
					others = append(others, c.Name)
				}
			})
		}
	}
	if len(others) > 0 {
		slices.Sort(others)
		return "; --" + name + " is a flag of " + strings.Join(others, ", ") + ", not of " + cmd.Name
	}
	slices.Sort(own)
	return didYouMean(name, own, "--")
}

// commandLast refuses a command written after the daemon's flags (ff stops
// at the first argument that is no flag, args[at]) with the line meant.
func (t *tree) commandLast(args []string, at int) error {
	name := args[at]
	if t.subcommand(name) == nil && name != "help" {
		return nil
	}
	line := []string{"spendchecker", name}
	for i, a := range args {
		if i != at {
			line = append(line, shellWord(a))
		}
	}
	return usage("unexpected argument %q: the command comes first: %s", name, strings.Join(line, " "))
}

// shellWord quotes an argument for a command line to copy, and shows a
// web address (a webhook's path is its secret) without its path.
func shellWord(a string) string {
	for _, scheme := range []string{"https://", "http://"} {
		if i := strings.Index(a, scheme); i >= 0 {
			host, _, found := strings.Cut(a[i+len(scheme):], "/")
			if found {
				a = a[:i] + scheme + host + "/..."
			}
		}
	}
	if a == "" || strings.ContainsAny(a, " \t\n'\"$`\\|&;<>()*?[]#~") {
		return "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return a
}
