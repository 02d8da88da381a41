package notify

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/internal/mongotest"
)

// Slow and odd receivers end in a recorded outcome within the request
// timeout per attempt: no claim is left `claimed`, no worker hangs.
func TestSlowReceivers(t *testing.T) {
	coll := mongotest.New(t).Database.Collection(Collection)
	for _, tc := range []struct {
		name    string
		answer  func(n int, w http.ResponseWriter, r *http.Request)
		retries int
		state   string
		reqs    int
	}{
		{name: "reads the body, then never answers", retries: 2, state: "failed", reqs: 3,
			answer: func(_ int, _ http.ResponseWriter, r *http.Request) { <-r.Context().Done() }},
		{name: "answers 200, then hangs in its body", state: "sent", reqs: 1,
			answer: func(_ int, w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusOK)
				_, _ = w.Write([]byte("ok"))
				w.(http.Flusher).Flush()
				<-r.Context().Done()
			}},
		{name: "answers 200 with an endless body", state: "sent", reqs: 1,
			answer: func(_ int, w http.ResponseWriter, r *http.Request) {
				chunk := []byte(strings.Repeat("x", 4096))
				for r.Context().Err() == nil {
					if _, err := w.Write(chunk); err != nil {
						return
					}
				}
			}},
		{name: "answers 500 after sending half its headers slowly", retries: 2, state: "failed", reqs: 3,
			answer: func(_ int, w http.ResponseWriter, r *http.Request) {
				conn, buf, err := w.(http.Hijacker).Hijack()
				if err != nil {
					return
				}
				defer conn.Close()
				_, _ = buf.WriteString("HTTP/1.1 500 Internal Server Error\r\nContent-")
				_ = buf.Flush()
				<-r.Context().Done()
				_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, _ = conn.Read(make([]byte, 1)) // until the client gives up
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := newReceiver(t, tc.answer)
			h := newHarness(t, Config{Default: Route{Targets: []Target{{URL: rc.URL, Format: JSON}}}, Store: coll,
				MaxAttempts: 3, RequestTimeout: 300 * time.Millisecond})
			ev := rotatedFixture()
			ev.ID += "/" + t.Name()
			start := time.Now()
			h.n.Notify(ev)
			for range tc.retries {
				h.retry(t)
			}
			h.close()
			t.Logf("outcome after %s", time.Since(start).Round(time.Millisecond))
			if rc.count() != tc.reqs {
				t.Errorf("requests = %d, want %d", rc.count(), tc.reqs)
			}
			var c Claim
			if err := coll.FindOne(context.Background(), bson.M{"event": ev.ID}).Decode(&c); err != nil {
				t.Fatal(err)
			}
			if c.State != tc.state || c.Attempts != tc.reqs {
				t.Errorf("claim %s after %d attempts, want %s after %d", c.State, c.Attempts, tc.state, tc.reqs)
			}
		})
	}
}

// A receiver's answer goes to the log, and some echo the URL they were
// asked ("Cannot POST /services/T/B/SECRET"): no part of the secret shows.
func TestReceiverAnswerEchoingTheURL(t *testing.T) {
	for _, tc := range []struct {
		name, path string
		code       int
		pad        int // characters before the echo
	}{
		{"404 echoing the path", "/services/T0/B0/" + hookSecret, http.StatusNotFound, 0},
		{"400 echoing the query", "/hook?token=" + hookSecret, http.StatusBadRequest, 0},
		{"500 echoing the path, escaped", "/api/webhooks/123/" + hookSecret + "%2Fx", http.StatusInternalServerError, 0},
		{"404 with the secret where the quoted answer is cut", "/services/T0/B0/" + hookSecret, http.StatusNotFound, 160},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
				http.Error(w, strings.Repeat(".", tc.pad)+fmt.Sprintf("Cannot POST %s (%s)", r.URL.RequestURI(), r.URL.Path), tc.code)
			})
			var logs strings.Builder
			var mu sync.Mutex
			h := newHarness(t, Config{Default: Route{Targets: []Target{{URL: rc.URL + tc.path, Format: Slack}}},
				MaxAttempts: 1, Logger: newTestLogger(&logs, &mu)})
			h.n.Notify(rotatedFixture())
			h.close()
			mu.Lock()
			defer mu.Unlock()
			if !strings.Contains(logs.String(), "Cannot POST") {
				t.Fatalf("the answer is not in the log:\n%s", logs.String())
			}
			if strings.Contains(logs.String(), hookSecret[:6]) {
				t.Fatalf("the log holds the webhook's secret:\n%s", logs.String())
			}
		})
	}
}
