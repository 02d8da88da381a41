package cli

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/internal/fakeupstream"
	"github.com/spendchecker/spendchecker/internal/headless"
	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation/secret"
)

// EnvUpdateScreenshot makes TestStatusPageInBrowser write its screenshot
// to docs/statuspage.png (the README shows it).
const EnvUpdateScreenshot = "SPENDCHECKER_UPDATE_SCREENSHOT"

// logEvents reads the daemon's JSON log lines as events.
type logEvents struct {
	w      *io.PipeWriter
	events chan map[string]any
}

func newLogEvents() *logEvents {
	r, w := io.Pipe()
	e := &logEvents{w: w, events: make(chan map[string]any, 1000)}
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) == nil {
				select {
				case e.events <- line:
				default:
				}
			}
		}
		close(e.events)
	}()
	return e
}

// waitFor returns the next log line whose msg is msg; it fails t when the
// daemon stops logging first or the limit passes.
func (e *logEvents) waitFor(t *testing.T, msg string, limit time.Duration) map[string]any {
	t.Helper()
	deadline := time.After(limit)
	for {
		select {
		case line, ok := <-e.events:
			if !ok {
				t.Fatalf("the daemon stopped before logging %q", msg)
			}
			if line["msg"] == "scheduler stopped with an error" || line["msg"] == "cannot listen" {
				t.Fatalf("daemon: %v", line)
			}
			if line["msg"] == msg {
				return line
			}
		case <-deadline:
			t.Fatalf("no %q logged within %s", msg, limit)
		}
	}
}

// The status page in a real browser, against a running daemon with a
// seeded pool and a fake upstream: the page shows the pool, the masked
// keys, their bars, the backups left, the lease holder, the last cycles
// and the rotation the daemon just made; it logs nothing to the console.
func TestStatusPageInBrowser(t *testing.T) {
	chromium := headless.ForTest(t)
	mdb := mongotest.New(t)
	db := mdb.Database
	up := fakeupstream.New("openhands")
	defer up.Close()

	// Keys as an earlier run of the checker left them an hour ago, and
	// their spend now.
	ctx := context.Background()
	now := time.Now()
	keys := []struct {
		id          string
		before, now float64
	}{
		{"oh-key-01", 1.10, 1.42}, {"oh-key-02", 3.80, 4.95}, {"oh-key-03", 6.20, 7.31},
		{"oh-key-04", 7.90, 8.64}, {"oh-key-05", 0.00, 0.00}, {"oh-key-06", 9.40, 10.02},
	}
	// Secrets differ in their first and last characters, as real ones do,
	// so each key's mask is its own.
	secretOf := func(id string) string {
		return "sk-" + fingerprint(id)[:2] + "-4f9c2d7e81b3a65c" + fingerprint(id + "/")[:4]
	}
	for _, k := range keys {
		doc := bson.M{"_id": k.id, "apiKey": secretOf(k.id), "status": "healthy", "createdAt": now.Add(-48 * time.Hour),
			"totalSpend": k.before, "lastSpendCheck": now.Add(-time.Hour), "spendRate": (k.now - k.before) / 3600}
		if _, err := db.Collection(apiPool.KeysCollection).InsertOne(ctx, doc); err != nil {
			t.Fatal(err)
		}
		up.SetSpend(secretOf(k.id), k.now)
	}
	for i := range 3 {
		id := fmt.Sprintf("oh-backup-%02d", i+1)
		if _, err := db.Collection(apiPool.BackupsCollection).InsertOne(ctx, bson.M{"_id": id, "apiKey": secretOf(id),
			"isUsed": false, "activated": false, "createdAt": now.Add(time.Duration(i) * time.Second)}); err != nil {
			t.Fatal(err)
		}
		up.SetSpend(secretOf(id), 0)
	}

	releasedLease(t, db)

	events := newLogEvents()
	dctx, stop := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		defer events.w.Close()
		done <- Run(dctx, []string{"--mongo-uri", mdb.URI, "--database", mdb.Name, "--listen", "127.0.0.1:0",
			"--provider-url", up.URL, "--interval", "1s", "--instance", "replica-a",
			"--log-format", "json", "--log-level", "debug"}, Env{Stdout: io.Discard, Stderr: events.w})
	}()
	defer func() {
		stop()
		if code := <-done; code != ExitOK {
			t.Errorf("daemon exit %d", code)
		}
	}()
	addr, _ := events.waitFor(t, "listening", 3*time.Minute)["addr"].(string)
	// Two cycles logged: the first one's summary is in the page's ring.
	events.waitFor(t, "cycle done", 3*time.Minute)
	events.waitFor(t, "cycle done", 3*time.Minute)
	// The page shows the daemon's summary, read once the page is asked
	// for: ask, and wait for one read after a cycle.
	if resp, err := http.Get("http://" + addr + "/"); err == nil {
		resp.Body.Close()
	}
	for {
		if n, _ := events.waitFor(t, "status summary read", 3*time.Minute)["cycles"].(float64); n >= 1 {
			break
		}
	}

	bctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	url := "http://" + addr + "/"
	load, err := chromium.DumpDOM(bctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if len(load.Console) > 0 {
		t.Errorf("the page logged to the browser console:\n%s", strings.Join(load.Console, "\n"))
	}
	dom := load.DOM
	must := []string{
		`id="pool-openhands"`, "backups left: 2", `id="lease-holder">replica-a<`, "this replica: <b>replica-a</b>",
		// oh-key-06 went over and was rotated to the first backup.
		`<td><code>oh-key-06</code></td><td><code>` + secret.Mask(secretOf("oh-key-06")) + `</code></td><td class="num">$10.02</td><td>proactive_threshold_10.02</td><td><code>oh-backup-01</code></td><td>replica-a</td>`,
		`class="result ok">ok<`,
	}
	for _, k := range keys[:5] {
		must = append(must, `data-key="`+k.id+`"`, secret.Mask(secretOf(k.id)))
	}
	// Bars: width is the share of the $9.95 threshold.
	must = append(must, `class="fill ok" style="width:14.3%"`, `class="fill near" style="width:86.8%"`)
	for _, want := range must {
		if !strings.Contains(dom, want) {
			t.Errorf("the page does not show %q", want)
		}
	}
	if strings.Contains(dom, "4f9c2d7e81b3a65c") {
		t.Errorf("the page shows a whole secret")
	}
	if n := len(regexp.MustCompile(`<tr class="key"`).FindAllString(dom, -1)); n != 6 {
		t.Errorf("%d key rows, want 6 (5 kept, 1 rotated in)", n)
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
	}

	shot := filepath.Join(t.TempDir(), "statuspage.png")
	load, err = chromium.Screenshot(bctx, url, shot, 1280, 900)
	if err != nil {
		t.Fatal(err)
	}
	if len(load.Console) > 0 {
		t.Errorf("the page logged to the browser console:\n%s", strings.Join(load.Console, "\n"))
	}
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 1280 || b.Dy() != 900 {
		t.Fatalf("screenshot %v, want 1280x900", b)
	}
	if os.Getenv(EnvUpdateScreenshot) == "1" && !t.Failed() {
		data, err := os.ReadFile(shot)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join("..", "..", "..", "docs", "statuspage.png") // from cmd/spendchecker/cli
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", dst)
	}
}

// fingerprint is a short stable hex string per input, to vary test secrets.
func fingerprint(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:4])
}
