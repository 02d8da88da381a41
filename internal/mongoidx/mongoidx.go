// Package mongoidx creates the indexes that are missing, by name. Creating an
// index that already exists is a no-op on MongoDB but drops the connection
// on FerretDB v1, and listing first leaves operators' own indexes alone.
package mongoidx

import (
	"context"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Index is one named index.
type Index struct {
	Name   string
	Keys   bson.D
	Unique bool
}

// Ensure creates the indexes missing from coll.
func Ensure(ctx context.Context, coll *mongo.Collection, idx ...Index) error {
	have, err := Names(ctx, coll)
	if err != nil {
		return err
	}
	var missing []mongo.IndexModel
	for _, i := range idx {
		if have[i.Name] {
			continue
		}
		o := options.Index().SetName(i.Name)
		if i.Unique {
			o.SetUnique(true)
		}
		missing = append(missing, mongo.IndexModel{Keys: i.Keys, Options: o})
	}
	if len(missing) == 0 {
		return nil
	}
	if _, err := coll.Indexes().CreateMany(ctx, missing); err != nil {
		return fmt.Errorf("create indexes on %s: %w", coll.Name(), err)
	}
	return nil
}

// Names lists the names of coll's indexes (none for a missing collection).
func Names(ctx context.Context, coll *mongo.Collection) (map[string]bool, error) {
	specs, err := Specs(ctx, coll)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, s := range specs {
		if n, ok := s.Lookup("name").StringValueOK(); ok {
			out[n] = true
		}
	}
	return out, nil
}

// Specs returns coll's index specifications.
func Specs(ctx context.Context, coll *mongo.Collection) ([]bson.Raw, error) {
	cur, err := coll.Indexes().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list indexes of %s: %w", coll.Name(), err)
	}
	var specs []bson.Raw
	if err := cur.All(ctx, &specs); err != nil {
		return nil, fmt.Errorf("list indexes of %s: %w", coll.Name(), err)
	}
	return specs, nil
}
