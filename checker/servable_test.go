package checker_test

import (
	"context"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/checker"
)

// The proxy serves a key that is healthy, or whose cooldown has passed
// whatever its status, unless it is exhausted (its IsAvailable): every such
// key is polled, in both cadences, and none other.
func TestPollsEveryKeyTheProxyMayServe(t *testing.T) {
	for _, adaptive := range []bool{false, true} {
		t.Run(map[bool]string{false: "every cycle", true: "adaptive"}[adaptive], func(t *testing.T) {
			ctx := context.Background()
			now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
			clock := clockwork.NewFakeClockAt(now)
			s := newSetup(t, map[string]float64{"healthy": 1, "cooled": 10.4, "cooling": 1, "exhausted": 1,
				"error-cooled": 2, "limited-no-cooldown": 1}, 1, func(c *checker.Config) { c.Adaptive, c.Clock = adaptive, clock })
			keys := s.db.Collection(openhands.KeysCollection)
			set := func(id string, fields bson.M) {
				if _, err := keys.UpdateByID(ctx, id, bson.M{"$set": fields}); err != nil {
					t.Fatal(err)
				}
			}
			set("cooled", bson.M{"status": "rate_limited", "cooldownUntil": now.Add(-time.Second)})
			set("cooling", bson.M{"status": "rate_limited", "cooldownUntil": now.Add(time.Minute)})
			set("exhausted", bson.M{"status": "exhausted", "cooldownUntil": now.Add(-time.Hour)})
			set("error-cooled", bson.M{"status": "error", "cooldownUntil": now.Add(-time.Minute)})
			set("limited-no-cooldown", bson.M{"status": "rate_limited"})
			polled := map[string]bool{}
			s.up.OnRequest = func(sec string) {
				for _, id := range []string{"healthy", "cooled", "cooling", "exhausted", "error-cooled", "limited-no-cooldown"} {
					if sec == secret(id) {
						polled[id] = true
					}
				}
			}
			if _, err := s.chk.Cycle(ctx); err != nil {
				t.Fatal(err)
			}
			want := map[string]bool{"healthy": true, "cooled": true, "error-cooled": true}
			for _, id := range []string{"healthy", "cooled", "cooling", "exhausted", "error-cooled", "limited-no-cooldown"} {
				if polled[id] != want[id] {
					t.Errorf("key %s polled %v, want %v", id, polled[id], want[id])
				}
			}
			// A cooled-down key over its threshold is rotated like any other.
			if n := countDocs(t, s.db.Collection(openhands.HistoryCollection), bson.M{"keyId": "cooled"}); n != 1 {
				t.Errorf("cooled-down key over threshold: %d history records, want 1", n)
			}
		})
	}
}
