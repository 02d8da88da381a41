package statuspage

import (
	"context"
	"fmt"
	"html"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/internal/mongotest"
)

var nextLink = regexp.MustCompile(`href="\?pool=([^"&]+)&amp;after=([^"]*)" rel="next"`)

// next is the URL of the page's next-page link, "" on the last page.
func next(t *testing.T, page string) string {
	t.Helper()
	m := nextLink.FindStringSubmatch(page)
	if m == nil {
		return ""
	}
	// The link is an attribute: &amp; is its only entity here; the id is
	// percent-encoded in it.
	return "/?pool=" + m[1] + "&after=" + m[2]
}

// The full list is served from the list the daemon keeps beside its
// summary: pages by id after a cursor, without reading the store.
func TestKeptListPages(t *testing.T) {
	src := seedSpread(t, 200, nil, nil)
	p := &Page{Source: src, PageSize: 80, Summaries: &Summaries{Source: src}}
	if code, _, page := get(t, p, "/?pool=p"); code != 200 || !strings.Contains(page, "The list of the keys is being read") {
		t.Fatalf("before the first read: %d, the page does not say the list is being read", code)
	}
	if !p.Summaries.Refresh(context.Background()) {
		t.Fatal("no read")
	}
	// A key added after the read is not on the list until the next read:
	// the page does not read the store.
	if _, err := src.Pools[0].Keys.InsertOne(context.Background(), bson.M{"_id": "key-0000a", "apiKey": "sk-late-0000000000000"}); err != nil {
		t.Fatal(err)
	}
	ids := func(from, to int) []string {
		var s []string
		for i := from; i < to; i++ {
			s = append(s, fmt.Sprintf("key-%04d", i))
		}
		return s
	}
	for _, tc := range []struct {
		name, url string
		code      int
		ids       []string
		next      string
		says      string
	}{
		{"first page", "/?pool=p", 200, ids(0, 80), "/?pool=p&after=key-0079", "keys 1&ndash;80 of 200"},
		{"after a cursor", "/?pool=p&after=key-0079", 200, ids(80, 160), "/?pool=p&after=key-0159", "keys 81&ndash;160 of 200"},
		{"after an id not in the pool", "/?pool=p&after=key-0079z", 200, ids(80, 160), "/?pool=p&after=key-0159", "keys 81&ndash;160 of 200"},
		{"last page", "/?pool=p&after=key-0159", 200, ids(160, 200), "", "keys 161&ndash;200 of 200"},
		{"past the last", "/?pool=p&after=key-9999", 200, nil, "", "no keys after"},
		{"empty after", "/?pool=p&after=", 200, ids(0, 80), "/?pool=p&after=key-0079", "keys 1&ndash;80 of 200"},
		{"unknown pool", "/?pool=nope", http.StatusNotFound, nil, "", "no such pool"},
		{"after too long", "/?pool=p&after=" + strings.Repeat("x", 1025), http.StatusBadRequest, nil, "", "bad after: longer than 1024 bytes"},
		{"after not UTF-8", "/?pool=p&after=%ff", http.StatusBadRequest, nil, "", "bad after: not valid UTF-8"},
		{"after with a control character", "/?pool=p&after=a%0Ab", http.StatusBadRequest, nil, "", "bad after: holds a control character"},
		{"after twice", "/?pool=p&after=a&after=b", http.StatusBadRequest, nil, "", "bad after: given more than once"},
		{"pool twice", "/?pool=p&pool=q", http.StatusBadRequest, nil, "", "bad pool: given more than once"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, page := get(t, p, tc.url)
			if code != tc.code {
				t.Fatalf("GET %s: %d, want %d: %s", tc.url, code, tc.code, page)
			}
			if !strings.Contains(page, tc.says) {
				t.Errorf("page does not say %q:\n%s", tc.says, page)
			}
			if code != 200 {
				if strings.Count(strings.TrimSpace(page), "\n") != 0 {
					t.Errorf("the error is not one line: %q", page)
				}
				return
			}
			if got := keyIDs(page); !slices.Equal(got, tc.ids) {
				t.Errorf("keys %v, want %v", got, tc.ids)
			}
			if got := next(t, page); got != tc.next {
				t.Errorf("next page %q, want %q", got, tc.next)
			}
			if !strings.Contains(page, "keys read 0s ago") {
				t.Error("the page does not say when its keys were read")
			}
		})
	}
}

