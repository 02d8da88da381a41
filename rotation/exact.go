package rotation

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// archiveCopy inserts a copy of doc under an id derived from id: the first
// copy under id itself, a later different version under id and the
// version's digest. Inserting the same copy again is a no-op.
func (r *Rotator) archiveCopy(ctx context.Context, id, rotationID, keyID, reason, newKeyID string, doc bson.Raw) error {
	entry := func(archiveID string) bson.D {
		return bson.D{
			{Key: "_id", Value: archiveID},
			{Key: "sourceCollection", Value: r.pool.KeysCollection},
			{Key: "sourceId", Value: keyID},
			{Key: "reason", Value: reason},
			{Key: "deletedBy", Value: "spendchecker/rotation:" + r.opts.Owner},
			{Key: "deletedAt", Value: r.opts.Now().UTC()},
			{Key: "document", Value: doc},
			{Key: "metadata", Value: bson.D{
				{Key: "replacementKeyId", Value: newKeyID},
				{Key: "rotationId", Value: rotationID},
				{Key: "pool", Value: r.pool.Name},
			}},
		}
	}
	_, err := r.archive.InsertOne(ctx, entry(id))
	if err == nil || !mongo.IsDuplicateKeyError(err) {
		return err
	}
	var have struct {
		Document bson.Raw `bson:"document"`
	}
	if err := r.archive.FindOne(ctx, bson.M{"_id": id}).Decode(&have); err != nil {
		return fmt.Errorf("read archive %s: %w", id, err)
	}
	if bytes.Equal(have.Document, doc) {
		return nil
	}
	sum := sha256.Sum256(doc)
	_, err = r.archive.InsertOne(ctx, entry(id+"/"+hex.EncodeToString(sum[:6])))
	if mongo.IsDuplicateKeyError(err) {
		return nil
	}
	return err
}

// deleteExactly deletes doc only while the store holds it unchanged: the
// filter names every top-level field, so what is deleted is what was
// archived (docs/reliability.md "Reliability" states the limit on FerretDB v1).
func (r *Rotator) deleteExactly(ctx context.Context, doc bson.Raw, set ...bson.E) (int64, error) {
	filter, err := exactFilter(doc, set...)
	if err != nil {
		return 0, err
	}
	res, err := r.keys.DeleteOne(ctx, filter)
	if err != nil {
		return 0, err
	}
	return res.DeletedCount, nil
}

// retiredField stamps an old key with the rotation about to delete it.
const retiredField = "retiredBy"

// without returns doc without field.
func without(doc bson.Raw, field string) bson.Raw {
	if _, err := doc.LookupErr(field); err != nil {
		return doc
	}
	elems, err := doc.Elements()
	if err != nil {
		return doc
	}
	d := bson.D{}
	for _, el := range elems {
		if el.Key() != field {
			d = append(d, bson.E{Key: el.Key(), Value: el.Value()})
		}
	}
	out, err := bson.Marshal(d)
	if err != nil {
		return doc
	}
	return out
}

// exactFilter matches doc only as it is, every top-level field named; set
// replaces (or adds) the given fields.
func exactFilter(doc bson.Raw, set ...bson.E) (bson.D, error) {
	elems, err := doc.Elements()
	if err != nil {
		return nil, err
	}
	filter := bson.D{}
	for _, el := range elems {
		k := el.Key()
		if strings.HasPrefix(k, "$") || strings.Contains(k, ".") {
			continue // cannot be named in a filter; _id and the rest still are
		}
		v := el.Value()
		if v.Type == bson.TypeArray {
			// An array in a filter also matches an element equal to it; $eq
			// on the whole value does not.
			filter = append(filter, bson.E{Key: k, Value: bson.M{"$eq": v}})
			continue
		}
		filter = append(filter, bson.E{Key: k, Value: v})
	}
	for _, e := range set {
		replaced := false
		for i := range filter {
			if filter[i].Key == e.Key {
				filter[i].Value, replaced = e.Value, true
			}
		}
		if !replaced {
			filter = append(filter, e)
		}
	}
	return filter, nil
}
