package statuspage

import (
	"context"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/checker"
	"github.com/spendchecker/spendchecker/rotation"
)

// keyFields is the projection of a key read for status: the fields
// keyView reads, and no others (a proxy may keep much more in a key).
var keyFields = bson.M{rotation.FieldID: 1, rotation.FieldAPIKey: 1, rotation.FieldStatus: 1, fieldCheckError: 1,
	rotation.FieldBudgetUser: 1, fieldSpend: 1, fieldBudget: 1, fieldLastCheck: 1, fieldNextCheck: 1,
	fieldRemaining: 1, fieldCurrency: 1, fieldRate: 1, checker.FieldReadingOf: 1}

// scanBatch bounds one cursor batch: what a read holds at once.
const scanBatch = 500

// ScanKeys reads every key of a pool, in _id order unless unsorted,
// handing each to each as it is read: one cursor batch is held at a time.
// A field of an unexpected type reads as unknown, never as an error.
func ScanKeys(ctx context.Context, coll *mongo.Collection, threshold float64, minRemaining *float64, unsorted bool, each func(KeyView)) error {
	o := options.Find().SetProjection(keyFields).SetBatchSize(scanBatch)
	if !unsorted {
		o.SetSort(bson.D{{Key: rotation.FieldID, Value: 1}})
	}
	return scan(ctx, coll, bson.M{}, o, threshold, minRemaining, each)
}

func scan(ctx context.Context, coll *mongo.Collection, filter bson.M, o *options.FindOptionsBuilder, threshold float64, minRemaining *float64, each func(KeyView)) error {
	cur, err := coll.Find(ctx, filter, o)
	if err != nil {
		return fmt.Errorf("read keys: %w", err)
	}
	defer cur.Close(context.WithoutCancel(ctx))
	for cur.Next(ctx) {
		each(keyView(cur.Current, threshold, minRemaining))
	}
	if err := cur.Err(); err != nil {
		return fmt.Errorf("read keys: %w", err)
	}
	return nil
}

// ScanPage reads up to limit keys of a pool with an _id above after (all
// from the first when after is empty), in _id order: one page of the
// full list, an index range on MongoDB.
func ScanPage(ctx context.Context, coll *mongo.Collection, threshold float64, minRemaining *float64, after string, limit int, each func(KeyView)) error {
	filter := bson.M{}
	if after != "" {
		filter[rotation.FieldID] = bson.M{"$gt": after}
	}
	o := options.Find().SetProjection(keyFields).SetSort(bson.D{{Key: rotation.FieldID, Value: 1}}).SetLimit(int64(limit)).SetBatchSize(int32(min(limit, scanBatch)))
	return scan(ctx, coll, filter, o, threshold, minRemaining, each)
}
