package headless

import (
	"context"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The console check must catch what a broken page logs: an uncaught
// script error, a script or a load the Content-Security-Policy blocks; and
// a clean page must log nothing. (Chromium's log carries console messages
// and uncaught errors, not the DevTools network entries: a same-origin 404
// is not seen. The status page sends default-src 'none', so any load at
// all is a CSP violation, which is seen.)
func TestConsoleMessagesAreCaught(t *testing.T) {
	c := ForTest(t)
	pages := map[string]string{
		"/clean":  `<!doctype html><title>t</title><p id="x">clean page</p>`,
		"/throws": `<!doctype html><title>t</title><p>x</p><script>notDefined()</script>`,
		"/csp":    `<!doctype html><title>t</title><p>x</p><script>document.title="y"</script>`,
		"/load":   `<!doctype html><title>t</title><p>x</p><img src="/missing.png">`,
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := pages[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if r.URL.Path == "/csp" || r.URL.Path == "/load" {
			w.Header().Set("Content-Security-Policy", "default-src 'none'")
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(body))
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	l, err := c.DumpDOM(ctx, srv.URL+"/clean")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(l.DOM, `<p id="x">clean page</p>`) || len(l.Console) != 0 {
		t.Fatalf("clean page: console %q, DOM:\n%s", l.Console, l.DOM)
	}
	for path, want := range map[string]string{"/throws": "notDefined is not defined", "/csp": "Content Security Policy", "/load": "missing.png"} {
		l, err := c.DumpDOM(ctx, srv.URL+path)
		if err != nil {
			t.Fatal(err)
		}
		if len(l.Console) == 0 || !strings.Contains(strings.Join(l.Console, "\n"), want) {
			t.Errorf("%s: console %q, want a message with %q; log:\n%s", path, l.Console, want, l.Log)
		}
	}

	shot := filepath.Join(t.TempDir(), "shot.png")
	if _, err := c.Screenshot(ctx, srv.URL+"/clean", shot, 640, 400); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 640 || b.Dy() != 400 {
		t.Fatalf("screenshot is %v, want 640x400", b)
	}
}
