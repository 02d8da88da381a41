package statuspage

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/internal/mongotest"
)

// What `status` streams is what it printed from the snapshot read whole:
// the text and, byte for byte, the JSON; with the store up and down.
func TestStreamedStatusIsTheSnapshot(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  func(t *testing.T) Source
	}{
		{"store up", func(t *testing.T) Source {
			db := mongotest.New(t).Database
			src := seed(t, db)
			src.Pools = append(src.Pools, Pool{Name: "empty", Keys: db.Collection("empty_keys"), Threshold: 5})
			return src
		}},
		{"store down", downSource},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := tc.src(t)
			ctx := context.Background()
			whole := src.Read(ctx)
			want, err := json.MarshalIndent(whole, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			var got strings.Builder
			jw := NewJSONWriter(&got)
			src.Visit(ctx, jw)
			if jw.Err() != nil || got.String() != string(want)+"\n" {
				t.Errorf("streamed JSON (err %v):\n%s\nwant:\n%s", jw.Err(), got.String(), want)
			}
			var text, wantText strings.Builder
			WriteText(&wantText, whole)
			src.Visit(ctx, NewTextWriter(&text))
			if text.String() != wantText.String() {
				t.Errorf("streamed text:\n%s\nwant:\n%s", text.String(), wantText.String())
			}
		})
	}
}

// seedSpread writes n keys whose spend is i/n of 10.00 against a 10.00
// threshold (key-0000 at 0 %), with every rejected and failing one named.
func seedSpread(t *testing.T, n int, rejected, failing []int) Source {
	t.Helper()
	db := mongotest.New(t).Database
	var docs []any
	for i := range n {
		d := bson.M{"_id": fmt.Sprintf("key-%04d", i), "apiKey": fmt.Sprintf("sk-%04d-secret-%04d", i, i), "status": "healthy",
			"totalSpend": 10 * float64(i) / float64(n), "lastSpendCheck": now.Add(-time.Minute)}
		for _, r := range rejected {
			if r == i {
				d["spendCheckError"] = "unauthorized"
			}
		}
		for _, f := range failing {
			if f == i {
				d["spendCheckError"] = "user_budget_shared"
			}
		}
		docs = append(docs, d)
	}
	if _, err := db.Collection("p_keys").InsertMany(context.Background(), docs); err != nil {
		t.Fatal(err)
	}
	return Source{Pools: []Pool{{Name: "p", Keys: db.Collection("p_keys"), Threshold: 10, Backups: countBackups{n: 4}}},
		LeaseName: "spendchecker", Now: func() time.Time { return now }}
}

var rowID = regexp.MustCompile(`<tr class="key" data-key="([^"]+)">`)

func get(t *testing.T, h http.Handler, url string) (int, http.Header, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, url, nil))
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, rec.Header(), string(body)
}

func keyIDs(page string) []string {
	var ids []string
	for _, m := range rowID.FindAllStringSubmatch(page, -1) {
		ids = append(ids, m[1])
	}
	return ids
}

func TestPageLeadsWithWhatNeedsAttention(t *testing.T) {
	// 200 keys at 0, 5, ..., 99.5 % of the threshold: 20 at ≥ 90 %, 20 at 80–90 %.
	src := seedSpread(t, 200, []int{3, 7}, []int{11})
	for _, tc := range []struct {
		name      string
		summaries bool
	}{{"read per GET", false}, {"the daemon's summary", true}} {
		t.Run(tc.name, func(t *testing.T) {
			p := &Page{Source: src, PageSize: 80}
			if tc.summaries {
				p.Summaries = &Summaries{Source: src}
				if code, _, page := get(t, p, "/"); code != 200 || !strings.Contains(page, "first summary of the keys is being read") {
					t.Errorf("before the first summary: %d, pending not said", code)
				}
				p.Summaries.Refresh(context.Background())
			}
			code, _, page := get(t, p, "/")
			if code != 200 {
				t.Fatalf("GET /: %d", code)
			}
			if got := strings.Contains(page, "keys read 0s ago"); got != tc.summaries {
				t.Errorf("the page says when its keys were read: %v, want %v", got, tc.summaries)
			}
			for _, want := range []string{"200 keys", "backups left: 4", "<b>0</b> at or over", "<b>20</b> at 90&ndash;100", "<b>20</b> at 80&ndash;90",
				"<b>2</b> rejected", "<b>1</b> failing", "the 50 keys closest to rotating", `href="?pool=p"`} {
				if !strings.Contains(page, want) {
					t.Errorf("page lacks %q", want)
				}
			}
			ids := keyIDs(page)
			if len(ids) != TopKeys {
				t.Fatalf("%d keys listed, want %d", len(ids), TopKeys)
			}
			for i, id := range ids {
				if want := fmt.Sprintf("key-%04d", 199-i); id != want {
					t.Fatalf("key %d listed is %s, want %s (closest first)", i, id, want)
				}
			}
		})
	}
}

