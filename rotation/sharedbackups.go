package rotation

import (
	"context"
	"errors"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// backupsClaimedByOtherPools names each backup that this pool's journal
// and another pool's both claim in one collection: pools configured with
// one backups collection (the journal's backupId index is unique per
// pool, so nothing stops the second claim). The same backup id in two
// pools' own collections is no problem. An entry of an older rotator does
// not record its collection: the other pool's claim counts when the
// backup in ours carries that claim's mark.
func (r *Rotator) backupsClaimedByOtherPools(ctx context.Context, entries []journalEntry) ([]Problem, error) {
	ours := r.pool.BackupsCollection
	type claim struct{ coll, id string }
	mine := map[claim]journalEntry{}
	var ids []string
	for _, e := range entries {
		if e.State == stateUndone || e.BackupID == releasedBackupID(e.ID) {
			continue
		}
		coll := e.BackupsCollection
		if coll == "" {
			coll = ours
		}
		mine[claim{coll, e.BackupID}] = e
		ids = append(ids, e.BackupID)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	var others []journalEntry
	cur, err := r.journal.Find(ctx, bson.M{"pool": bson.M{"$ne": r.pool.Name}, "backupId": bson.M{"$in": ids}, "state": bson.M{"$ne": stateUndone}})
	if err != nil {
		return nil, fmt.Errorf("verify journal: %w", err)
	}
	if err := cur.All(ctx, &others); err != nil {
		return nil, fmt.Errorf("verify journal: %w", err)
	}
	var probs []Problem
	for _, o := range others {
		coll := o.BackupsCollection
		if coll == "" {
			by, err := r.claimMark(ctx, o.BackupID)
			if err != nil {
				return nil, err
			}
			if by != o.ID {
				continue
			}
			coll = ours
		}
		e, ok := mine[claim{coll, o.BackupID}]
		if !ok {
			continue
		}
		probs = append(probs, Problem{Kind: "backup_claimed_by_two_pools", Detail: fmt.Sprintf(
			"backup %s of collection %s is claimed by rotation %s of pool %s (%s) and rotation %s of pool %s (%s): the pools share a backups collection; give each pool its own",
			o.BackupID, coll, e.ID, r.pool.Name, e.State, o.ID, o.Pool, o.State)})
	}
	return probs, nil
}

// claimMark is the rotation that reserved backup id in this pool's
// backups collection ("" when none or no such backup).
func (r *Rotator) claimMark(ctx context.Context, id string) (string, error) {
	raw, err := r.backups.FindOne(ctx, bson.M{"_id": id}).Raw()
	if errors.Is(err, mongo.ErrNoDocuments) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read backup %s: %w", id, err)
	}
	by, _ := raw.Lookup(claimField).StringValueOK()
	return by, nil
}
