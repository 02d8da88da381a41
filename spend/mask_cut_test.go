package spend_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/spendchecker/spendchecker/spend"
)

// A per-key provider's error quotes the body cut at 60 or 160 bytes
// (common()); the key echoed across the cut must not survive in the error
// (all but its last characters would, the checker masking only whole keys).
func TestPerKeyEchoAcrossTheQuoteCutIsMasked(t *testing.T) {
	const key = "sk-or-v1-pool-0123456789abcdef0123456789abcdef"
	for _, tt := range []struct {
		name string
		cut  int
		body func(pad string) string
	}{
		{"no provider error (%.60q)", 60, func(pad string) string { return pad + key + " blocked" }},
		{"access refusal (%.160q)", 160, func(pad string) string {
			return `{"error":{"message":"` + pad + key + ` is not allowed to access this endpoint"}}`
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			prefix := tt.body("")[:strings.Index(tt.body(""), key)]
			pad := strings.Repeat("x", tt.cut-(len(key)-3)-len(prefix)-1) // the quote's opening " counts
			body := tt.body(pad)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusForbidden)
				fmt.Fprint(w, body)
			}))
			defer srv.Close()
			p, err := spend.New("openrouter", srv.URL, fastClient(newFakeTime()))
			if err != nil {
				t.Fatal(err)
			}
			_, err = p.Spend(context.Background(), spend.Key{Secret: key})
			if err == nil {
				t.Fatal("403 read as a spend")
			}
			if leaked := key[:len(key)-6]; strings.Contains(err.Error(), leaked) {
				t.Fatalf("error shows %d of the key's %d characters: %q", len(leaked), len(key), err)
			}
		})
	}
}