func TestPageListsEveryKeyByPage(t *testing.T) {
	src := seedSpread(t, 200, nil, nil)
	p := &Page{Source: src, PageSize: 80}
	var all []string
	url := "/?pool=p"
	for pages := 0; url != ""; pages++ {
		if pages > 3 {
			t.Fatal("more than 3 pages of 80 for 200 keys")
		}
		code, _, page := get(t, p, url)
		if code != 200 {
			t.Fatalf("GET %s: %d", url, code)
		}
		all = append(all, keyIDs(page)...)
		url = ""
		if m := regexp.MustCompile(`href="(\?pool=p&amp;after=[^"]+)" rel="next"`).FindStringSubmatch(page); m != nil {
			url = "/" + strings.ReplaceAll(m[1], "&amp;", "&")
		}
	}
	if len(all) != 200 {
		t.Fatalf("%d keys over the pages, want 200", len(all))
	}
	for i, id := range all {
		if want := fmt.Sprintf("key-%04d", i); id != want {
			t.Fatalf("key %d is %s, want %s (by id, none twice)", i, id, want)
		}
	}
	if code, _, _ := get(t, p, "/?pool=nope"); code != http.StatusNotFound {
		t.Errorf("unknown pool: %d, want 404", code)
	}
}

// Renders in flight hold the semaphore: past the cap a GET is refused
// with 503 and Retry-After.
func TestPageRefusesPastTheCap(t *testing.T) {
	src := seedSpread(t, 10, nil, nil)
	for _, tc := range []struct{ cap, inFlight, want int }{
		{2, 1, http.StatusOK}, {2, 2, http.StatusServiceUnavailable}, {1, 1, http.StatusServiceUnavailable}, {0, 1, http.StatusOK},
	} {
		t.Run(fmt.Sprintf("cap %d, %d in flight", tc.cap, tc.inFlight), func(t *testing.T) {
			p := &Page{Source: src, MaxRenders: tc.cap, Wait: time.Millisecond}
			get(t, p, "/") // sizes the semaphore
			for range tc.inFlight {
				p.sem <- struct{}{}
			}
			code, h, _ := get(t, p, "/")
			if code != tc.want {
				t.Fatalf("GET: %d, want %d", code, tc.want)
			}
			if code == http.StatusServiceUnavailable && h.Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
		})
	}
}

// Refresh reads one summary at a time: a second asked meanwhile is skipped.
func TestSummariesReadOneAtATime(t *testing.T) {
	m := &Summaries{}
	m.busy = true
	if m.Refresh(context.Background()) {
		t.Error("a refresh ran while one was under way")
	}
}

// A summary is read only while the page is looked at: at once when there is
// none, after a cycle when the page was asked for since the last read, and
// not at all when nobody asked.
func TestSummariesReadWhileLookedAt(t *testing.T) {
	src := seedSpread(t, 3, nil, nil)
	m := &Summaries{Source: src, Every: time.Hour}
	ctx := context.Background()
	due := make(chan struct{}, 1)
	m.Want() // no summary yet: read at once, no cycle needed
	if !m.Wait(ctx, nil) {
		t.Fatal("no read when the page was asked for with no summary")
	}
	m.Refresh(ctx)
	m.Want() // fresh: waits for the next cycle
	due <- struct{}{}
	if !m.Wait(ctx, due) {
		t.Fatal("no read after a cycle while the page is looked at")
	}
	m.Refresh(ctx)
	due <- struct{}{} // a cycle ends, nobody looked
	done, cancel := context.WithCancel(ctx)
	cancel()
	if m.Wait(done, due) {
		t.Fatal("a read after a cycle nobody looked at")
	}
	if len(due) != 0 {
		// Wait may have seen the cancel first; the cycle must not be
		// left to cause a read later.
		<-due
	}
}

// A list page the store is too slow for says so, and does not mark the
// store unreachable for the rest of the page.
func TestPageListTooSlow(t *testing.T) {
	src := seedSpread(t, 10, nil, nil)
	src.Reachability = &Reachability{}
	p := &Page{Source: src, Timeout: time.Nanosecond}
	code, _, page := get(t, p, "/?pool=p")
	if code != 200 || !strings.Contains(page, "not read within 1ns: the store is too slow for this page") {
		t.Errorf("%d, the page does not say the read was too slow:\n%s", code, page)
	}
	if strings.Contains(page, "unreachable") {
		t.Errorf("a slow read shown as an unreachable store:\n%s", page)
	}
	if _, down := src.Reachability.Since(); down {
		t.Error("a slow read marked the store unreachable")
	}
}
