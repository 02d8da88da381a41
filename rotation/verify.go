package rotation

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/rotation/history"
	"github.com/spendchecker/spendchecker/rotation/mongoidx"
	"github.com/spendchecker/spendchecker/rotation/secret"
)

// Problem is one broken invariant or schema defect found by Verify.
type Problem struct {
	Kind   string // stable identifier, e.g. "orphan_binding"
	Detail string
}

func (p Problem) String() string { return p.Kind + ": " + p.Detail }

// Verify checks the pool's rotation invariants and schema by querying the
// database: orphan bindings, unfinished claims, rotated keys lost from the
// pool, keys sharing a secret, missing history or archive copies, missing
// indexes, a TTL index on history and, under UserBudgetAuto, LiteLLM users
// shared by keys (whose personal-budget refusals are held). It writes
// nothing.
func (r *Rotator) Verify(ctx context.Context) ([]Problem, error) {
	var probs []Problem
	add := func(kind, format string, a ...any) {
		probs = append(probs, Problem{Kind: kind, Detail: fmt.Sprintf(format, a...)})
	}

	// Every key with a string _id, holding only what the checks below read
	// (apiKey "" for a malformed one): at 100,000 keys the maps are what
	// verify holds, so the strings are shared, not copied per map.
	keys := map[string]verifyKey{}
	has := func(id string) bool { _, ok := keys[id]; return ok }
	secrets := map[string]string{}
	cur, err := r.keys.Find(ctx, bson.M{}, options.Find().SetProjection(bson.M{"_id": 1, FieldAPIKey: 1, FieldReplacedKey: 1, pendingField: 1}))
	if err != nil {
		return nil, fmt.Errorf("verify keys: %w", err)
	}
	for cur.Next(ctx) {
		id, ok := cur.Current.Lookup("_id").StringValueOK()
		if !ok {
			add("malformed_key", "key %s: _id is not a string", cur.Current.Lookup("_id"))
			continue
		}
		apiKey, _ := cur.Current.Lookup(FieldAPIKey).StringValueOK()
		if apiKey == "" {
			keys[id] = verifyKey{}
			add("malformed_key", "key %s: apiKey missing or not a string", id)
			continue
		}
		k := verifyKey{apiKey: apiKey}
		k.replacedKey, _ = cur.Current.Lookup(FieldReplacedKey).StringValueOK()
		k.pending, _ = cur.Current.Lookup(pendingField).StringValueOK()
		keys[id] = k
		if other, dup := secrets[apiKey]; dup {
			add("duplicate_secret", "keys %s and %s hold the same secret (%s)", other, id, secret.Mask(apiKey))
		}
		secrets[apiKey] = id
	}
	if err := cur.Err(); err != nil {
		return nil, fmt.Errorf("verify keys: %w", err)
	}

	bcur, err := r.bindings.Find(ctx, bson.M{}, options.Find().SetProjection(bson.M{"_id": 1, r.pool.BindingKeyField: 1, FieldIsActive: 1}))
	if err != nil {
		return nil, fmt.Errorf("verify bindings: %w", err)
	}
	bound := map[string]bool{}
	for bcur.Next(ctx) {
		kid, ok := bcur.Current.Lookup(r.pool.BindingKeyField).StringValueOK()
		// The proxy serves a key through its active bindings only.
		active, isBool := bcur.Current.Lookup(FieldIsActive).BooleanOK()
		bound[kid] = bound[kid] || (ok && (active || !isBool))
		if ok && !has(kid) {
			add("orphan_binding", "binding %s points at missing key %s", bcur.Current.Lookup("_id"), kid)
		}
	}
	if err := bcur.Err(); err != nil {
		return nil, fmt.Errorf("verify bindings: %w", err)
	}

	var entries []journalEntry
	jcur, err := r.journal.Find(ctx, bson.M{"pool": r.pool.Name})
	if err != nil {
		return nil, fmt.Errorf("verify journal: %w", err)
	}
	if err := jcur.All(ctx, &entries); err != nil {
		return nil, fmt.Errorf("verify journal: %w", err)
	}
	shared, err := r.backupsClaimedByOtherPools(ctx, entries)
	if err != nil {
		return nil, err
	}
	probs = append(probs, shared...)
	rotatedAway := map[string]bool{}
	earlier := map[string]bool{} // old key + a replacement of an earlier copy of it
	for _, e := range entries {
		rotatedAway[e.OldKeyID] = true
		for _, p := range e.Prior {
			earlier[e.OldKeyID+"\x00"+p] = true
		}
	}
	// The finished rotations, to look for their history and archive: those
	// collections are streamed against this set, never held whole.
	done := map[string]bool{}
	for _, e := range entries {
		if e.State == stateDone && e.BackupID != releasedBackupID(e.ID) {
			done[e.ID] = true
		}
	}
	histIDs, err := idsIn(ctx, r.history, done, func(id string) {
		// Older deployments wrote history for every check, under other ids.
		if strings.HasPrefix(id, "rot_") {
			add("stray_history", "history record %s has no finished rotation", id)
		}
	})
	if err != nil {
		return nil, err
	}
	archIDs, err := idsIn(ctx, r.archive, done, nil)
	if err != nil {
		return nil, err
	}
	// A key rotated away by the proxy's own rotator has no journal entry,
	// but its archived copy.
	archivedKeys, err := r.archivedSourceIDs(ctx)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if e.State == stateUndone {
			continue
		}
		if e.BackupID == releasedBackupID(e.ID) {
			// A journal mark that raced the undo (FerretDB v1).
			add("undone_marked_done", "rotation %s of key %s was undone (backup %s given back) but is marked %s", e.ID, e.OldKeyID, e.UndoneBackupID, e.State)
			continue
		}
		if e.State != stateDone {
			add("unfinished_rotation", "rotation %s of key %s (backup %s) is %s; run recover", e.ID, e.OldKeyID, e.BackupID, e.State)
			continue
		}
		if !has(e.NewKeyID) && !rotatedAway[e.NewKeyID] && !archivedKeys[e.NewKeyID] {
			add("lost_key", "rotation %s: new key %s is neither live nor rotated again", e.ID, e.NewKeyID)
		}
		if k, ok := keys[e.OldKeyID]; ok && k.apiKey != "" && sameDocument(e.ID, r.pool.Name, e.OldKeyID, k.apiKey) {
			if k.pending != "" {
				add("rotated_key_live_again", "rotation %s: rotated-away key %s is live again, brought back by a late insert of rotation %s; recover removes it", e.ID, e.OldKeyID, k.pending)
			} else {
				add("rotated_key_live_again", "rotation %s: rotated-away key %s is live again with the same secret (put back by hand?); it can be rotated again", e.ID, e.OldKeyID)
			}
		}
		if !histIDs[e.ID] {
			add("missing_history", "rotation %s has no history record", e.ID)
		}
		if !archIDs[e.ID] && !rekeyedKept(e, keys, r.pool.Name) {
			add("missing_archive", "rotation %s: old key %s was not archived", e.ID, e.OldKeyID)
		}
	}
	byID := map[string]journalEntry{}
	ours := map[string]journalEntry{} // keys our rotations brought in
	for _, e := range entries {
		byID[e.ID] = e
		if e.State != stateUndone {
			ours[e.NewKeyID] = e
		}
	}
	for id, k := range keys {
		// The proxy's own rotator may delete the old key's bindings to
		// re-create them and stop in between: its replacement is bound
		// nowhere, so the proxy never serves it (it rotates only keys it
		// serves, and serves only keys with active bindings). Ours moves
		// bindings by id, so a key of ours bound nowhere replaced one bound
		// nowhere: named only when that one was such a foreign replacement.
		if k.apiKey == "" || k.replacedKey == "" || k.pending != "" || bound[id] || has(k.replacedKey) {
			continue
		}
		e, mine := ours[id]
		if mine {
			foreign, err := r.foreignReplacement(ctx, e, ours)
			if err != nil {
				return nil, err
			}
			if !foreign {
				continue
			}
		}
		add("bindings_lost", "key %s is bound to no egress proxy and descends from a replacement made outside our journal (the proxy's own rotator), which deleted the bindings and did not re-create them; the proxy never serves it: bind it to the egress proxies %s had", id, k.replacedKey)
	}
	for id, k := range keys {
		if k.apiKey == "" || k.pending == "" {
			continue
		}
		if e, ok := byID[k.pending]; ok && e.NewKeyID == id && e.OldKeyID == k.replacedKey && e.State == stateClaimed {
			continue // its rotation is under way (a late insert of an undone one is named)
		}
		add("late_insert", "key %s carries the insert mark of rotation %s, which has moved on (a late insert, or a mark a lost update left); recover settles it", id, k.pending)
	}
	groups, err := r.replacementsOf(ctx)
	if err != nil {
		return nil, err
	}
	for old, reps := range groups {
		var live []string
		foreign := false
		for _, rp := range reps {
			if rp.live {
				live = append(live, rp.id)
				// Two of ours are a key put back by hand and rotated again;
				// so is one that replaced an earlier copy of it.
				foreign = foreign || (rp.claimedBy == "" && !earlier[old+"\x00"+rp.id])
			} else if !rotatedAway[rp.id] && !archivedKeys[rp.id] {
				add("backup_used_by_no_key", "backup %s is marked used for %s but is no live key and was never rotated away or archived: a rotation that stopped part-way (a foreign one, if the journal has none)", rp.id, old)
			}
		}
		if len(live) > 1 && foreign && !has(old) {
			sort.Strings(live)
			add("two_replacements", "key %s was replaced by %d live keys (%s): rotated twice, by ours and a foreign rotator; recover removes an unbound foreign one", old, len(live), strings.Join(live, ", "))
		}
	}
	lb, err := r.backupsLiveAsKeys(ctx)
	if err != nil {
		return nil, err
	}
	for _, b := range lb {
		if b.sameSecret {
			add("backup_live_unmarked", "backup %s is live as a key with its own secret but not marked used (left by an older rotator); recover marks it used", b.id)
		} else {
			add("id_collision", "backup %s has the _id of a live key with another secret; rotations skip it: rename or delete one of them", b.id)
		}
	}
	if names, err := mongoidx.Names(ctx, r.journal); err != nil {
		return nil, err
	} else {
		if !names[journalBackupIndex] {
			add("missing_index", "%s has no unique index on (pool, backupId); run with index creation enabled", JournalCollection)
		}
		if names[legacyBackupIndex] {
			add("legacy_index", "%s still has the global unique index %s: a backup id used in one pool cannot be claimed in another; start a current version to migrate it", JournalCollection, legacyBackupIndex)
		}
	}
	name, after, found, err := history.NewStore(r.history).TTLIndex(ctx)
	if err != nil {
		return nil, err
	}
	if found {
		add("history_ttl", "%s has TTL index %s (%s): it silently deletes spend history", r.pool.HistoryCollection, name, after)
	}
	users, err := r.verifyBudgetUsers(ctx)
	if err != nil {
		return nil, err
	}
	probs = append(probs, users...)
	sort.SliceStable(probs, func(i, j int) bool { return probs[i].Kind < probs[j].Kind })
	return probs, nil
}

