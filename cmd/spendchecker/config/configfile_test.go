package config

import (
	"errors"
	"strings"
	"testing"
)

// Every part of the config file is read or refused: a second object,
// trailing data, a key given twice at any level, and each syntax error
// says where it is (line and column).
func TestConfigFileIsReadWhole(t *testing.T) {
	head := `{"mongo-uri": "` + uri + `",` + "\n"
	tests := []struct {
		name string
		file string
		want []string // all in the one-line message
	}{
		{"second object", head + `"threshold": 5}` + "\n" + `{"threshold": 1}`,
			[]string{"data after the JSON object", "line 3, column 1"}},
		{"trailing garbage", head + `"threshold": 5} xyz`,
			[]string{"data after the JSON object", `"xyz"`, "line 2, column 17"}},
		{"trailing bracket", head + `"threshold": 5}}`,
			[]string{"data after the JSON object", "line 2, column 16"}},
		{"pools twice", head + `"pools": [{"pool": "factory", "provider": "litellm", "provider-url": "http://l"}],` + "\n" + `"pools": [{"pool": "openhands"}]}`,
			[]string{`duplicated key "pools"`, "line 3, column 1", "first at line 2, column 1"}},
		{"threshold twice at the top level", head + `"threshold": 5,` + "\n" + `  "threshold": 7}`,
			[]string{`duplicated key "threshold"`, "line 3, column 3"}},
		{"threshold twice in a pool entry", head + `"pools": [{"pool": "openhands"},` + "\n" + `{"pool": "factory", "threshold": 5, "threshold": 7}]}`,
			[]string{`duplicated key "pools[1].threshold"`, "line 3, column 37", "first at line 3, column 21"}},
		{"twice in a nested object", head + `"pools": [{"pool": "openhands", "notify": {"format": "json", "format": "slack"}}]}`,
			[]string{`duplicated key "pools[0].notify.format"`}},
		{"twice in a map", head + `"pools": [{"pool": "openhands", "provider": "openai-costs", "upstream-key-ids": {"k1": "a", "k1": "b"}}]}`,
			[]string{`duplicated key "pools[0].upstream-key-ids.k1"`}},
		{"top level not an object", `["mongo-uri"]`, []string{"want a JSON object", "line 1, column 1"}},
		{"null", `null`, []string{"want a JSON object", "line 1, column 1"}},
		{"empty file", ``, []string{"empty", "line 1, column 1"}},
		{"missing comma", head + `"threshold": 5` + "\n" + `"interval": "5s"}`,
			[]string{"invalid character", "line 3, column 1"}},
		{"unterminated", head + `"threshold": 5`, []string{"unexpected end", "line 2, column 15"}},
		{"bad value", head + `"threshold": tru}`, []string{"invalid character", "line 2, column 17"}},
		{"pools null", head + `"pools": null}`, []string{"pools: want a list", "line 2, column 10"}},
		{"pool entry null", head + `"pools": [null]}`, []string{"pools[0]: want an object", "line 2, column 11"}},
		{"pool entry a string", head + `"pools": ["openhands"]}`, []string{"pools[0]: want an object"}},
		{"case variant of a pool key", head + `"pools": [{"pool": "openhands", "Threshold": 5}]}`,
			[]string{`unknown key "pools[0].Threshold"`, "did you mean threshold?"}},
		{"wrong type in a pool entry", head + `"pools": [{"pool": "openhands",` + "\n" + `"threshold": "5"}]}`,
			[]string{"pools[0].threshold", "line 3, column 14"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]string{"--config", writeFile(t, tt.file)})
			var ue *UsageError
			if !errors.As(err, &ue) {
				t.Fatalf("err %v, want a usage error (exit 2)", err)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("message on several lines: %q", msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q lacks %q", msg, w)
				}
			}
		})
	}
}

