package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/cmd/spendchecker/config"
	"github.com/spendchecker/spendchecker/internal/fakeupstream"
	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/notify"
	"github.com/spendchecker/spendchecker/rotation"
)

// A daemon cycle that rotates a key posts one rotated event (and, with
// one backup left below --notify-backups-below, one backups_low).
func TestDaemonCycleNotifiesRotation(t *testing.T) {
	mdb := mongotest.New(t)
	pool, _ := rotation.Preset("openhands")
	apiSeed(t, mdb.Database, pool, 2, 2)
	up := fakeupstream.New("openhands")
	t.Cleanup(up.Close)
	up.SetSpend("sk-secret-key-000000-abcdef", 9.99) // k0: over the threshold
	up.SetSpend("sk-secret-key-000001-abcdef", 1)
	up.SetSpend("sk-secret-backup-000000-abcdef", 0)
	up.SetSpend("sk-secret-backup-000001-abcdef", 0)
	releasedLease(t, mdb.Database)
	got := make(chan notify.Event, 10)
	raw := make(chan string, 10)
	rc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var ev notify.Event
		_ = json.Unmarshal(b, &ev)
		raw <- string(b)
		got <- ev
	}))
	defer rc.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	var stderr syncBuffer
	go func() {
		done <- Run(ctx, []string{"--mongo-uri", mdb.URI, "--database", mdb.Name, "--provider-url", up.URL, "--listen", "",
			"--log-format", "json", "--interval", "1h", "--notify-url", rc.URL + "/hook", "--notify-backups-below", "2"},
			Env{Stdout: io.Discard, Stderr: &stderr})
	}()
	want := map[notify.Kind]bool{notify.Rotated: true, notify.BackupsLow: true}
	for len(want) > 0 {
		select {
		case ev := <-got:
			if !want[ev.Kind] {
				t.Fatalf("unexpected event %+v", ev)
			}
			delete(want, ev.Kind)
			if ev.Kind == notify.Rotated && (ev.KeyID != "k0" || ev.NewKeyID != "b0" || ev.APIKeyMasked != "sk-se...cdef" || ev.RotationID == "") {
				t.Errorf("rotated event %+v", ev)
			}
			if ev.Kind == notify.BackupsLow && *ev.BackupsLeft != 1 {
				t.Errorf("backups_low event %+v", ev)
			}
		case code := <-done:
			t.Fatalf("daemon exited %d before notifying:\n%s", code, stderr.String())
		case <-time.After(2 * time.Minute):
			t.Fatalf("no notification; missing %v:\n%s", want, stderr.String())
		}
	}
	cancel()
	if code := <-done; code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	close(raw)
	for b := range raw {
		if strings.Contains(b, "sk-secret-key-000000-abcdef") {
			t.Fatalf("payload holds the key: %s", b)
		}
	}
	if n := len(got); n != 0 {
		t.Fatalf("%d more notifications, want none", n)
	}
	sent, err := mdb.Database.Collection(notify.Collection).CountDocuments(context.Background(), bson.M{"state": "sent"})
	if err != nil || sent != 2 {
		t.Fatalf("%d claims sent (%v), want 2", sent, err)
	}
}

