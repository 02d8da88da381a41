package secret

import (
	"errors"
	"net/url"
	"regexp"
	"sort"
	"strings"
)

// RedactURL is a webhook URL fit for a log line or an error. Slack and
// Discord put the webhook's secret in the path (…/services/T/B/SECRET,
// …/api/webhooks/ID/TOKEN), others in the query or the user info: only
// the scheme and the host are kept.
func RedactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return "(unparsable URL)"
	}
	out := u.Scheme + "://"
	if u.User != nil {
		out += "xxxxx@"
	}
	out += u.Host
	if strings.Trim(u.EscapedPath(), "/") != "" {
		out += "/xxxxx"
	}
	if u.RawQuery != "" {
		out += "?xxxxx"
	}
	return out
}

// RedactURLParts removes from msg every part of rawURL that may be its
// secret: some servers echo the path they were asked ("Cannot POST
// /services/T/B/SECRET"), and their answer goes to the log.
func RedactURLParts(msg, rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(answer withheld)"
	}
	var parts []string
	for _, p := range []string{u.EscapedPath(), u.Path, u.RawQuery, u.User.Username()} {
		parts = append(parts, p)
		parts = append(parts, strings.FieldsFunc(p, func(r rune) bool { return strings.ContainsRune("/?&=;", r) })...)
	}
	if pw, ok := u.User.Password(); ok {
		parts = append(parts, pw)
	}
	for _, vs := range u.Query() {
		parts = append(parts, vs...)
	}
	// Longest first, so a part inside another is not left half-replaced;
	// short parts ("api", "v1") are not secrets and would mangle the text.
	sort.Slice(parts, func(i, j int) bool { return len(parts[i]) > len(parts[j]) })
	for _, p := range parts {
		if len(p) >= 6 {
			msg = strings.ReplaceAll(msg, p, "xxxxx")
		}
	}
	return msg
}

// RedactURLError is err's text with the URL an HTTP client puts in its
// errors (*url.Error) shown as RedactURL shows it.
func RedactURLError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Op + " " + RedactURL(ue.URL) + ": " + ue.Err.Error()
	}
	return err.Error()
}

// RedactMongoURI hides the password of any MongoDB URI in s: a driver or
// config error may quote the URI it was given.
func RedactMongoURI(s string) string {
	var b strings.Builder
	for {
		loc := mongoScheme.FindStringIndex(s)
		if loc == nil {
			return b.String() + s
		}
		b.WriteString(s[:loc[1]])
		s = s[loc[1]:]
		// The URI runs to the next space or quote. Its user information ends
		// at its last '@' (a host never holds one), whatever the password
		// holds — a raw '/' or a bad escape the URL parser would refuse.
		end := strings.IndexAny(s, " \t\r\n\"'`")
		if end < 0 {
			end = len(s)
		}
		at := strings.LastIndexByte(s[:end], '@')
		if colon := strings.IndexByte(s[:max(at, 0)], ':'); at > 0 && colon >= 0 {
			b.WriteString(s[:colon+1] + "xxxxx")
			s = s[at:]
		}
	}
}

// mongoScheme finds a MongoDB URI in any case of its scheme.
var mongoScheme = regexp.MustCompile(`(?i)mongodb(?:\+srv)?://`)
