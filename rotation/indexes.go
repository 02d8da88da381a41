package rotation

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/spendchecker/spendchecker/rotation/history"
	"github.com/spendchecker/spendchecker/rotation/mongoidx"
)

// EnsureIndexes creates the indexes the algorithm relies on and migrates the
// journal's old global backupId index; idempotent, and safe when several
// replicas start at once (docs/operating.md "Deploying").
func (r *Rotator) EnsureIndexes(ctx context.Context) error {
	err := r.ensure(ctx, r.journal,
		mongoidx.Index{Name: journalBackupIndex, Keys: bson.D{{Key: "pool", Value: 1}, {Key: "backupId", Value: 1}}, Unique: true},
		mongoidx.Index{Name: "pool_1_oldKeyId_1", Keys: bson.D{{Key: "pool", Value: 1}, {Key: "oldKeyId", Value: 1}}},
		mongoidx.Index{Name: "pool_1_newKeyId_1", Keys: bson.D{{Key: "pool", Value: 1}, {Key: "newKeyId", Value: 1}}},
		mongoidx.Index{Name: "pool_1_state_1", Keys: bson.D{{Key: "pool", Value: 1}, {Key: "state", Value: 1}}},
	)
	if err != nil {
		return err
	}
	if err := r.dropLegacyIndex(ctx); err != nil {
		return err
	}
	// Recovery looks for marked keys at every pass: few, found by index.
	if err := r.ensure(ctx, r.keys, mongoidx.Index{Name: pendingField + "_1", Keys: bson.D{{Key: pendingField, Value: 1}}}); err != nil {
		return err
	}
	f := r.pool.BindingKeyField
	if err := r.ensure(ctx, r.bindings, mongoidx.Index{Name: f + "_1", Keys: bson.D{{Key: f, Value: 1}}}); err != nil {
		return err
	}
	if err := r.ensure(ctx, r.backups, mongoidx.Index{Name: "isUsed_1_createdAt_1",
		Keys: bson.D{{Key: FieldIsUsed, Value: 1}, {Key: FieldCreatedAt, Value: 1}}}); err != nil {
		return err
	}
	// Each rotation lists the replacements of its key by usedFor.
	if err := r.ensure(ctx, r.backups, mongoidx.Index{Name: "usedFor_1", Keys: bson.D{{Key: FieldUsedFor, Value: 1}}}); err != nil {
		return err
	}
	return history.NewStore(r.history).EnsureIndexes(ctx)
}

// ensure creates what is missing; mongoidx.Ensure itself retries the
// transient errors of replicas racing to create the same index (FerretDB
// v1 drops the connection of all but one of them).
func (r *Rotator) ensure(ctx context.Context, c *mongo.Collection, idx ...mongoidx.Index) error {
	return mongoidx.Ensure(ctx, c, idx...)
}

// dropLegacyIndex drops the global backupId index once the per-pool one is
// there (so uniqueness is never lost in between). A replica that finds it
// already dropped by another is done too.
func (r *Rotator) dropLegacyIndex(ctx context.Context) error {
	var err error
	for try := range 6 {
		var names map[string]bool
		names, err = mongoidx.Names(ctx, r.journal)
		if err == nil {
			if !names[legacyBackupIndex] {
				return nil
			}
			if !names[journalBackupIndex] {
				return fmt.Errorf("%s: per-pool backup index missing; not dropping %s", JournalCollection, legacyBackupIndex)
			}
			err = r.journal.Indexes().DropOne(ctx, legacyBackupIndex)
			var ce mongo.CommandError
			if err == nil || (errors.As(err, &ce) && (ce.Code == 27 || ce.HasErrorLabel("IndexNotFound"))) {
				r.log.Info("dropped the journal's global backupId index; backups are unique per pool now", "index", legacyBackupIndex)
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(time.Duration(try+1) * 100 * time.Millisecond):
		}
	}
	return fmt.Errorf("drop index %s on %s: %w", legacyBackupIndex, JournalCollection, err)
}
