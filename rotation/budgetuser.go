package rotation

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// FieldBudgetUser is, on a key document, the LiteLLM user whose personal
// budget refused the key (upstream.UserBudgetExceeded), recorded by the
// rotator: two keys of one pool naming the same user share its budget, and
// rotating one of them for it would burn backups without helping.
const FieldBudgetUser = "budgetUser"

// budgetUserOfField names, beside FieldBudgetUser, the key document (id and
// secret, as RotationID) the user was recorded for: a secret replaced in
// place since belongs to someone else, and its key no longer shares the
// user.
const budgetUserOfField = "budgetUserOf"

// UserBudget is a pool's rule for LiteLLM's personal-budget refusals.
type UserBudget int

const (
	// UserBudgetAuto rotates the key unless another key of the pool (live,
	// or rotated away before) names the same user: then it is held.
	UserBudgetAuto UserBudget = iota
	// UserBudgetRotate always rotates: one LiteLLM user per key, by
	// construction.
	UserBudgetRotate
	// UserBudgetHold never rotates: the users are shared.
	UserBudgetHold
)

// UserBudgetNames are the settings' names, in order.
var UserBudgetNames = []string{"auto", "rotate", "hold"}

func (u UserBudget) String() string {
	if u < 0 || int(u) >= len(UserBudgetNames) {
		return "unknown"
	}
	return UserBudgetNames[u]
}

// ParseUserBudget reads a user-budget setting: auto, rotate or hold.
func ParseUserBudget(s string) (UserBudget, error) {
	for i, n := range UserBudgetNames {
		if s == n {
			return UserBudget(i), nil
		}
	}
	return 0, fmt.Errorf("user-budget %q: want %s", s, strings.Join(UserBudgetNames, ", "))
}

// WithBudgetUser says the rotation answers LiteLLM's refusal of user's
// personal budget: Rotate records the user on the key and, by the pool's
// UserBudget setting, holds the key (outcome Held) rather than rotate it
// when the user is shared.
func WithBudgetUser(user string) RotateOption {
	return func(r *request) { r.budgetUser = user }
}

// RecordBudgetUser records on a key the user whose personal budget refused
// it. secret, when set, guards against a different key document put under
// the same id since it was read.
func (r *Rotator) RecordBudgetUser(ctx context.Context, keyID, secret, user string) error {
	filter := bson.M{"_id": keyID}
	set := bson.M{FieldBudgetUser: user}
	if secret != "" {
		filter[FieldAPIKey] = secret
		set[budgetUserOfField] = RotationID(r.pool.Name, keyID, secret)
	}
	if _, err := r.keys.UpdateOne(ctx, filter, bson.M{"$set": set}); err != nil {
		return fmt.Errorf("record budget user of %s: %w", keyID, err)
	}
	return nil
}

// holdForUser records the refusal's user and tells whether the key is held
// instead of rotated. The user is written before the others are looked
// for, and the keys are read before the journal (a rotated key leaves the
// keys only after its journal entry exists), so of two keys refused for
// one user at once at least one sees the other.
func (r *Rotator) holdForUser(ctx context.Context, key Key, user string) (bool, error) {
	if err := r.RecordBudgetUser(ctx, key.ID, key.APIKey, user); err != nil {
		return false, err
	}
	switch r.opts.UserBudget {
	case UserBudgetRotate:
		return false, nil
	case UserBudgetHold:
		return true, nil
	}
	return r.userShared(ctx, key.ID, user)
}

// userShared reports whether a key other than keyID names user: one in the
// pool, or one rotated away for it.
func (r *Rotator) userShared(ctx context.Context, keyID, user string) (bool, error) {
	cur, err := r.keys.Find(ctx, bson.M{FieldBudgetUser: user, "_id": bson.M{"$ne": keyID}},
		options.Find().SetProjection(bson.M{"_id": 1, FieldAPIKey: 1, budgetUserOfField: 1}))
	if err != nil {
		return false, fmt.Errorf("find keys of budget user: %w", err)
	}
	for cur.Next(ctx) {
		if r.budgetUserCurrent(cur.Current) {
			_ = cur.Close(ctx)
			return true, nil
		}
	}
	if err := cur.Err(); err != nil {
		return false, fmt.Errorf("find keys of budget user: %w", err)
	}
	n, err := r.journal.CountDocuments(ctx, bson.M{"pool": r.pool.Name, FieldBudgetUser: user, "oldKeyId": bson.M{"$ne": keyID}}, options.Count().SetLimit(1))
	if err != nil {
		return false, fmt.Errorf("find rotations of budget user: %w", err)
	}
	return n > 0, nil
}

