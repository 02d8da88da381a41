package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// jsonDoc is a config file read whole and checked before anything in it
// is applied: encoding/json alone would take the last of two equal keys,
// ignore what follows the first value and match struct fields in any case,
// so a setting the operator wrote would be dropped without a word.
type jsonDoc struct {
	data []byte
	top  []jsonMember // the top-level members, in file order
	// spans are every value's path and extent, for the position of an
	// error that carries only an offset.
	spans []jsonSpan
}

// jsonMember is one top-level key and its value.
type jsonMember struct {
	key                  string
	value                json.RawMessage
	keyStart, valueStart int64
}

type jsonSpan struct {
	path       string
	start, end int64
}

// parseJSONDoc checks data: one JSON object and nothing after it, no key
// twice in any object, and in the objects the program decodes into a
// struct (top describes them), only the struct's keys, spelt exactly.
// Every error names a line and a column.
func parseJSONDoc(data []byte, top map[string]reflect.Type) (*jsonDoc, error) {
	d := &jsonDoc{data: data}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, d.errorAt(0, "the file is empty; want a JSON object")
	}
	if bytes.HasPrefix(data, []byte("\ufeff")) {
		return nil, d.errorAt(0, "the file starts with a byte order mark (U+FEFF), which JSON does not allow: save it as UTF-8 without one")
	}
	// encoding/json turns bytes that are not UTF-8 into U+FFFD: a name
	// would differ from the file's without a word.
	if !utf8.Valid(data) {
		at := 0
		for at < len(data) {
			r, size := utf8.DecodeRune(data[at:])
			if r == utf8.RuneError && size <= 1 {
				break
			}
			at += size
		}
		return nil, d.errorAt(int64(at), "byte 0x%02x is not UTF-8: save the file as UTF-8", data[at])
	}
	// Unmarshal checks the whole input before it decodes, so its offsets
	// count from the start of the file (a Decoder's Token offsets do not).
	var raw json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		var se *json.SyntaxError
		if !errors.As(err, &se) {
			return nil, err
		}
		at := se.Offset
		if strings.HasPrefix(se.Error(), "invalid character") && at > 0 {
			at-- // the offset is just past the offending byte
		}
		if strings.HasSuffix(se.Error(), "after top-level value") {
			return nil, d.errorAt(at, "data after the JSON object: %q", snippet(data[at:]))
		}
		return nil, d.errorAt(at, "%s", strings.Replace(se.Error(), "JSON input", "the file", 1))
	}
	w := &jsonWalker{doc: d, dec: json.NewDecoder(bytes.NewReader(data))}
	w.dec.UseNumber()
	if first := w.next(); data[first] != '{' {
		return nil, d.errorAt(first, "want a JSON object ({...}) holding the settings")
	}
	if err := w.value("", topLevel{top}); err != nil {
		return nil, err
	}
	return d, nil
}

// topLevel describes the top-level object: its keys are flag names, which
// ff checks, except those keys lists with their type ("pools").
type topLevel struct{ keys map[string]reflect.Type }

type jsonWalker struct {
	doc *jsonDoc
	dec *json.Decoder
}

// next is the offset of the next token: past white space and the commas
// and colons Token consumes silently.
func (w *jsonWalker) next() int64 {
	off := w.dec.InputOffset()
	for off < int64(len(w.doc.data)) && strings.IndexByte(" \t\r\n,:", w.doc.data[off]) >= 0 {
		off++
	}
	return off
}

