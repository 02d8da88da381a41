package secret

import (
	"bytes"
	"encoding/json"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"text/template"
)

// Redact replaces the secret in err's text by its Mask, keeping err for
// errors.Is and errors.As: an upstream or a gateway may echo the token it
// was given, and an error shared between keys reaches other keys' log
// lines. It masks the encoded forms of the secret too (see forms): a key
// sent in a URL shows in a network error percent-encoded.
func Redact(err error, s string) error {
	if err == nil || s == "" {
		return err
	}
	msg := RedactString(err.Error(), s)
	if msg == err.Error() {
		return err
	}
	return &redactedError{err: err, msg: msg}
}

// RedactText is err with every occurrence of text in its message replaced
// by shown, keeping err for errors.Is and errors.As: for a text that holds
// a secret in a spelling of the caller's making (a URL rendered from a
// template with the key in it), shown being that text made with the Mask.
func RedactText(err error, text, shown string) error {
	if err == nil || text == "" || text == shown || !strings.Contains(err.Error(), text) {
		return err
	}
	return &redactedError{err: err, msg: strings.ReplaceAll(err.Error(), text, shown)}
}

// RedactString masks every form of the secret s in text.
func RedactString(text, s string) string {
	if s == "" || !mayHold(text, s) {
		return text
	}
	mask := Mask(s)
	for _, f := range forms(s) {
		if strings.Contains(text, f) {
			text = strings.ReplaceAll(text, f, mask)
		}
	}
	return text
}

// RedactBody masks the secret in an upstream's answer before a parser
// quotes a cut of it (%.120q): masking the error text afterwards misses a
// secret that straddles the cut, all but its last characters left in the
// error. The body is the bytes as sent, so only the raw secret is looked
// for; the error it ends in still goes through Redact.
func RedactBody(body []byte, s string) []byte {
	if s == "" || !bytes.Contains(body, []byte(s)) {
		return body
	}
	return bytes.ReplaceAll(body, []byte(s), []byte(Mask(s)))
}

// MayHold reports whether text may hold a form of the secret s: when it
// says no, RedactString leaves text as it is. One substring search, so a
// caller can skip the copy and the forms (built per call) for the answers
// that do not echo the key: nearly all of them.
func MayHold(text []byte, s string) bool {
	if s == "" {
		return false
	}
	run := plainRun(s)
	return run == "" || bytes.Contains(text, []byte(run))
}

func mayHold(text, s string) bool {
	run := plainRun(s)
	return run == "" || strings.Contains(text, run)
}

// plainRun is the longest run of s made of letters, digits and -._~ (the
// characters URLs leave unreserved): none of the escapers behind forms
// changes one of them, so every form of s holds this run as it is. For
// most keys it is the whole key.
func plainRun(s string) string {
	best, start := "", 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) && unreserved(s[i]) {
			continue
		}
		if i-start > len(best) {
			best = s[start:i]
		}
		start = i + 1
	}
	return best
}

func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

// forms are the spellings of a secret an error or a quoted body may carry:
// raw; percent-encoded as a query value, a path segment and twice (a URL
// quoted into another), in upper- or lowercase hex; as text/template's html
// and js escapes write it (a configured provider's templates may use them);
// as encoding/json writes it, and with JSON's escaped slash; and each of
// those as Go's %q quotes it. Longest first, so a form is
// masked whole before a shorter one inside it.
func forms(s string) []string {
	seen := map[string]bool{}
	var out []string
	add := func(f string) {
		if len(f) >= len(s)/2 && f != "" && !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	q, path := url.QueryEscape(s), url.PathEscape(s)
	j, _ := json.Marshal(s) // a string always marshals
	base := []string{s, q, path, strings.ReplaceAll(q, "%", "%25"), url.QueryEscape(q),
		// Percent-encoding with lowercase hex digits, as some servers echo
		// a URL (RFC 3986 allows both).
		lowerHex(q), lowerHex(path), lowerHex(url.QueryEscape(q)),
		template.HTMLEscapeString(s), template.JSEscapeString(s), strings.ReplaceAll(s, "/", `\/`),
		// encoding/json's escapes (\u003c, lowercase; JSEscape writes \u003C).
		string(j[1 : len(j)-1])}
	for _, f := range base {
		add(f)
		qq := strconv.Quote(f)
		add(qq[1 : len(qq)-1])
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// lowerHex is f with the hex digits of its percent-escapes in lowercase.
func lowerHex(f string) string {
	b := []byte(f)
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '%' {
			b[i+1], b[i+2] = lowerByte(b[i+1]), lowerByte(b[i+2])
			i += 2
		}
	}
	return string(b)
}

func lowerByte(c byte) byte {
	if 'A' <= c && c <= 'F' {
		return c + 'a' - 'A'
	}
	return c
}

// redactedError is an error with its text redacted; errors.Is and As
// still see the original.
type redactedError struct {
	err error
	msg string
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }
