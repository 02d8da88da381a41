package cli

import (
	"errors"
	"flag"
	"math"
	"strconv"
)

// finiteFloat is a number flag that refuses NaN and ±Inf, which strconv
// reads in any case ("inf", "+Infinity", "nan"): an infinite threshold
// never rotates and NaN fails every comparison, so a limit or a ratio set
// to it is off without a word. Flags, environment variables and the config
// file's top level all set a flag through Set.
type finiteFloat struct{ p *float64 }

func finiteFloatVar(fs *flag.FlagSet, p *float64, name string, value float64, usage string) {
	*p = value
	fs.Var(finiteFloat{p}, name, usage)
}

func (f finiteFloat) Set(s string) error {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return errors.New("want a number")
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return errors.New("want a finite number, not NaN or infinity")
	}
	*f.p = v
	return nil
}

func (f finiteFloat) String() string {
	if f.p == nil {
		return "0"
	}
	return strconv.FormatFloat(*f.p, 'g', -1, 64)
}

func (f finiteFloat) Get() any { return *f.p }

// GetPlaceholder is the help's name for the value.
func (finiteFloat) GetPlaceholder() string { return "NUMBER" }

// finite reports whether v is neither NaN nor ±Inf.
func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
