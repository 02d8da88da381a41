package cli

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