// The same key in different objects is no duplicate, and whitespace after
// the object is no trailing data.
func TestConfigFileSameKeyInDifferentObjects(t *testing.T) {
	file := writeFile(t, `{"mongo-uri": "`+uri+`", "threshold": 5, "pools": [
		{"pool": "openhands", "threshold": 6, "notify": {"format": "json"}},
		{"pool": "factory", "provider": "litellm", "provider-url": "http://l:4000", "threshold": 7, "notify": {"format": "slack", "url": "https://hooks.example/x"}}]}
	`+"\n\t \n")
	c, err := Parse([]string{"--config", file})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Pools) != 2 || c.Pools[0].Threshold != 6 || c.Pools[1].Threshold != 7 {
		t.Errorf("pools %+v", c.Pools)
	}
}

// What the file says is applied as written or refused with exit 2 and one
// line naming the key: an unknown key whatever its value, a list for a
// setting that takes one value, null where a value is meant (in a pool
// entry it would replace the top level's value with zero), an empty
// pools list, bytes that are not UTF-8 (decoded as U+FFFD, a collection
// name the file does not hold), a byte order mark.
func TestConfigFileDropsNothing(t *testing.T) {
	head := `{"mongo-uri": "` + uri + `", `
	refused := []struct {
		name, file string
		want       []string
	}{
		{"unknown key, empty list", head + `"nosuch": []}`, []string{`unknown key "nosuch"`}},
		{"unknown key, a list of objects", head + `"poolz": [{"pool": "factory"}]}`, []string{`unknown key "poolz"`, "did you mean pool"}},
		{"unknown key, an object", head + `"notify-urll": {"url": "https://a.example/x"}}`, []string{`unknown key "notify-urll"`, "did you mean notify-url?"}},
		{"empty list for one value", head + `"threshold": []}`, []string{"threshold", "one value"}},
		{"two values for one", head + `"threshold": ["5", "6"]}`, []string{"threshold", "one value"}},
		{"null in a pool entry", head + `"budget-ratio": 0.5, "pools": [{"pool": "openhands", "budget-ratio": null}]}`,
			[]string{"pools[0].budget-ratio", "not null", "line 1, column"}},
		{"null bool in a pool entry", head + `"rotate-unauthorized": false, "pools": [{"pool": "openhands", "rotate-unauthorized": null}]}`,
			[]string{"pools[0].rotate-unauthorized", "not null"}},
		{"null pool name", head + `"pools": [{"pool": null}]}`, []string{"pools[0].pool", "not null"}},
		{"null notify url", head + `"pools": [{"pool": "openhands", "notify": {"url": null}}]}`, []string{"pools[0].notify.url", "not null"}},
		{"empty pools", head + `"pools": []}`, []string{"pools", "empty"}},
		// An empty list names no receiver: taken as left out, the pool's
		// events went to the top level's receivers.
		{"empty notify url list", head + `"notify-url": "https://a.example/x", "pools": [{"pool": "openhands", "notify": {"url": []}}]}`,
			[]string{"pool openhands", "notify", "url", "empty"}},
		{"invalid UTF-8", head + "\"keys-collection\": \"k\xffeys\"}", []string{"0xff is not UTF-8", "line 1, column 72"}},
		{"byte order mark", "\ufeff" + head + `"threshold": 5}`, []string{"byte order mark", "line 1, column 1"}},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]string{"--config", writeFile(t, tt.file)})
			var ue *UsageError
			if !errors.As(err, &ue) {
				t.Fatalf("err %v, want a usage error (exit 2)", err)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("message on several lines: %q", msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q lacks %q", msg, w)
				}
			}
		})
	}
	// Applied as written: a list for the repeatable flag, a whole number
	// past float64's precision.
	c, err := Parse([]string{"--config", writeFile(t, head+`"notify-url": ["https://a.example/x", "https://b.example/y"], "notify-backups-below": 9007199254740993}`)})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.NotifyURLs) != 2 || c.NotifyBackupsBelow != 9007199254740993 {
		t.Errorf("notify-url %v, notify-backups-below %d; want 2 URLs and 9007199254740993", c.NotifyURLs, c.NotifyBackupsBelow)
	}
}