// A kept row renders exactly as the row read from the store: every field
// the page shows survives the compact form (spends, balances, no reading,
// rates, times, fields of the wrong type).
func TestKeptListRendersAsRead(t *testing.T) {
	db := mongotest.New(t).Database
	src := seed(t, db)
	ctx := context.Background()
	minRem := 1.0
	bal := db.Collection("balance_keys")
	if _, err := bal.InsertMany(ctx, []any{
		bson.M{"_id": "r1", "apiKey": "sk-secret-rrrrrrrrrrrr-0001", "status": "healthy", "spendRemaining": 3.5, "spendCurrency": "CNY",
			"spendRate": 1.0 / 3600, "lastSpendCheck": now.Add(-time.Minute), "nextSpendCheck": now.Add(time.Hour)},
		bson.M{"_id": "r2", "apiKey": "sk-secret-rrrrrrrrrrrr-0002", "status": "healthy", "spendRemaining": 0.5},
		bson.M{"_id": "u", "apiKey": "sk-secret-uuuuuuuuuuuu-0003", "status": "healthy", "spendCheckError": "no_reading", "lastSpendCheck": now.Add(-time.Minute)},
	}); err != nil {
		t.Fatal(err)
	}
	src.Pools = append(src.Pools, Pool{Name: "balance", Keys: bal, Threshold: 9.95, MinRemaining: &minRem})
	kept := &Page{Source: src, Summaries: &Summaries{Source: src}}
	kept.Summaries.Refresh(ctx)
	live := &Page{Source: src}
	tbody := regexp.MustCompile(`(?s)<tbody>.*?</tbody>`)
	for _, pool := range []string{"openhands", "balance"} {
		_, _, want := get(t, live, "/?pool="+pool)
		_, _, got := get(t, kept, "/?pool="+pool)
		if w, g := tbody.FindString(want), tbody.FindString(got); w == "" || g != w {
			t.Errorf("pool %s: kept rows\n%s\nwant as read\n%s", pool, g, w)
		}
	}
}

// Ids are data: escaped in the page, and each one's cursor brings the
// next page back whatever it holds.
func TestKeptListEscapesIDs(t *testing.T) {
	db := mongotest.New(t).Database
	odd := []string{`<script>x</script>`, `a&after=zz`, `a b`, `é#x`, `"q"`, `p?pool=x`, `'; x`, `100%`}
	var docs []any
	for _, id := range odd {
		docs = append(docs, bson.M{"_id": id, "apiKey": "sk-0123456789abcdef-" + id})
	}
	if _, err := db.Collection("k").InsertMany(context.Background(), docs); err != nil {
		t.Fatal(err)
	}
	src := Source{Pools: []Pool{{Name: "p", Keys: db.Collection("k"), Threshold: 1}}, Now: func() time.Time { return now }}
	for _, tc := range []struct {
		name string
		sums bool
	}{{"kept", true}, {"read per GET", false}} {
		t.Run(tc.name, func(t *testing.T) {
			p := &Page{Source: src, PageSize: 2}
			if tc.sums {
				p.Summaries = &Summaries{Source: src}
				p.Summaries.Refresh(context.Background())
			}
			var all []string
			for u, n := "/?pool=p", 0; u != ""; n++ {
				if n > len(odd) {
					t.Fatal("the pages do not end")
				}
				code, _, page := get(t, p, u)
				if code != 200 {
					t.Fatalf("GET %s: %d %s", u, code, page)
				}
				if strings.Contains(page, "<script>") {
					t.Fatalf("an id is markup on the page:\n%s", page)
				}
				for _, id := range keyIDs(page) {
					// data-key is an attribute: unescape what html/template escaped.
					all = append(all, html.UnescapeString(id))
				}
				u = next(t, page)
			}
			want := slices.Clone(odd)
			slices.Sort(want)
			if !slices.Equal(all, want) {
				t.Errorf("ids over the pages %q, want %q", all, want)
			}
		})
	}
}