// SharedBudgetUsers lists the LiteLLM users named by more than one key of
// the pool (keys in the pool, and keys rotated away for the user's budget),
// each with those keys' ids, sorted: under UserBudgetAuto their refusals
// hold the keys instead of rotating them.
func (r *Rotator) SharedBudgetUsers(ctx context.Context) (map[string][]string, error) {
	named := map[string]map[string]bool{}
	add := func(user, id string) {
		if user == "" || id == "" {
			return
		}
		if named[user] == nil {
			named[user] = map[string]bool{}
		}
		named[user][id] = true
	}
	proj := options.Find().SetProjection(bson.M{"_id": 1, FieldBudgetUser: 1, FieldAPIKey: 1, budgetUserOfField: 1})
	cur, err := r.keys.Find(ctx, bson.M{FieldBudgetUser: bson.M{"$type": "string"}}, proj)
	if err != nil {
		return nil, fmt.Errorf("find budget users: %w", err)
	}
	for cur.Next(ctx) {
		if !r.budgetUserCurrent(cur.Current) {
			continue
		}
		id, _ := cur.Current.Lookup("_id").StringValueOK()
		user, _ := cur.Current.Lookup(FieldBudgetUser).StringValueOK()
		add(user, id)
	}
	if err := cur.Err(); err != nil {
		return nil, fmt.Errorf("find budget users: %w", err)
	}
	jcur, err := r.journal.Find(ctx, bson.M{"pool": r.pool.Name, FieldBudgetUser: bson.M{"$type": "string"}},
		options.Find().SetProjection(bson.M{"oldKeyId": 1, FieldBudgetUser: 1}))
	if err != nil {
		return nil, fmt.Errorf("find budget users' rotations: %w", err)
	}
	for jcur.Next(ctx) {
		id, _ := jcur.Current.Lookup("oldKeyId").StringValueOK()
		user, _ := jcur.Current.Lookup(FieldBudgetUser).StringValueOK()
		add(user, id)
	}
	if err := jcur.Err(); err != nil {
		return nil, fmt.Errorf("find budget users' rotations: %w", err)
	}
	out := map[string][]string{}
	for user, ids := range named {
		if len(ids) < 2 {
			continue
		}
		for id := range ids {
			out[user] = append(out[user], id)
		}
		sort.Strings(out[user])
	}
	return out, nil
}

// verifyBudgetUsers names, under UserBudgetAuto, the users shared by keys
// of the pool: their personal-budget refusals hold those keys.
func (r *Rotator) verifyBudgetUsers(ctx context.Context) ([]Problem, error) {
	if r.opts.UserBudget != UserBudgetAuto {
		return nil, nil
	}
	shared, err := r.SharedBudgetUsers(ctx)
	if err != nil {
		return nil, err
	}
	users := make([]string, 0, len(shared))
	for u := range shared {
		users = append(users, u)
	}
	sort.Strings(users)
	var probs []Problem
	for _, u := range users {
		probs = append(probs, Problem{Kind: "shared_budget_user", Detail: fmt.Sprintf(
			"keys %s name LiteLLM user %q: a refusal of its personal budget holds them instead of rotating (user-budget auto; set user-budget rotate if each key has its own user)",
			strings.Join(shared[u], ", "), u)})
	}
	return probs, nil
}

// budgetUserCurrent reports whether a key's recorded user is of its secret
// now: recorded without one (by hand, or before the secret was kept), or for
// this very id and secret.
func (r *Rotator) budgetUserCurrent(doc bson.Raw) bool {
	of, ok := doc.Lookup(budgetUserOfField).StringValueOK()
	if !ok {
		return true
	}
	id, _ := doc.Lookup("_id").StringValueOK()
	secret, _ := doc.Lookup(FieldAPIKey).StringValueOK()
	return of == RotationID(r.pool.Name, id, secret)
}
