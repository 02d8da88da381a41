package notify

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"

	"github.com/spendchecker/spendchecker/rotation/secret"
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
		return nil, fmt.Errorf("notify URL %s: not a URL", secret.RedactURL(s))
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("notify URL %s: want http:// or https://", secret.RedactURL(s))
	}
	if u.Host == "" {
		return nil, fmt.Errorf("notify URL %s: no host", secret.RedactURL(s))
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("notify URL %s: port %s is not between 1 and 65535", secret.RedactURL(s), p)
		}
	}
	return u, nil
}