// The list is bounded: a pool whose keys take more than the cap is not
// kept, and its pages say so; the list costs little per key.
func TestKeptListBounded(t *testing.T) {
	src := seedSpread(t, 1000, nil, nil)
	for _, tc := range []struct {
		name string
		max  int
		kept bool
	}{{"under the cap", 0, true}, {"over the cap", 10 << 10, false}} {
		t.Run(tc.name, func(t *testing.T) {
			m := &Summaries{Source: src, MaxListBytes: tc.max}
			m.Refresh(context.Background())
			p := &Page{Source: src, Summaries: m}
			code, _, page := get(t, p, "/?pool=p")
			if code != 200 {
				t.Fatalf("GET: %d", code)
			}
			n := len(keyIDs(page))
			if tc.kept {
				if n != 500 {
					t.Errorf("%d keys on the first page, want 500", n)
				}
				if per := m.KeptBytes() / 1000; per > 100 {
					t.Errorf("the list takes %d B a key, want at most 100", per)
				}
				return
			}
			if n != 0 || !strings.Contains(page, "The full list of pool p is not kept: its 1000 keys take more than 10.0 KiB") {
				t.Errorf("%d keys listed; the page does not say the list is over its cap:\n%s", n, page)
			}
			if m.KeptBytes() != 0 {
				t.Errorf("%d bytes kept for a list over its cap", m.KeptBytes())
			}
		})
	}
}

// The list is kept only while the page is looked at: a whole interval
// with no GET drops it; the next GET has it read again at once.
func TestKeptListDroppedWhenNobodyLooks(t *testing.T) {
	src := seedSpread(t, 10, nil, nil)
	tick := make(chan time.Time)
	m := &Summaries{Source: src, tick: tick}
	ctx, cancel := context.WithCancel(context.Background())
	m.Refresh(ctx)
	if m.KeptBytes() == 0 {
		t.Fatal("no list kept after a read")
	}
	woke := make(chan bool)
	go func() { woke <- m.Wait(ctx, nil) }()
	tick <- time.Time{} // an interval with no GET
	tick <- time.Time{} // the first tick is handled once the second is taken
	if m.KeptBytes() != 0 {
		t.Errorf("%d bytes still kept after an interval nobody looked", m.KeptBytes())
	}
	if m.Last() == nil {
		t.Error("the summary was dropped with the list")
	}
	p := &Page{Source: src, Summaries: m}
	if _, _, page := get(t, p, "/?pool=p"); !strings.Contains(page, "The list of the keys is being read") {
		t.Error("a dropped list is not said to be being read")
	}
	if !<-woke {
		t.Fatal("a GET after the list was dropped did not have it read")
	}
	cancel()
}

// A list the last read could not read is unknown on its pages, never an
// empty pool; with the store still down the page says so once.
func TestKeptListStoreDown(t *testing.T) {
	src := downSource(t)
	p := &Page{Source: src, Summaries: &Summaries{Source: src}}
	p.Summaries.Refresh(context.Background())
	code, _, page := get(t, p, "/?pool=openhands")
	if code != 200 {
		t.Fatalf("GET: %d", code)
	}
	for _, want := range []string{`id="store"`, "unknown: store unreachable since", "keys unknown"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for _, bad := range []string{"no keys", "being read"} {
		if strings.Contains(page, bad) {
			t.Errorf("page says %q", bad)
		}
	}
}
