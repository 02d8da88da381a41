package rotation

import (
	"context"
	"errors"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/history"
	"github.com/spendchecker/spendchecker/internal/mongoidx"
)

// RecoverReport counts what Recover did.
type RecoverReport struct {
	// Completed rotations found unfinished and now done.
	Completed int
	// Dropped claims whose backup vanished before it was used; their keys
	// were never touched and can be rotated again.
	Dropped int
	// Failed rotations that could not be completed this time.
	Failed int
}

// Recover finishes every unfinished rotation of the pool found in the
// journal. It is safe to run concurrently with rotations and with other
// recoverers: each step is idempotent.
func (r *Rotator) Recover(ctx context.Context) (RecoverReport, error) {
	var rep RecoverReport
	cur, err := r.journal.Find(ctx, bson.M{"pool": r.pool.Name, "state": stateClaimed},
		options.Find().SetSort(bson.D{{Key: "startedAt", Value: 1}}))
	if err != nil {
		return rep, fmt.Errorf("find unfinished rotations: %w", err)
	}
	var entries []journalEntry
	if err := cur.All(ctx, &entries); err != nil {
		return rep, fmt.Errorf("find unfinished rotations: %w", err)
	}
	var errs []error
	for _, e := range entries {
		s := &saga{r: r, e: e}
		err := s.run(ctx, StepInsertKey)
		switch {
		case err == nil:
			rep.Completed++
			r.log.Info("unfinished rotation completed", "key", e.OldKeyID, "rotation", e.ID, "new_key", e.NewKeyID)
		case errors.Is(err, ErrBackupVanished):
			if _, derr := r.journal.DeleteOne(ctx, bson.M{"_id": e.ID, "state": stateClaimed}); derr != nil {
				rep.Failed++
				errs = append(errs, derr)
				continue
			}
			rep.Dropped++
			r.log.Warn("dropped a claim whose backup vanished; the key is unchanged", "key", e.OldKeyID, "rotation", e.ID, "backup", e.BackupID)
		default:
			rep.Failed++
			errs = append(errs, err)
			r.log.Warn("could not complete rotation; will retry", "key", e.OldKeyID, "rotation", e.ID, "err", err)
		}
	}
	return rep, errors.Join(errs...)
}

// EnsureIndexes creates the indexes the algorithm relies on; idempotent.
func (r *Rotator) EnsureIndexes(ctx context.Context) error {
	err := mongoidx.Ensure(ctx, r.journal,
		mongoidx.Index{Name: journalBackupIndex, Keys: bson.D{{Key: "backupId", Value: 1}}, Unique: true},
		mongoidx.Index{Name: "pool_1_oldKeyId_1", Keys: bson.D{{Key: "pool", Value: 1}, {Key: "oldKeyId", Value: 1}}},
		mongoidx.Index{Name: "pool_1_newKeyId_1", Keys: bson.D{{Key: "pool", Value: 1}, {Key: "newKeyId", Value: 1}}},
		mongoidx.Index{Name: "pool_1_state_1", Keys: bson.D{{Key: "pool", Value: 1}, {Key: "state", Value: 1}}},
	)
	if err != nil {
		return err
	}
	f := r.pool.BindingKeyField
	if err := mongoidx.Ensure(ctx, r.bindings, mongoidx.Index{Name: f + "_1", Keys: bson.D{{Key: f, Value: 1}}}); err != nil {
		return err
	}
	if err := mongoidx.Ensure(ctx, r.backups, mongoidx.Index{Name: "isUsed_1_createdAt_1",
		Keys: bson.D{{Key: "isUsed", Value: 1}, {Key: "createdAt", Value: 1}}}); err != nil {
		return err
	}
	return history.NewStore(r.history).EnsureIndexes(ctx)
}

const journalBackupIndex = "backupId_unique"

// BackupsAvailable counts the backups not marked used that a rotation can
// take: malformed ones (no string _id or apiKey) are not counted, so the
// backups-left alert sees what is really usable.
func (r *Rotator) BackupsAvailable(ctx context.Context) (int64, error) {
	n, err := r.backups.CountDocuments(ctx, bson.M{
		"isUsed": bson.M{"$ne": true},
		"_id":    bson.M{"$type": "string", "$ne": ""},
		"apiKey": bson.M{"$type": "string", "$ne": ""},
	})
	if err != nil {
		return 0, fmt.Errorf("count backups: %w", err)
	}
	return n, nil
}