// rekeyedKept reports whether a forward-only rotation completed with its old
// key re-keyed in place before it was archived: that key stays live under
// the old id with another secret, and nothing was archived or deleted.
func rekeyedKept(e journalEntry, keys map[string]verifyKey, pool string) bool {
	k, ok := keys[e.OldKeyID]
	return e.ForwardOnly && ok && k.apiKey != "" && !sameDocument(e.ID, pool, e.OldKeyID, k.apiKey)
}

// verifyKey is what Verify keeps of a key.
type verifyKey struct{ apiKey, replacedKey, pending string }

// idsIn streams c's string _ids: it returns those in want, and hands each
// other one to other (if set).
func idsIn(ctx context.Context, c *mongo.Collection, want map[string]bool, other func(id string)) (map[string]bool, error) {
	cur, err := c.Find(ctx, bson.M{}, options.Find().SetProjection(bson.M{"_id": 1}))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", c.Name(), err)
	}
	defer cur.Close(context.WithoutCancel(ctx))
	out := map[string]bool{}
	for cur.Next(ctx) {
		id, ok := cur.Current.Lookup("_id").StringValueOK()
		switch {
		case !ok:
		case want[id]:
			out[id] = true
		case other != nil:
			other(id)
		}
	}
	return out, cur.Err()
}

