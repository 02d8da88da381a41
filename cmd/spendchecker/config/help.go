package config

import (
	"fmt"
	"strings"

	"github.com/peterbourgon/ff/v4"
	"github.com/peterbourgon/ff/v4/ffhelp"
)

// helpText is a command's help: its usage, its subcommands and each flag
// with its environment variable and default. Flags are written --flag, as
// in the docs and the error messages (ffhelp writes a flag set adapted
// from package flag with one dash).
func helpText(cmd *ff.Command) string {
	help := ffhelp.Help{}
	title := cmd.Name
	if cmd.ShortHelp != "" {
		title += " -- " + cmd.ShortHelp
	}
	help = append(help, ffhelp.NewSection("COMMAND", title))
	if cmd.Usage != "" {
		help = append(help, ffhelp.NewSection("USAGE", cmd.Usage))
	}
	if cmd.LongHelp != "" {
		help = append(help, ffhelp.NewUntitledSection(cmd.LongHelp))
	}
	if len(cmd.Subcommands) > 0 {
		help = append(help, ffhelp.NewSubcommandsSection(cmd.Subcommands))
	}
	help = append(help, flagSections(cmd.Flags)...)
	return strings.TrimRight(help.String(), "\n")
}

// flagSections are the FLAGS sections, one per flag set, aligned alike.
func flagSections(fs ff.Flags) []ffhelp.Section {
	type line struct{ spec, usage string }
	var order []string
	groups := map[string][]line{}
	width := 0
	_ = fs.WalkFlags(func(f ff.Flag) error {
		name, _ := f.GetLongName()
		spec := "--" + name
		if p := f.GetPlaceholder(); p != "" {
			sep := " "
			if p == "BOOL" {
				// ff's placeholder of a boolean defaulting to true: its
				// value goes after =.
				sep = "="
			}
			spec += sep + p
		}
		usage := f.GetUsage()
		// A usage that states its own default (a share of another
		// setting, a fallback) shows that one only.
		if def := f.GetDefault(); def != "" && !strings.Contains(usage, "(default: ") {
			usage += " (default: " + def + ")"
		}
		group := f.GetFlags().GetName()
		if _, ok := groups[group]; !ok {
			order = append(order, group)
		}
		groups[group] = append(groups[group], line{spec, usage})
		width = max(width, len(spec))
		return nil
	})
	var sections []ffhelp.Section
	for _, g := range order {
		s := ffhelp.NewSection(fmt.Sprintf("FLAGS (%s)", g))
		for _, l := range groups[g] {
			s.Lines = append(s.Lines, fmt.Sprintf("%-*s   %s", width, l.spec, l.usage))
		}
		sections = append(sections, s)
	}
	return sections
}
