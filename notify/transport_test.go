package notify

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/internal/mongotest"
)

// echoServer answers every request with the request's own bytes, as an
// echo service (or anything that is not an HTTP server but repeats what
// it got) would: Go's client then fails with "malformed HTTP status code"
// quoting the request line, which holds the webhook's path.
func echoServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				_, _ = io.WriteString(c, line+"\r\n")
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

// proxySecret is the password of a proxy the notifier goes through.
const proxySecret = "PROXYPASSWORD42"

// A transport error (not an answer) goes to the log and to the claim's
// lastError; whatever the other end sent back, no part of the webhook's
// secret is in either. A proxy between the notifier and an https
// receiver sees the host only.
func TestTransportErrorsHideTheURL(t *testing.T) {
	coll := mongotest.New(t).Database.Collection(Collection)
	const path = "/services/T0/B0/" + hookSecret + "?token=QUERY" + hookSecret
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T) (webhook string, client *http.Client, seen func() string)
	}{
		{"a server echoing the request line", func(t *testing.T) (string, *http.Client, func() string) {
			return echoServer(t) + path, nil, func() string { return "" }
		}},
		{"an https receiver whose certificate is not trusted", func(t *testing.T) (string, *http.Client, func() string) {
			srv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
			t.Cleanup(srv.Close)
			return srv.URL + path, nil, func() string { return "" }
		}},
		{"an https receiver through a proxy that refuses the tunnel", func(t *testing.T) (string, *http.Client, func() string) {
			var mu sync.Mutex
			var got strings.Builder
			proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				got.WriteString(r.Method + " " + r.RequestURI + " " + r.Host + "\n")
				for k, vs := range r.Header {
					got.WriteString(k + ": " + strings.Join(vs, ",") + "\n")
				}
				mu.Unlock()
				http.Error(w, "tunnel to "+r.RequestURI+" refused", http.StatusForbidden)
			}))
			t.Cleanup(proxy.Close)
			pu, _ := url.Parse(proxy.URL)
			tr := &http.Transport{Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{}}
			return "https://hooks.example.test" + path, &http.Client{Transport: tr}, func() string {
				mu.Lock()
				defer mu.Unlock()
				return got.String()
			}
		}},
		{"a proxy setting that does not parse", func(t *testing.T) (string, *http.Client, func() string) {
			// What http.ProxyFromEnvironment answers for HTTPS_PROXY=http://
			// user:pass@host with a bad escape in the password: its error
			// quotes the proxy's URL, password and all (the environment is
			// read once per process, so the error is made as it makes it).
			const proxy = "http://proxyuser:" + proxySecret + "%zz@proxy.internal:3128"
			_, perr := url.Parse(proxy)
			tr := &http.Transport{Proxy: func(*http.Request) (*url.URL, error) {
				return nil, fmt.Errorf("invalid proxy address %q: %v", proxy, perr)
			}}
			return "https://hooks.example.test" + path, &http.Client{Transport: tr}, func() string { return "" }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			webhook, client, seen := tc.setup(t)
			var logs strings.Builder
			var mu sync.Mutex
			h := newHarness(t, Config{Default: Route{Targets: []Target{{URL: webhook, Format: Slack}}}, Store: coll,
				MaxAttempts: 1, HTTP: client, Logger: newTestLogger(&logs, &mu)})
			ev := rotatedFixture()
			ev.ID += "/" + t.Name()
			h.n.Notify(ev)
			h.close()
			var c Claim
			if err := coll.FindOne(context.Background(), bson.M{"event": ev.ID}).Decode(&c); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			out := logs.String()
			mu.Unlock()
			t.Logf("lastError: %s", c.LastError)
			if c.State != "failed" || c.LastError == "" {
				t.Fatalf("claim %s with lastError %q, want failed with the error", c.State, c.LastError)
			}
			for what, text := range map[string]string{"log": out, "claim's lastError": c.LastError, "proxy": seen()} {
				if strings.Contains(text, hookSecret[:8]) || strings.Contains(text, proxySecret) {
					t.Errorf("the %s holds the webhook's secret or the proxy's password:\n%s", what, text)
				}
			}
		})
	}
}
