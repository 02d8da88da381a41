package rotation

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Collections shared by every pool of a database.
const (
	JournalCollection = "key_rotations"
	ArchiveCollection = "deleted_keys_archive"
)

// Pool names the collections of one key pool and the binding field that
// points at a key. Name identifies the pool in the journal.
type Pool struct {
	Name               string `json:"name"`
	KeysCollection     string `json:"keysCollection"`
	BackupsCollection  string `json:"backupsCollection"`
	BindingsCollection string `json:"bindingsCollection"`
	BindingKeyField    string `json:"bindingKeyField"`
	HistoryCollection  string `json:"historyCollection"`
}

var presets = map[string]Pool{
	"openhands": {
		Name:               "openhands",
		KeysCollection:     "openhands_keys",
		BackupsCollection:  "openhands_backup_keys",
		BindingsCollection: "openhands_bindings",
		BindingKeyField:    "openhandsKeyId",
		HistoryCollection:  "openhands_key_spend_history",
	},
	"factory": {
		Name:               "factory",
		KeysCollection:     "factory_keys",
		BackupsCollection:  "backup_keys",
		BindingsCollection: "proxy_key_bindings",
		BindingKeyField:    "factoryKeyId",
		HistoryCollection:  "factory_key_spend_history",
	},
}

// ErrUnknownPreset is returned by Preset for a name it does not know.
var ErrUnknownPreset = errors.New("unknown pool preset")

// Preset returns the collections the serving proxy uses for a named pool.
func Preset(name string) (Pool, error) {
	p, ok := presets[name]
	if !ok {
		return Pool{}, fmt.Errorf("%w %q (known: %s)", ErrUnknownPreset, name, strings.Join(PresetNames(), ", "))
	}
	return p, nil
}

// PresetNames lists the known presets, sorted.
func PresetNames() []string {
	names := make([]string, 0, len(presets))
	for n := range presets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Validate reports a pool with a missing or unusable name.
func (p Pool) Validate() error {
	fields := []struct{ name, value string }{
		{"name", p.Name},
		{"keys collection", p.KeysCollection},
		{"backups collection", p.BackupsCollection},
		{"bindings collection", p.BindingsCollection},
		{"binding key field", p.BindingKeyField},
		{"history collection", p.HistoryCollection},
	}
	for _, f := range fields {
		if strings.TrimSpace(f.value) == "" {
			return fmt.Errorf("pool %q: %s is empty", p.Name, f.name)
		}
		if strings.ContainsAny(f.value, "$\x00") {
			return fmt.Errorf("pool %q: %s %q contains '$' or NUL", p.Name, f.name, f.value)
		}
	}
	if p.KeysCollection == p.BackupsCollection {
		return fmt.Errorf("pool %q: keys and backups share collection %q", p.Name, p.KeysCollection)
	}
	return nil
}
