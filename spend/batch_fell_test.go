package spend_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/spendchecker/spendchecker/spend"
)

// A cumulative batch figure below the spend recorded for the key is a
// failed check, not a fall in spend; one at or a cent under it is a
// reading.
func TestBatchFigureBelowRecordedFails(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"object":"page","data":[{"object":"bucket","start_time":1730419200,"end_time":1730505600,"results":[{"object":"organization.costs.result","amount":{"value":2,"currency":"usd"},"line_item":null,"project_id":null,"api_key_id":"key_a"}]}],"has_more":false,"next_page":null}`)
	}))
	defer srv.Close()
	p, err := spend.NewBatch("openai-costs", srv.URL, fastClient(newFakeTime()), spend.BatchConfig{AdminKey: adminKey})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		id       string
		recorded float64
		fails    bool
	}{
		{"key_a", 0, false},
		{"key_a", 2.01, false},
		{"key_a", 9.5, true},
		{"key_b", 0, false}, // not named, nothing recorded: spent nothing
		{"key_b", 3, true},  // not named, $3 recorded
	} {
		r, err := p.Spend(context.Background(), spend.Key{ID: "k", UpstreamID: tt.id, Recorded: tt.recorded})
		if (err != nil) != tt.fails {
			t.Errorf("%s recorded $%v: spend $%v, err %v; want failed %v", tt.id, tt.recorded, r.Spend, err, tt.fails)
		}
	}
}
