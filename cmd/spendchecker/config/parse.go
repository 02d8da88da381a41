package config

import (
	"errors"
	"flag"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v4"
)

// Parse reads the configuration: flags win over SPENDCHECKER_* environment
// variables, which win over --config FILE, which wins over defaults. Each
// command accepts only its own flags; a config file may hold the settings
// of every command.
//
// Parse selects the command (Config.Command), parses its flags and
// validates them.
func Parse(args []string) (*Config, error) {
	c := New()
	st := newParseState()
	t := commands(c, st)
	cmd := t.root
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		c.Command = args[0]
		args = args[1:]
		if c.Command == "help" {
			return nil, t.help(args)
		}
		cmd = t.subcommand(c.Command)
		if cmd == nil {
			return nil, usage("unknown command %q%s (commands: %s; see spendchecker --help)", c.Command, t.commandHint(c.Command), t.names())
		}
	}
	// rotate KEY_ID may come before the flags.
	if c.Command == "rotate" && len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		c.Args = append(c.Args, args[0])
		args = args[1:]
	}
	ffs := cmd.Flags.(*ff.FlagSet)
	opts := []ff.Option{ff.WithEnvVarPrefix("SPENDCHECKER")}
	file := &fileState{top: map[string]bool{}, user: map[string]bool{}}
	if _, ok := ffs.GetFlag("config"); ok {
		opts = append(opts, ff.WithConfigFileFlag("config"), ff.WithConfigFileParser(jsonParser(file, ffs, t.allFlags())))
	}
	err := ff.Parse(ffs, args, opts...)
	if errors.Is(err, ff.ErrHelp) || errors.Is(err, flag.ErrHelp) {
		return nil, &HelpRequest{Text: helpText(cmd)}
	}
	if err != nil {
		msg := strings.TrimPrefix(err.Error(), "parse args: ")
		msg = strings.Replace(msg, "parse config file: config file: ", "config file: ", 1)
		return nil, usage("%s%s", explainParseError(msg, t.std[cmd]), t.flagHint(cmd, err))
	}
	if rest := ffs.GetArgs(); c.Command == "" && len(rest) > 0 {
		if err := t.commandLast(args, len(args)-len(rest)); err != nil {
			return nil, err
		}
	}
	c.Args = append(c.Args, ffs.GetArgs()...)
	if f, ok := ffs.GetFlag("config"); ok {
		c.ConfigFile = f.GetValue()
	}
	if c.MongoURI == "" {
		// Flags, environment and file said nothing: the systemd credential.
		uri, _, err := readCredential(credMongoURI)
		if err != nil {
			return nil, usage("%v", err)
		}
		c.MongoURI = uri
	}
	if c.Version {
		c.Command = "version"
	}
	pc := st.pool
	pc.RotateUnauthorized = &st.rotateUnauth
	if len(file.pools) > 0 {
		if c.Pools, c.Overrides, err = file.resolvePools(pc); err != nil {
			return nil, err
		}
	} else {
		c.Pools = []PoolConfig{pc}
	}
	if c.LeaseRenewDeadline == 0 {
		c.LeaseRenewDeadline = time.Duration(float64(c.LeaseDuration) * defaultRenewDeadlineShare)
	}
	if c.LeaseRetryPeriod == 0 {
		c.LeaseRetryPeriod = time.Duration(float64(c.LeaseDuration) * defaultRetryPeriodShare)
	}
	return c, c.validate()
}

// explainParseError replaces the flag package's bare "parse error" (it drops
// strconv's reason) with what the setting wants, whichever of the flag, the
// environment variable or the file key carried the value.
func explainParseError(msg string, sets []*flag.FlagSet) string {
	// The flag package's error, before the file's position if any.
	i := strings.LastIndex(msg, "parse error")
	if i < 0 {
		return msg
	}
	rest, tail := msg[:i], msg[i+len("parse error"):]
	want := ""
	for _, fs := range sets {
		fs.VisitAll(func(f *flag.Flag) {
			if !strings.Contains(msg, "--"+f.Name+":") && !strings.Contains(msg, envVar(f.Name)+"=") && !strings.Contains(msg, "config file: "+f.Name+":") {
				return
			}
			g, ok := f.Value.(flag.Getter)
			if !ok {
				return
			}
			switch g.Get().(type) {
			case float64:
				want = "want a number"
			case int:
				want = "want a whole number"
			case bool:
				want = "want true or false"
			case time.Duration:
				want = "want a duration with a unit, such as 30s or 5m"
			}
		})
	}
	if want == "" {
		return msg
	}
	return rest + want + tail
}