// value reads one value at path; schema is a setting, a reflect.Type, a
// topLevel or nil (anything).
func (w *jsonWalker) value(path string, schema any) error {
	start := w.next()
	tok, err := w.dec.Token()
	if err != nil {
		return w.doc.errorAt(start, "%v", err) // not expected: Unmarshal checked the input
	}
	if s, ok := schema.(setting); ok {
		if tok == nil && s.t != reflect.TypeFor[json.RawMessage]() { // a raw value may be null
			// encoding/json leaves the zero value for null, which would
			// stand for a value the file never gave.
			hint := ""
			if !strings.HasSuffix(path, "]") {
				hint = " (leave the key out for its default)"
			}
			return w.doc.errorAt(start, "%s: want %s, not null%s", path, wantOf(s.t), hint)
		}
		schema = structural(s.t)
	}
	if p, ok := schema.(optional); ok {
		if tok == nil {
			schema = nil
		} else {
			schema = p.t
		}
	}
	if t, ok := schema.(reflect.Type); ok && !shapeOf(t, tok) {
		return w.doc.errorAt(start, "%s: want %s", path, wantOf(t))
	}
	switch tok {
	case json.Delim('{'):
		seen := map[string]int64{}
		for w.dec.More() {
			at := w.next()
			tok, err := w.dec.Token()
			if err != nil {
				return w.doc.errorAt(at, "%v", err)
			}
			key := tok.(string)
			kp := joinPath(path, key)
			if first, dup := seen[key]; dup {
				l, c := w.doc.position(at)
				fl, fc := w.doc.position(first)
				return fmt.Errorf("config file: duplicated key %q (line %d, column %d; first at line %d, column %d)", kp, l, c, fl, fc)
			}
			seen[key] = at
			child, err := childSchema(schema, key)
			if err != nil {
				return w.doc.errorAt(at, "unknown key %q%s", kp, err.Error())
			}
			valueStart := w.next()
			if err := w.value(kp, child); err != nil {
				return err
			}
			if _, ok := schema.(topLevel); ok {
				w.doc.top = append(w.doc.top, jsonMember{key: key, keyStart: at, valueStart: valueStart,
					value: w.doc.data[valueStart:w.dec.InputOffset()]})
			}
		}
		if _, err := w.dec.Token(); err != nil { // }
			return w.doc.errorAt(w.next(), "%v", err)
		}
	case json.Delim('['):
		var elem any
		if t, ok := schema.(reflect.Type); ok && t.Kind() == reflect.Slice {
			elem = setting{t.Elem()}
		}
		for i := 0; w.dec.More(); i++ {
			if err := w.value(path+"["+strconv.Itoa(i)+"]", elem); err != nil {
				return err
			}
		}
		if _, err := w.dec.Token(); err != nil { // ]
			return w.doc.errorAt(w.next(), "%v", err)
		}
	}
	w.doc.spans = append(w.doc.spans, jsonSpan{path: path, start: start, end: w.dec.InputOffset()})
	return nil
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// childSchema is the schema of key's value in an object of schema; an
// error (its text a hint) for a key a struct does not have.
func childSchema(schema any, key string) (any, error) {
	switch s := schema.(type) {
	case topLevel:
		if t, ok := s.keys[key]; ok {
			return setting{t}, nil
		}
		return nil, nil
	case reflect.Type:
		switch s.Kind() {
		case reflect.Map:
			return setting{s.Elem()}, nil
		case reflect.Struct:
			fields := jsonFields(s)
			if f, ok := fields[key]; ok {
				return setting{f}, nil
			}
			return nil, errors.New(didYouMean(key, slices.Sorted(maps.Keys(fields)), ""))
		}
	}
	return nil, nil
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// optional is the schema of a pointer: null, or what t wants.
type optional struct{ t reflect.Type }

// setting is the schema of a value the program decodes into a t: never
// null.
type setting struct{ t reflect.Type }

// structural is t as a schema: nil for a type that decodes itself or holds
// no object.
func structural(t reflect.Type) any {
	if t.Kind() == reflect.Pointer {
		if s, ok := structural(t.Elem()).(reflect.Type); ok {
			return optional{s}
		}
		return nil
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		return nil
	}
	switch t.Kind() {
	case reflect.Struct, reflect.Map, reflect.Slice:
		return t
	}
	return nil
}

// shapeOf reports whether a value starting with tok can be a t: a list for
// a slice, an object for a struct (encoding/json would take null for
// either, and an entry or list that says nothing would pass unseen), an
// object or null for a map.
func shapeOf(t reflect.Type, tok json.Token) bool {
	switch t.Kind() {
	case reflect.Slice:
		return tok == json.Delim('[')
	case reflect.Struct:
		return tok == json.Delim('{')
	case reflect.Map:
		return tok == json.Delim('{') || tok == nil
	}
	return true
}

// jsonFields are the keys encoding/json decodes into t's fields, and their
// types (exported fields only, "-" skipped).
func jsonFields(t reflect.Type) map[string]reflect.Type {
	fields := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		switch name, _, _ := strings.Cut(f.Tag.Get("json"), ","); name {
		case "-":
		case "":
			fields[f.Name] = f.Type
		default:
			fields[name] = f.Type
		}
	}
	return fields
}

// position is the 1-based line and column (in characters) of offset.
func (d *jsonDoc) position(offset int64) (line, col int) {
	before := d.data[:min(offset, int64(len(d.data)))]
	line = bytes.Count(before, []byte("\n")) + 1
	col = utf8.RuneCount(before[bytes.LastIndexByte(before, '\n')+1:]) + 1
	return line, col
}

// errorAt is a config file error at offset.
func (d *jsonDoc) errorAt(offset int64, format string, a ...any) error {
	l, c := d.position(offset)
	return fmt.Errorf("config file: "+format+" (line %d, column %d)", append(a, l, c)...)
}

// at appends offset's position to a config file error.
func (d *jsonDoc) at(offset int64, err error) error {
	l, c := d.position(offset)
	return fmt.Errorf("%w (line %d, column %d)", err, l, c)
}

// spanEndingAt is the innermost value that ends at offset (or holds it).
func (d *jsonDoc) spanEndingAt(offset int64) (jsonSpan, bool) {
	var best jsonSpan
	found := false
	for _, s := range d.spans {
		if s.start < offset && offset <= s.end && (!found || s.end-s.start < best.end-best.start) {
			best, found = s, true
		}
	}
	return best, found
}

// typeError explains a value of the wrong type inside the member m: the
// setting's path, what it wants and where it is.
func (d *jsonDoc) typeError(m jsonMember, err error) error {
	var te *json.UnmarshalTypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("config file: %s: %s", m.key, strings.TrimPrefix(err.Error(), "json: "))
	}
	s, ok := d.spanEndingAt(m.valueStart + te.Offset)
	if !ok {
		return fmt.Errorf("config file: %s: %s", m.key, strings.TrimPrefix(err.Error(), "json: "))
	}
	return d.errorAt(s.start, "%s: want %s, not %s", s.path, wantOf(te.Type), snippet(d.data[s.start:s.end]))
}

// wantOf names what a Go type reads, for a person.
func wantOf(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == reflect.TypeFor[stringOrList]() {
		return "a string or a list of strings"
	}
	switch t.Kind() {
	case reflect.Float32, reflect.Float64:
		return "a finite number"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	case reflect.Slice, reflect.Array:
		return "a list"
	}
	return "an object"
}

// snippet is the start of b, up to the end of its line, for a message.
func snippet(b []byte) string {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	}
	if len(b) > 24 {
		b = append(b[:24:24], "..."...)
	}
	return string(bytes.TrimSpace(b))
}
