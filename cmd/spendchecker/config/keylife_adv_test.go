package config

import (
	"errors"
	"strings"
	"testing"
)

// A cap or a key limit written as 0 is a value, not "the default": a pool
// entry saying refill-max-keys-per-day 0 (meaning "none") must not create
// the default ten keys a day. It is refused, with the way to turn refill
// off.
func TestParseKeylifeExplicitZero(t *testing.T) {
	t.Setenv("SPENDCHECKER_MANAGEMENT_KEY_OPENHANDS", testMasterKey)
	for _, tt := range []struct{ name, extra, want string }{
		{"keys cap 0", `, "refill-max-keys-per-day": 0`, "refill-max-keys-per-day"},
		{"usd cap 0", `, "refill-max-usd-per-day": 0`, "refill-max-usd-per-day"},
		{"key limit 0", `, "refill-key-limit": 0`, "refill-key-limit"},
		{"negative keys cap", `, "refill-max-keys-per-day": -3`, "refill-max-keys-per-day"},
		{"negative usd cap", `, "refill-max-usd-per-day": -1`, "refill-max-usd-per-day"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]string{"--config", writeFile(t, `{"mongo-uri": "`+uri+`", "pools": [{"pool": "openhands", "provider": "litellm", "provider-url": "http://127.0.0.1:4000", "threshold": 5, "refill-below": 1, "refill-to": 2`+tt.extra+`}]}`)})
			var ue *UsageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want a usage error about %q", err, tt.want)
			}
		})
	}
}
