package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation/history"
)

// `history` streams: its JSON is, byte for byte, the whole window marshalled
// at once, and its text lists every record once, oldest first, across the
// table's alignment blocks.
func TestHistoryStreamsTheWindow(t *testing.T) {
	mdb := mongotest.New(t)
	apiSeed(t, mdb.Database, apiPool, 1, 0)
	ctx := context.Background()
	at := time.Now().UTC().Add(-time.Hour).Truncate(time.Millisecond)
	for _, n := range []int{0, 1, 3, historyBlock + 2} {
		t.Run(fmt.Sprint(n, " records"), func(t *testing.T) {
			coll := mdb.Database.Collection(apiPool.HistoryCollection)
			if _, err := coll.DeleteMany(ctx, bson.M{}); err != nil {
				t.Fatal(err)
			}
			var docs []any
			for i := range n {
				docs = append(docs, history.Record{ID: fmt.Sprintf("rot_%05d", i), KeyID: fmt.Sprintf("k%05d", i), APIKeyMasked: "sk-se...cdef",
					Spend: 9.97, Threshold: 9.95, RotatedAt: at.Add(time.Duration(i) * time.Second), RotationReason: "proactive", NewKeyID: "b", Instance: "host-1", LeaseEpoch: 3})
			}
			if n > 0 {
				if _, err := coll.InsertMany(ctx, docs); err != nil {
					t.Fatal(err)
				}
			}
			base := []string{"--mongo-uri", mdb.URI, "--database", mdb.Name, "--since", "2h"}
			code, out, stderr := runCLI(t, append([]string{"history", "--output", "json"}, base...)...)
			if code != ExitOK {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			recs, err := history.NewStore(coll).Since(ctx, at.Add(-time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			all := []history.Record{}
			for _, r := range recs {
				r.Pool = apiPool.Name
				all = append(all, r)
			}
			want, _ := json.MarshalIndent(all, "", "  ")
			if out != string(want)+"\n" {
				t.Errorf("JSON:\n%.600s\nwant:\n%.600s", out, want)
			}
			_, out, _ = runCLI(t, append([]string{"history"}, base...)...)
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != n+1 || !strings.HasPrefix(lines[0], "ROTATED AT") {
				t.Fatalf("%d lines, want a header and %d rows:\n%.600s", len(lines), n, out)
			}
			for i, l := range lines[1:] {
				if f := strings.Fields(l); len(f) < 3 || f[2] != fmt.Sprintf("k%05d", i) {
					t.Fatalf("row %d: %q", i, l)
				}
			}
		})
	}
}
