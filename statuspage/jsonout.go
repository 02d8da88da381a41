package statuspage

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
)

// JSONWriter is the Visitor that writes `status --output json` as it
// reads, one key at a time: byte for byte what json.MarshalIndent(snapshot,
// "", "  ") gives for the snapshot Read returns.
type JSONWriter struct {
	out         io.Writer
	err         error
	pools, keys int
}

// NewJSONWriter writes to out.
func NewJSONWriter(out io.Writer) *JSONWriter { return &JSONWriter{out: out} }

// Err is the first error met in writing.
func (j *JSONWriter) Err() error { return j.err }

func (j *JSONWriter) write(b ...[]byte) {
	for _, p := range b {
		if j.err == nil {
			_, j.err = j.out.Write(p)
		}
	}
}

// split marshals v with prefix and cuts it around marker, the one empty
// list the streamed items go in.
func (j *JSONWriter) split(v any, prefix, marker string) (head, tail []byte) {
	b, err := json.MarshalIndent(v, prefix, "  ")
	if err != nil {
		if j.err == nil {
			j.err = fmt.Errorf("cannot write the output as JSON: %w", err)
		}
		return nil, nil
	}
	i := bytes.Index(b, []byte(marker))
	if i < 0 {
		j.err = fmt.Errorf("status JSON: no %s in %s", marker, b)
		return nil, nil
	}
	return b[:i+len(marker)-1], b[i+len(marker):]
}

// Lease writes the snapshot up to its list of pools.
func (j *JSONWriter) Lease(s *Snapshot) {
	head, _ := j.split(Snapshot{GeneratedAt: s.GeneratedAt, Lease: s.Lease, Pools: []PoolView{}}, "", `"pools": []`)
	j.write(head)
}

// PoolStart writes a pool up to its list of keys.
func (j *JSONWriter) PoolStart(p *PoolView) {
	if j.pools++; j.pools > 1 {
		j.write([]byte(","))
	}
	j.keys = 0
	h := PoolView{Name: p.Name, KeysCollection: p.KeysCollection, Threshold: p.Threshold, MinRemaining: p.MinRemaining,
		BackupsLeft: p.BackupsLeft, Keys: []KeyView{}}
	head, _ := j.split(h, "    ", `"keys": []`)
	j.write([]byte("\n    "), head)
}

// Key writes one key.
func (j *JSONWriter) Key(_ *PoolView, k KeyView) {
	b, err := json.MarshalIndent(k, "        ", "  ")
	if err != nil && j.err == nil {
		j.err = fmt.Errorf("cannot write the output as JSON: %w", err)
	}
	sep := []byte(",\n        ")
	if j.keys++; j.keys == 1 {
		sep = sep[1:]
	}
	j.write(sep, b)
}

// PoolEnd closes the keys and writes the rest of the pool.
func (j *JSONWriter) PoolEnd(p *PoolView) {
	q := *p
	q.Keys = []KeyView{}
	_, tail := j.split(q, "    ", `"keys": []`)
	if j.keys > 0 {
		j.write([]byte("\n      "))
	}
	j.write([]byte("]"), tail)
}

// End closes the pools and writes the rest of the snapshot.
func (j *JSONWriter) End(s *Snapshot) {
	q := *s
	q.Pools = []PoolView{}
	_, tail := j.split(q, "", `"pools": []`)
	if j.pools > 0 {
		j.write([]byte("\n  "))
	}
	j.write([]byte("]"), tail, []byte("\n"))
}
