package keyadmin_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/spendchecker/spendchecker/keyadmin"
)

// An error answer that is not JSON is quoted cut to its first 200 bytes:
// a secret the upstream echoes across the cut must not leave its start in
// the error (a master key that does not look like a key, echoed from the
// request's Authorization header).
func TestErrorBodyCutAcrossASecret(t *testing.T) {
	const master = "litellm-master-0123456789abcdefghijklmnop"
	for _, at := range []int{150, 185, 192, 199} {
		t.Run(fmt.Sprint(at), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusBadGateway)
				auth := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
				fmt.Fprint(w, strings.Repeat("x", at)+" "+auth+" rejected by the gateway")
			}))
			defer srv.Close()
			c, err := keyadmin.New(keyadmin.Config{Kind: keyadmin.LiteLLM, BaseURL: srv.URL, AdminKey: master, Attempts: 1})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Lookup(context.Background(), "t1")
			if err == nil {
				t.Fatal("no error")
			}
			for n := 8; n <= len(master); n++ {
				if strings.Contains(err.Error(), master[:n]) {
					t.Fatalf("the error holds the first %d characters of the master key: %v", n, err)
				}
			}
		})
	}
}

// A Retry-After too large for an int64 of seconds is the longest wait, not
// none.
func TestRetryAfterBeyondInt64(t *testing.T) {
	for _, h := range []string{"99999999999999999999", "86400000000", "100000"} {
		t.Run(h, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Retry-After", h)
				w.WriteHeader(http.StatusTooManyRequests)
				fmt.Fprint(w, `{"error":{"message":"slow down"}}`)
			}))
			defer srv.Close()
			w := &waits{}
			c, _ := keyadmin.New(keyadmin.Config{Kind: keyadmin.OpenRouter, BaseURL: srv.URL, AdminKey: mgmtKey, Wait: w.wait})
			err := c.Disable(context.Background(), "h1")
			if got := keyadmin.RetryAfter(err); got != 24*time.Hour || len(w.d) != 0 {
				t.Fatalf("Retry-After %s read as %v, %d waits in place; want a day, none", h, got, len(w.d))
			}
		})
	}
}

// LiteLLM's /key/block answers the key's row as it is now: a row that is
// not blocked (blocked null or false) is not a disable, and an unblock
// answered blocked is not an enable.
func TestLiteLLMBlockAnsweredUnblocked(t *testing.T) {
	for _, c := range []struct {
		name, answer string
		disable      bool
		ok           bool
	}{
		{"block answered null", `{"token":"t1","blocked":null}`, true, false},
		{"block answered false", `{"token":"t1","blocked":false}`, true, false},
		{"block answered true", `{"token":"t1","blocked":true}`, true, true},
		{"unblock answered true", `{"token":"t1","blocked":true}`, false, false},
		{"unblock answered null", `{"token":"t1","blocked":null}`, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				fmt.Fprint(w, c.answer)
			}))
			defer srv.Close()
			cl, _ := keyadmin.New(keyadmin.Config{Kind: keyadmin.LiteLLM, BaseURL: srv.URL, AdminKey: mgmtKey})
			var err error
			if c.disable {
				err = cl.Disable(context.Background(), "t1")
			} else {
				err = cl.Enable(context.Background(), "t1")
			}
			if (err == nil) != c.ok {
				t.Fatalf("err %v, want ok=%v", err, c.ok)
			}
		})
	}
}
