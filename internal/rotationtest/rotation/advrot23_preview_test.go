package rotation_test

import (
	"context"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation"
)

// Preview answers what Rotate then answers, and writes nothing, also when
// the first backup in claim order is one a claim passes over: held by an
// unfinished claim that never reserved it (its owner was cut off between
// the journal insert and the reservation), live as a key under its own id
// (an old rotator's state), or holding a secret that was live under its
// id and rotated away (marked unused again by hand).
func TestAdvrot23_PreviewSkipsBackupsAClaimSkips(t *testing.T) {
	bg := context.Background()
	for _, tt := range []struct {
		name    string
		backups int
		prepare func(t *testing.T, mdb *mongotest.DB)
		want    rotation.Outcome
	}{
		{"claimed, not reserved: the only backup", 1, cutBeforeReserve, rotation.NoBackup},
		{"claimed, not reserved: the first backup", 2, cutBeforeReserve, rotation.Rotated},
		{"live as a key: the only backup", 1, backup000LiveAsKey, rotation.NoBackup},
		{"live as a key: the first backup", 2, backup000LiveAsKey, rotation.Rotated},
		{"secret rotated away under its id", 3, func(t *testing.T, mdb *mongotest.DB) {
			db := mdb.Database
			legacyRotate(t, db, "key-000", nil) // backup-000 goes live, no journal
			res, err := newRotator(t, db, rotation.Config{}).Rotate(bg, "backup-000", "manual")
			if err != nil || res.Outcome != rotation.Rotated {
				t.Fatalf("rotate backup-000 away: %+v, %v", res, err)
			}
			if _, err := db.Collection(testPool.BackupsCollection).UpdateOne(bg, bson.M{"_id": "backup-000"},
				bson.M{"$set": bson.M{"isUsed": false, "activated": false}}); err != nil {
				t.Fatal(err)
			}
		}, rotation.Rotated},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mdb := mongotest.New(t)
			db := mdb.Database
			seed(t, db, 3, tt.backups, 1)
			tt.prepare(t, mdb)
			before := dump(t, db)
			got, err := newRotator(t, db, rotation.Config{Owner: "preview"}).Preview(bg, "key-002")
			if err != nil {
				t.Fatal(err)
			}
			if after := dump(t, db); after != before {
				t.Fatalf("Preview wrote:\nbefore %s\nafter  %s", before, after)
			}
			real, err := newRotator(t, db, rotation.Config{}).Rotate(bg, "key-002", "manual")
			if err != nil {
				t.Fatal(err)
			}
			if real.Outcome != tt.want {
				t.Fatalf("Rotate = %+v, want %s: the case proves nothing", real, tt.want)
			}
			if real.Outcome != got.Outcome || real.RotationID != got.RotationID || real.NewKeyID != got.NewKeyID {
				t.Errorf("Preview = %+v, Rotate = %+v", got, real)
			}
		})
	}
}

// cutBeforeReserve leaves key-001's claim of backup-000 in the journal and
// backup-000 unreserved: the owner's reservation never reached the store.
func cutBeforeReserve(t *testing.T, mdb *mongotest.DB) {
	t.Helper()
	k := firstStep(t, "findAndModify "+testPool.BackupsCollection)
	proxy := mdb.Proxy(t)
	p := newRotator(t, mdb.NewClient(t, options.Client().ApplyURI(proxy.URI())).Database(mdb.Name), rotation.Config{Owner: "p"})
	proxy.FailCommand(k+1, mongotest.Before)
	if _, err := p.Rotate(context.Background(), "key-001", "manual"); err == nil {
		t.Fatal("rotate succeeded though its reservation was cut")
	}
	if n := count(t, mdb.Database, rotation.JournalCollection, bson.M{"backupId": "backup-000", "state": "claimed"}); n != 1 {
		t.Fatalf("no claim of backup-000 left: the case proves nothing")
	}
	if n := count(t, mdb.Database, testPool.BackupsCollection, bson.M{"_id": "backup-000", "isUsed": false}); n != 1 {
		t.Fatalf("backup-000 was reserved: the case proves nothing")
	}
}

// backup000LiveAsKey puts backup-000 live as a key with its own secret and
// leaves the backup unmarked, as the old rotators did.
func backup000LiveAsKey(t *testing.T, mdb *mongotest.DB) {
	t.Helper()
	if _, err := mdb.Database.Collection(testPool.KeysCollection).InsertOne(context.Background(), bson.M{
		"_id": "backup-000", "apiKey": "sk-live-backup-secret-000000", "status": "healthy", "replacedKey": "key-gone",
	}); err != nil {
		t.Fatal(err)
	}
}
