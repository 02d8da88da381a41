package rotation_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/spendchecker/spendchecker/internal/fixture"
	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation"
)

// Two pools configured with one backups collection each claim a backup in
// their own journal (its unique index is per pool): the proxy's clean-up
// deletes a used backup, an operator adds a new one under the same id,
// and the other pool takes it. Verify names the backup, both pools and the
// collection, also for journal entries written before the journal named
// the backups collection; two pools with their own collections holding
// the same backup id are not named.
func TestVerifyNamesABackupClaimedByTwoPools(t *testing.T) {
	tests := []struct {
		name   string
		shared bool
		legacy bool // entries without backupsCollection
		// legacyPool, when set, leaves only that pool's entries without it.
		legacyPool string
	}{
		{name: "shared backups collection", shared: true},
		{name: "shared, entries of an older rotator", shared: true, legacy: true},
		{name: "shared, pool a's entries of an older rotator", shared: true, legacy: true, legacyPool: "openhands"},
		{name: "shared, pool b's entries of an older rotator", shared: true, legacy: true, legacyPool: "factory"},
		{name: "own collections, same backup id"},
		{name: "own collections, entries of an older rotator", legacy: true},
		{name: "own collections, pool a's entries of an older rotator", legacy: true, legacyPool: "openhands"},
		{name: "own collections, pool b's entries of an older rotator", legacy: true, legacyPool: "factory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			db := mongotest.New(t).Database
			a := testPool
			b, _ := rotation.Preset("factory")
			if tt.shared {
				b.BackupsCollection = a.BackupsCollection
			}
			at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			if err := fixture.Write(ctx, db, a, fixture.Pool{Keys: []fixture.Key{{ID: "ka", Secret: "sk-a-secret-0001"}}, Bindings: 1,
				Backups: []fixture.Backup{{ID: "b0", Secret: "sk-b0-secret-0001"}}, CreatedAt: at}); err != nil {
				t.Fatal(err)
			}
			if err := fixture.Write(ctx, db, b, fixture.Pool{Keys: []fixture.Key{{ID: "kb", Secret: "sk-b-secret-0001"}}, Bindings: 1, CreatedAt: at}); err != nil {
				t.Fatal(err)
			}
			ra, rb := rotatorOf(t, db, a), rotatorOf(t, db, b)
			for _, r := range []*rotation.Rotator{ra, rb} {
				if err := r.EnsureIndexes(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if res, err := ra.Rotate(ctx, "ka", "threshold"); err != nil || res.Outcome != rotation.Rotated {
				t.Fatalf("pool a: %+v %v", res, err)
			}
			// The used b0 is cleaned up and a new b0 added, to the
			// collection pool b reads.
			if _, err := db.Collection(a.BackupsCollection).DeleteOne(ctx, bson.M{"_id": "b0"}); err != nil {
				t.Fatal(err)
			}
			if _, err := db.Collection(b.BackupsCollection).InsertOne(ctx, fixture.BackupDoc(fixture.Backup{ID: "b0", Secret: "sk-b0-secret-0002"}, at)); err != nil {
				t.Fatal(err)
			}
			if res, err := rb.Rotate(ctx, "kb", "threshold"); err != nil || res.Outcome != rotation.Rotated || res.NewKeyID != "b0" {
				t.Fatalf("pool b: %+v %v", res, err)
			}
			if tt.legacy {
				filter := bson.M{}
				if tt.legacyPool != "" {
					filter["pool"] = tt.legacyPool
				}
				if _, err := db.Collection(rotation.JournalCollection).UpdateMany(ctx, filter, bson.M{"$unset": bson.M{"backupsCollection": ""}}); err != nil {
					t.Fatal(err)
				}
			}
			var named []string
			for _, r := range []*rotation.Rotator{ra, rb} {
				probs, err := r.Verify(ctx)
				if err != nil {
					t.Fatal(err)
				}
				for _, p := range probs {
					if p.Kind == "backup_claimed_by_two_pools" {
						named = append(named, p.Detail)
					}
				}
			}
			if !tt.shared {
				if len(named) > 0 {
					t.Fatalf("pools with their own backups collections named: %q", named)
				}
				return
			}
			if len(named) == 0 {
				t.Fatal("verify does not name backup b0, claimed by both pools' journals")
			}
			for _, d := range named {
				for _, w := range []string{"b0", a.Name, b.Name, a.BackupsCollection} {
					if !strings.Contains(d, w) {
						t.Errorf("%q does not name %s", d, w)
					}
				}
			}
		})
	}
}

func rotatorOf(t *testing.T, db *mongo.Database, p rotation.Pool) *rotation.Rotator {
	t.Helper()
	r, err := rotation.New(db, p, rotation.Config{Owner: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return r
}