// A bad URL or format is exit 2 with one line that shows no secret.
func TestNotifyBadSettingsExitTwo(t *testing.T) {
	dir := t.TempDir()
	badPool := filepath.Join(dir, "c.json")
	_ = os.WriteFile(badPool, []byte(`{"pools": [{"pool": "openhands", "notify": {"url": "ftp://x/SECRETPATH"}}]}`), 0o600)
	for _, args := range [][]string{
		{"--notify-url", "hooks.slack.com/services/T0/B0/SECRETPATH"},
		{"--notify-url", "ftp://user:SECRETPATH@x/y"},
		{"--notify-format", "teams"},
		{"--notify-backups-below", "-1"},
		{"--notify-no-cycle-after", "-1m"},
		{"--config", badPool},
	} {
		var stderr strings.Builder
		code := Run(context.Background(), append([]string{"--once", "--mongo-uri", uri}, args...), Env{Stdout: io.Discard, Stderr: &stderr})
		out := stderr.String()
		if code != ExitUsage || strings.Count(out, "\n") != 1 || strings.Contains(out, "SECRETPATH") {
			t.Errorf("%v: exit %d, stderr %q", args, code, out)
		}
		_, err := config.Parse(append([]string{"--mongo-uri", uri}, args...))
		var ue *config.UsageError
		if !errors.As(err, &ue) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
}

// A rotation on request notifies like a cycle's: once per rotation, through
// POST /v1/rotate (retries answer already_rotated and notify nothing) and
// through `spendchecker rotate`, which waits for the delivery before it exits.
func TestRotationOnRequestNotifies(t *testing.T) {
	t.Run("POST /v1/rotate", func(t *testing.T) {
		db := mongotest.New(t).Database
		apiSeed(t, db, apiPool, 2, 2)
		api := newRotateAPI(testToken, testRotators(t, db, "r1", "openhands"), false, slog.New(slog.DiscardHandler))
		var got []notify.Event
		api.notify = func(ev notify.Event) { got = append(got, ev) }
		for range 3 {
			apiCall(t, api, "Bearer "+testToken, `{"keyId":"k0","reason":"budget_exceeded"}`)
		}
		if len(got) != 1 || got[0].Kind != notify.Rotated || got[0].KeyID != "k0" || got[0].NewKeyID != "b0" ||
			got[0].ID != "rotated/"+got[0].RotationID || got[0].Reason != "budget_exceeded" || got[0].APIKeyMasked != "" {
			t.Fatalf("events %+v, want one rotated event for k0 -> b0", got)
		}
	})
	t.Run("spendchecker rotate", func(t *testing.T) {
		mdb := mongotest.New(t)
		apiSeed(t, mdb.Database, apiPool, 2, 2)
		got := make(chan notify.Event, 10)
		rc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var ev notify.Event
			_ = json.NewDecoder(r.Body).Decode(&ev)
			got <- ev
		}))
		defer rc.Close()
		var stdout, stderr bytes.Buffer
		code := Run(context.Background(), []string{"rotate", "k1", "--mongo-uri", mdb.URI, "--database", mdb.Name,
			"--reason", "leaked", "--notify-url", rc.URL + "/hook", "--notify-format", "json"}, Env{Stdout: &stdout, Stderr: &stderr})
		if code != ExitOK {
			t.Fatalf("exit %d: %s %s", code, stdout.String(), stderr.String())
		}
		// Delivered before Run returned: no waiting here.
		select {
		case ev := <-got:
			if ev.Kind != notify.Rotated || ev.KeyID != "k1" || ev.Reason != "leaked" || !strings.Contains(ev.Message, "spendchecker rotate") {
				t.Fatalf("event %+v", ev)
			}
		default:
			t.Fatalf("rotate exited before its notification was delivered:\n%s", stderr.String())
		}
	})
}

// verify names a claim left `claimed` past its deadline: the event it
// stands for may never have been delivered. A claim still within its
// deadline (a delivery under way) and finished claims are not named.
func TestVerifyNamesStaleClaims(t *testing.T) {
	mdb := mongotest.New(t)
	apiSeed(t, mdb.Database, apiPool, 2, 2)
	now := time.Now().UTC()
	coll := mdb.Database.Collection(notify.Collection)
	for _, c := range []bson.M{
		// As today's daemon leaves it when killed between claim and request.
		{"_id": "rotated/openhands.k0.aa@11111111", "event": "rotated/openhands.k0.aa", "kind": "rotated", "pool": "openhands",
			"target": "11111111", "format": "slack", "instance": "host-a-17", "claimedAt": now.Add(-48 * time.Hour), "state": "claimed"},
		{"_id": "rotated/openhands.k1.bb@11111111", "event": "rotated/openhands.k1.bb", "kind": "rotated", "pool": "openhands",
			"target": "11111111", "format": "slack", "instance": "host-a-17", "claimedAt": now.Add(-48 * time.Hour), "state": "sent"},
		{"_id": "rotated/openhands.k2.cc@11111111", "event": "rotated/openhands.k2.cc", "kind": "rotated", "pool": "openhands",
			"target": "11111111", "format": "slack", "instance": "host-b-18", "claimedAt": now.Add(-time.Second), "state": "claimed"},
	} {
		if _, err := coll.InsertOne(context.Background(), c); err != nil {
			t.Fatal(err)
		}
	}
	var stdout, stderr bytes.Buffer
	code := Run(context.Background(), []string{"verify", "--mongo-uri", mdb.URI, "--database", mdb.Name}, Env{Stdout: &stdout, Stderr: &stderr})
	out := stdout.String()
	if code != ExitPartial {
		t.Errorf("exit %d, want %d:\n%s%s", code, ExitPartial, out, stderr.String())
	}
	if !strings.Contains(out, "rotated/openhands.k0.aa@11111111") || !strings.Contains(out, "host-a-17") {
		t.Errorf("verify does not name the stale claim and its owner:\n%s", out)
	}
	for _, s := range []string{"k1.bb", "k2.cc"} {
		if strings.Contains(out, s) {
			t.Errorf("verify names %s, which is not stale:\n%s", s, out)
		}
	}
}

// Only the daemon sweeps the claims: a one-shot command exits before a
// sweep could count or resume anything.
func TestOnlyTheDaemonSweepsClaims(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{nil, true},
		{[]string{"--once"}, false},
		{[]string{"--dry-run"}, false},
		{[]string{"rotate", "k1"}, false},
		{[]string{"verify"}, false},
	} {
		cfg, err := config.Parse(append(tc.args, "--mongo-uri", uri))
		if err != nil {
			t.Fatal(err)
		}
		if got := sweepsClaims(cfg); got != tc.want {
			t.Errorf("%v: sweeps claims %v, want %v", tc.args, got, tc.want)
		}
	}
}
