package secret_test

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/spendchecker/spendchecker/rotation/secret"
)

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://hooks.slack.com/services/T000/B000/XXXXSECRET":     "https://hooks.slack.com/xxxxx",
		"https://discord.com/api/webhooks/123/tokenSECRET":          "https://discord.com/xxxxx",
		"https://user:passSECRET@example.com/hook?token=SECRET&x=1": "https://xxxxx@example.com/xxxxx?xxxxx",
		"http://alerts.internal:8080":                               "http://alerts.internal:8080",
		"http://alerts.internal:8080/":                              "http://alerts.internal:8080",
		"::nonsense SECRET":                                         "(unparsable URL)",
		"hooks.slack.com/services/SECRET":                           "(unparsable URL)",
	} {
		if got := secret.RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRedactURLParts(t *testing.T) {
	const hook = "https://bot:pw-SECRET@hooks.example.com/services/T0001/B0002/XXXXSECRET?token=TOKSECRET&v=1"
	tests := []struct{ name, msg, url, want string }{
		{"echoed path", "Cannot POST /services/T0001/B0002/XXXXSECRET", hook, "Cannot POST xxxxx"},
		{"one segment", "no such webhook XXXXSECRET", hook, "no such webhook xxxxx"},
		{"query value", "bad token TOKSECRET", hook, "bad token xxxxx"},
		{"password", "auth pw-SECRET refused", hook, "auth xxxxx refused"},
		// Parts under 6 characters are not secrets and would mangle the text.
		{"short parts kept", "v=1 api ok", "https://h.example.com/api?v=1", "v=1 api ok"},
		{"unparsable URL", "anything", "http://[::1", "(answer withheld)"},
	}
	for _, tt := range tests {
		if got := secret.RedactURLParts(tt.msg, tt.url); got != tt.want {
			t.Errorf("%s: RedactURLParts(%q) = %q, want %q", tt.name, tt.msg, got, tt.want)
		}
	}
}

func TestRedactURLError(t *testing.T) {
	cause := errors.New("connection refused")
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"url.Error", &url.Error{Op: "Post", URL: "https://hooks.slack.com/services/T/B/SECRET", Err: cause}, "Post https://hooks.slack.com/xxxxx: connection refused"},
		{"other", cause, "connection refused"},
	}
	for _, tt := range tests {
		if got := secret.RedactURLError(tt.err); got != tt.want {
			t.Errorf("%s: RedactURLError = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestRedactMongoURI(t *testing.T) {
	tests := []struct{ in, want string }{
		{"mongodb://user:s3cr3t-pass@h:27017/db", "mongodb://user:xxxxx@h:27017/db"},
		{"connect mongodb+srv://u:s3cr3t-pass@cluster.example/db?x=1: timeout", "connect mongodb+srv://u:xxxxx@cluster.example/db?x=1: timeout"},
		{`uri "mongodb://u:s3cr3t-pass@h/db" refused`, `uri "mongodb://u:xxxxx@h/db" refused`},
		{"mongodb://user@h/db (no password)", "mongodb://user@h/db (no password)"},
		{"no URI here", "no URI here"},
		// Every URI in the message, not only the first of each scheme.
		{"a mongodb://u:s3cr3t-pass@h1/db b mongodb://v:s3cr3t-pass@h2/db", "a mongodb://u:xxxxx@h1/db b mongodb://v:xxxxx@h2/db"},
		// Passwords the URL parser refuses: raw '/', '@', a bad escape.
		{"mongodb://u:s3cr3t/pass@h/db", "mongodb://u:xxxxx@h/db"},
		{"mongodb://u:s3cr3t-pass@x@h/db", "mongodb://u:xxxxx@h/db"},
		{"mongodb://u:s3cr3t-pass%zz@h/db", "mongodb://u:xxxxx@h/db"},
		// Any case of the scheme, set off by a tab.
		{"uri\tMONGODB://u:s3cr3t-pass@h/db", "uri\tMONGODB://u:xxxxx@h/db"},
		{"(mongodb+srv://u:s3cr3t-pass@c.example)", "(mongodb+srv://u:xxxxx@c.example)"},
	}
	for _, tt := range tests {
		got := secret.RedactMongoURI(tt.in)
		if got != tt.want || strings.Contains(got, "s3cr3t-pass") {
			t.Errorf("RedactMongoURI(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
