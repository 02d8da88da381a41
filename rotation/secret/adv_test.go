package secret_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"text/template"

	"github.com/spendchecker/spendchecker/rotation/secret"
)

// Every spelling an upstream, a gateway or a log line may give a key with a
// short (or empty) longest unreserved run — keys of base64 with many '+',
// '/', '=', keys with '%', spaces or non-ASCII — is masked in a text, and
// MayHold never says no for a text RedactString would change (the spend
// client skips masking the answer then).
func TestAdvCheck_EverySpellingMasked(t *testing.T) {
	keys := []string{
		"sk-ab+/cd+/ef==gh+/ij+/kl==",     // base64, runs of 2
		"+/+/=+/+/=+/+/=+/+/=",            // no unreserved character at all
		"a%b%c%d%e%f%g%h%i%j%k%l%m",       // percent signs
		"key with spaces and  tabs\tend!", // spaces, a tab
		"clé-ünïcødé-sécret-ключ-0123",    // non-ASCII
		"sk\"quote\\back'tick<lt>amp&eq=", // escapes of every kind
		"sk-proj-abcdefghijklmnopqrstuvwxyz0123456789",
	}
	jsonOf := func(s string) string {
		b, _ := json.Marshal(s)
		return string(b[1 : len(b)-1])
	}
	jsonPlain := func(s string) string {
		var sb strings.Builder
		e := json.NewEncoder(&sb)
		e.SetEscapeHTML(false)
		_ = e.Encode(s)
		out := strings.TrimSpace(sb.String())
		return out[1 : len(out)-1]
	}
	lowerHex := func(s string) string {
		// Percent-encoding with lowercase hex digits (RFC 3986 allows both;
		// .NET's UrlEncode writes lowercase).
		var sb strings.Builder
		for i := 0; i < len(s); i++ {
			if s[i] == '%' && i+2 < len(s) {
				sb.WriteString("%" + strings.ToLower(s[i+1:i+3]))
				i += 2
				continue
			}
			sb.WriteByte(s[i])
		}
		return sb.String()
	}
	spellings := []struct {
		name string
		f    func(string) string
	}{
		{"raw", func(s string) string { return s }},
		{"query", url.QueryEscape},
		{"path", url.PathEscape},
		{"query twice", func(s string) string { return url.QueryEscape(url.QueryEscape(s)) }},
		{"html", template.HTMLEscapeString},
		{"js", template.JSEscapeString},
		{"go quoted", func(s string) string { q := strconv.Quote(s); return q[1 : len(q)-1] }},
		{"go quoted query", func(s string) string { q := strconv.Quote(url.QueryEscape(s)); return q[1 : len(q)-1] }},
		{"json", jsonOf},
		{"json, no html escape", jsonPlain},
		{"json of query", func(s string) string { return jsonOf(url.QueryEscape(s)) }},
		{"query, lowercase hex", func(s string) string { return lowerHex(url.QueryEscape(s)) }},
		{"path, lowercase hex", func(s string) string { return lowerHex(url.PathEscape(s)) }},
	}
	for _, key := range keys {
		for _, sp := range spellings {
			t.Run(fmt.Sprintf("%s/%s", sp.name, key), func(t *testing.T) {
				form := sp.f(key)
				text := `upstream: {"error":"invalid key ` + form + `"} (GET /v1/x?key=` + form + `)`
				got := secret.RedactString(text, key)
				if strings.Contains(got, form) {
					t.Errorf("RedactString left the %s spelling %q in %q", sp.name, form, got)
				}
				if got != text && !secret.MayHold([]byte(text), key) {
					t.Errorf("MayHold says no for a text RedactString masks: %q", text)
				}
			})
		}
	}
}