// archivedSourceIDs lists the key ids with a copy in the archive, deleted
// (an undone rotation's copy of its old key records no deletion).
func (r *Rotator) archivedSourceIDs(ctx context.Context) (map[string]bool, error) {
	cur, err := r.archive.Find(ctx, bson.M{"sourceCollection": r.pool.KeysCollection, FieldArchiveUndoneAt: bson.M{"$exists": false}},
		options.Find().SetProjection(bson.M{"sourceId": 1}))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", ArchiveCollection, err)
	}
	out := map[string]bool{}
	for cur.Next(ctx) {
		if id, ok := cur.Current.Lookup("sourceId").StringValueOK(); ok {
			out[id] = true
		}
	}
	return out, cur.Err()
}

// foreignReplacement reports whether the old key of our rotation e was
// itself brought in outside our journal: its archived copy names the key
// it replaced, and no rotation of ours brought it in.
func (r *Rotator) foreignReplacement(ctx context.Context, e journalEntry, ours map[string]journalEntry) (bool, error) {
	if _, mine := ours[e.OldKeyID]; mine {
		return false, nil
	}
	var a struct {
		Document bson.Raw `bson:"document"`
	}
	err := r.archive.FindOne(ctx, bson.M{"_id": e.ID}).Decode(&a)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("verify archive: %w", err)
	}
	rk, _ := a.Document.Lookup(FieldReplacedKey).StringValueOK()
	return rk != "", nil
}
