package rotation

import (
	"context"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// moveBindings re-points the bindings of from to to, naming each by _id as
// read just before: the update, if delivered late, cannot take a binding
// made since for a key put back by hand under the same id.
func (r *Rotator) moveBindings(ctx context.Context, from, to string) error {
	ids, err := r.bindingIDs(ctx, from)
	if err != nil {
		return err
	}
	return r.moveBindingIDs(ctx, ids, from, to)
}

// bindingIDs reads the _ids of the bindings of key.
func (r *Rotator) bindingIDs(ctx context.Context, key string) ([]any, error) {
	cur, err := r.bindings.Find(ctx, bson.M{r.pool.BindingKeyField: key}, options.Find().SetProjection(bson.M{"_id": 1}))
	if err != nil {
		return nil, fmt.Errorf("find bindings of %s: %w", key, err)
	}
	var ids []any
	for cur.Next(ctx) {
		ids = append(ids, cur.Current.Lookup("_id"))
	}
	if err := cur.Err(); err != nil {
		return nil, fmt.Errorf("find bindings of %s: %w", key, err)
	}
	return ids, nil
}

// moveBindingIDs re-points the bindings named by ids that still name from.
func (r *Rotator) moveBindingIDs(ctx context.Context, ids []any, from, to string) error {
	f := r.pool.BindingKeyField
	if len(ids) == 0 {
		return nil
	}
	_, err := r.bindings.UpdateMany(ctx, bson.M{"_id": bson.M{"$in": ids}, f: from}, bson.M{"$set": bson.M{
		f:           to,
		"updatedAt": r.opts.Now().UTC(),
	}})
	return err
}
