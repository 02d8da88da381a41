package statuspage

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/internal/mongotest"
)

func TestPageShowsThePool(t *testing.T) {
	db := mongotest.New(t).Database
	src := seed(t, db)
	// A key id is data, never markup.
	if _, err := db.Collection("openhands_keys").InsertOne(context.Background(), bson.M{"_id": "<script>x</script>", "apiKey": "sk-secret-eeeeeeeeeeee-0005"}); err != nil {
		t.Fatal(err)
	}
	ring := NewRing(2)
	ring.Add(Cycle{At: now.Add(-time.Minute), Result: "partial", Checked: 4, Failed: 1, Errors: []string{"upstream 503"}})
	src.Cycles = ring
	srv := httptest.NewServer(&Page{Source: src, Instance: "host-1", Refresh: 30 * time.Second})
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	page := string(body)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
		!strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Fatalf("%d %v", resp.StatusCode, resp.Header)
	}
	for _, want := range []string{
		`id="pool-openhands"`, "backups left: 3", `id="lease-holder">host-1<`, `id="lease-epoch">7<`,
		"sk-se...0001", "sk-se...0002", `style="width:40.2%"`, // a: 4.00 of 9.95
		`class="fill over" style="width:100.0%"`, "upstream: unauthorized", "$1.00/h", "in 5h56m",
		`content="30"`, "proactive_threshold_9.97", "upstream 503", "&lt;script&gt;x&lt;/script&gt;",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for _, bad := range []string{"sk-secret", "<script>", "http://", "https://"} {
		if strings.Contains(page, bad) {
			t.Errorf("page carries %q (a secret, a script or an external asset)", bad)
		}
	}

	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/", nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d, want 405", resp.StatusCode)
	}
}

func TestPageOnAnEmptyStore(t *testing.T) {
	db := mongotest.New(t).Database
	src := Source{Pools: []Pool{{Name: "factory", Keys: db.Collection("factory_keys"), Threshold: 9.95, Backups: countBackups{}}},
		Leases: db.Collection("leases"), LeaseName: "spendchecker", Rotations: 5, Now: func() time.Time { return now }}
	var b strings.Builder
	if err := Render(&b, src.Read(context.Background()), "", time.Second); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"never held", "no keys", "backups left: 0", "none recorded", "no cycle has run"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("page lacks %q", want)
		}
	}
}

func TestHuman(t *testing.T) {
	for d, want := range map[time.Duration]string{
		1500 * time.Millisecond:          "2s",
		90 * time.Second:                 "1m30s",
		5*time.Hour + 56*time.Minute + 9: "5h56m",
		50 * time.Hour:                   "2d02h",
	} {
		if got := human(d); got != want {
			t.Errorf("%v: %s, want %s", d, got, want)
		}
	}
}

func TestWriteText(t *testing.T) {
	db := mongotest.New(t).Database
	var b strings.Builder
	WriteText(&b, seed(t, db).Read(context.Background()))
	out := b.String()
	for _, want := range []string{
		"lease spendchecker: held by host-1, epoch 7, last renewed 1s ago (by its clock)\n",
		"\npool openhands (openhands_keys): threshold $9.95, backups left 3\n",
		"KEY  API KEY       STATUS",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	lines := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			lines[f[0]] = strings.Join(f[1:], " ")
		}
	}
	for id, want := range map[string]string{
		"a": "sk-se...0001 healthy $4.00 $10.00 40% 1m0s ago in 10m0s $1.00/h in 5h56m",
		"b": "sk-se...0002 healthy - - - never due - -",
		"c": "sk-se...0003 healthy $9.96 - 100% 2s ago due $3.60/h over",
		"d": "sk-se...0004 healthy (upstream: unauthorized) $1.00 - 10% 1h0m0s ago due - -",
	} {
		if lines[id] != want {
			t.Errorf("key %s: %q, want %q", id, lines[id], want)
		}
	}
	if strings.Contains(out, "sk-secret") {
		t.Errorf("status prints a secret:\n%s", out)
	}
}
