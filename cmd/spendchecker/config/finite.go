package config

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

// decimalInt is a whole-number flag read in decimal only: the flag
// package's own reads "010" as octal 8 and "0x10" as 16, a value other
// than the one the operator meant.
type decimalInt struct{ p *int }

func decimalIntVar(fs *flag.FlagSet, p *int, name string, value int, usage string) {
	*p = value
	fs.Var(decimalInt{p}, name, usage)
}

func (f decimalInt) Set(s string) error {
	v, err := strconv.ParseInt(s, 10, strconv.IntSize)
	if err != nil {
		return errors.New("want a whole number")
	}
	*f.p = int(v)
	return nil
}

func (f decimalInt) String() string {
	if f.p == nil {
		return "0"
	}
	return strconv.Itoa(*f.p)
}

func (f decimalInt) Get() any { return *f.p }

// GetPlaceholder is the help's name for the value.
func (decimalInt) GetPlaceholder() string { return "INT" }
