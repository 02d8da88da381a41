package notify

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
)

// Format is a payload format.
type Format string

// The formats (docs/operating.md, "Notifications").
const (
	JSON    Format = "json"
	Slack   Format = "slack"
	Discord Format = "discord"
)

// Formats lists every format.
var Formats = []Format{JSON, Slack, Discord}

// ParseFormat reads --notify-format.
func ParseFormat(s string) (Format, error) {
	for _, f := range Formats {
		if string(f) == s {
			return f, nil
		}
	}
	return "", fmt.Errorf("notify format %q: want json, slack or discord", s)
}

// discordMax is the length limit of a Discord message's content (Discord's
// "Execute Webhook": content, up to 2000 characters).
const discordMax = 2000

// Encode renders the event as the format's request body.
func (f Format) Encode(ev Event) ([]byte, error) {
	text := "spendchecker " + string(ev.Kind) + ": " + ev.Message
	switch f {
	case JSON:
		return json.Marshal(ev)
	case Slack:
		// An incoming webhook takes {"text": ...} in Slack's mrkdwn, where
		// &, < and > must be escaped.
		return json.Marshal(struct {
			Text string `json:"text"`
		}{slackEscape(text)})
	case Discord:
		if r := []rune(text); len(r) > discordMax {
			text = string(r[:discordMax-1]) + "…"
		}
		// No mention in a key id or a pool name may ping anyone.
		return json.Marshal(struct {
			Content         string `json:"content"`
			AllowedMentions struct {
				Parse []string `json:"parse"`
			} `json:"allowed_mentions"`
		}{Content: text, AllowedMentions: struct {
			Parse []string `json:"parse"`
		}{Parse: []string{}}})
	}
	return nil, fmt.Errorf("unknown notify format %q", f)
}

// ParseURL checks a webhook URL: http or https, with a host.
func ParseURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("notify URL %s: not a URL", RedactURL(s))
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("notify URL %s: want http:// or https://", RedactURL(s))
	}
	if u.Host == "" {
		return nil, fmt.Errorf("notify URL %s: no host", RedactURL(s))
	}
	return u, nil
}

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

// scrub removes from a receiver's answer every part of the webhook URL
// that may be its secret: some servers echo the path they were asked
// ("Cannot POST /services/T/B/SECRET"), and the answer goes to the log.
func scrub(msg, rawURL string) string {
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

// redactErr drops the URL the HTTP client puts in its errors.
func redactErr(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Op + " " + RedactURL(ue.URL) + ": " + ue.Err.Error()
	}
	return err.Error()
}
