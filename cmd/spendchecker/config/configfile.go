package config

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/peterbourgon/ff/v4"
)

// jsonParser reads a JSON object: flat keys are flag names (ff applies them
// with the right precedence and rejects unknown ones); "pools" is a list of
// pool objects, decoded strictly. A key another command has (the daemon's
// --interval in a file that `status` reads) is skipped; a key no command
// has is an error. The file is checked whole first (jsondoc.go).
func jsonParser(st *fileState, ffs *ff.FlagSet, known map[string]flag.Value) ff.ConfigFileParseFunc {
	return func(r io.Reader, set func(name, value string) error) error {
		// ff reads the file last: what is set now came from a flag or the
		// environment.
		_ = ffs.WalkFlags(func(f ff.Flag) error {
			if name, ok := f.GetLongName(); ok && f.IsSet() {
				st.user[name] = true
			}
			return nil
		})
		data, err := io.ReadAll(r)
		if err != nil {
			return fmt.Errorf("config file: %w", err)
		}
		doc, err := parseJSONDoc(data, map[string]reflect.Type{"pools": reflect.TypeFor[[]PoolConfig]()})
		if err != nil {
			return err
		}
		for _, m := range doc.top {
			if m.key == "pools" {
				if err := st.readPools(doc, m); err != nil {
					return err
				}
				continue
			}
			if m.key == "config" {
				return doc.errorAt(m.keyStart, "\"config\" cannot be set from a config file")
			}
			v, ok := known[m.key]
			if !ok {
				// Whatever its value: a list or an object under a
				// mistyped key is still a mistyped key.
				names := append(slices.Sorted(maps.Keys(known)), "pools")
				return doc.errorAt(m.keyStart, "unknown key %q%s", m.key, didYouMean(m.key, names, ""))
			}
			if _, ok := ffs.GetFlag(m.key); !ok {
				continue
			}
			st.top[m.key] = true
			_, many := v.(*urlList)
			if err := setFromJSON(m, many, set); err != nil {
				return doc.at(m.valueStart, err)
			}
		}
		return nil
	}
}

// setFromJSON sets the flag m names from its value: a string, number or
// boolean, or, for a repeatable flag (many), a list of strings.
func setFromJSON(m jsonMember, many bool, set func(name, value string) error) error {
	var v any
	dec := json.NewDecoder(bytes.NewReader(m.value))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return fmt.Errorf("config file: %s: %w", m.key, err)
	}
	var s string
	switch x := v.(type) {
	case string:
		s = x
	case bool:
		s = strconv.FormatBool(x)
	case json.Number:
		var err error
		if s, err = numberText(x); err != nil {
			return fmt.Errorf("config file: %s: %w", m.key, err)
		}
	case []any:
		if !many {
			// Setting each element would keep the last, and none
			// would keep the default.
			return fmt.Errorf("config file: %s: takes one value, not a list", m.key)
		}
		// A list: each string is one value of a repeatable flag.
		for _, e := range x {
			str, ok := e.(string)
			if !ok {
				return fmt.Errorf("config file: %s: want a list of strings", m.key)
			}
			if err := set(m.key, str); err != nil {
				return fmt.Errorf("config file: %s: %w", m.key, trimName(err, m.key))
			}
		}
		return nil
	default:
		return fmt.Errorf("config file: %s: want a string, number or boolean", m.key)
	}
	if err := set(m.key, s); err != nil {
		return fmt.Errorf("config file: %s: set %q: %w", m.key, s, trimName(err, m.key))
	}
	return nil
}

// numberText is a JSON number as a flag reads it: a whole number as
// written (float64 would round one past 2^53), any other as its float64.
func numberText(n json.Number) (string, error) {
	if _, err := strconv.ParseInt(n.String(), 10, 64); err == nil {
		return n.String(), nil
	}
	f, err := strconv.ParseFloat(n.String(), 64)
	if err != nil {
		return "", fmt.Errorf("want a finite number, not %s", n)
	}
	return strconv.FormatFloat(f, 'f', -1, 64), nil
}

// trimName drops ff's "name: " before its error, keeping the chain.
func trimName(err error, name string) error {
	if msg, ok := strings.CutPrefix(err.Error(), name+": "); ok {
		return wrapped{msg, err}
	}
	return err
}

// wrapped is an error with another text that still unwraps to err.
type wrapped struct {
	msg string
	err error
}

func (w wrapped) Error() string { return w.msg }
func (w wrapped) Unwrap() error { return w.err }

// readPools decodes the "pools" member and records which keys each entry
// sets (zero and false included).
func (st *fileState) readPools(doc *jsonDoc, m jsonMember) error {
	pd := json.NewDecoder(bytes.NewReader(m.value))
	pd.DisallowUnknownFields()
	if err := pd.Decode(&st.pools); err != nil {
		return doc.typeError(m, err)
	}
	if len(st.pools) == 0 {
		// Taken as no file pools, the flags' one pool would be served.
		return doc.errorAt(m.valueStart, "pools is empty: list the pools to serve, or leave pools out to serve the one the flags name")
	}
	var present []map[string]json.RawMessage
	_ = json.Unmarshal(m.value, &present)
	for _, e := range present {
		keys := map[string]bool{}
		for k := range e {
			keys[k] = true
		}
		st.present = append(st.present, keys)
	}
	return nil
}
