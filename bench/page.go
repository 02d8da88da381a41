package main

import (
	"context"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/checker"
	"github.com/spendchecker/spendchecker/internal/fixture"
	"github.com/spendchecker/spendchecker/rotation"
)

// seedSpentKeys writes n keys as the daemon leaves them after a cycle: a
// spend spread over the threshold's range, a rate, a last and next check,
// and every 1,000th rejected.
func seedSpentKeys(ctx context.Context, db *mongo.Database, n int) error {
	now := time.Now().UTC()
	for lo := 0; lo < n; lo += 1000 {
		f := fixture.Pool{CreatedAt: now}
		for i := lo; i < min(n, lo+1000); i++ {
			fields := bson.M{rotation.FieldTokensUsed: int64(0),
				rotation.FieldTotalSpend: float64((i*7919)%10000) / 1000, // $0.00–$9.99, scattered
				checker.FieldLastCheck:   now.Add(-time.Minute), checker.FieldNextCheck: now.Add(10 * time.Minute),
				checker.FieldRate: 0.0001 * float64(1+i%50)}
			if i%1000 == 999 {
				fields[checker.FieldCheckError] = "unauthorized"
			}
			f.Keys = append(f.Keys, fixture.Key{ID: fmt.Sprintf("key-%07d", i), Secret: secretOf(i), Fields: fields})
		}
		if err := fixture.Write(ctx, db, pool, f); err != nil {
			return fmt.Errorf("seed: %w", err)
		}
	}
	return nil
}

func pageBench(ctx context.Context, s settings) error {
	ch, err := startChild(0, nil)
	if err != nil {
		return err
	}
	defer ch.stop()
	db := ch.client.Database("page")
	start := time.Now()
	if err := seedSpentKeys(ctx, db, s.pageKeys); err != nil {
		return err
	}
	fmt.Printf("seeded %d keys in %s\n", s.pageKeys, time.Since(start).Round(time.Millisecond))
	if err := ch.indexIDs(db.Name()); err != nil {
		return err
	}
	mid := fmt.Sprintf("key-%07d", s.pageKeys/2)
	for _, q := range []struct {
		name   string
		filter bson.M
		o      *options.FindOptionsBuilder
	}{
		{"limit", bson.M{}, options.Find().SetLimit(500)},
		{"skip+limit", bson.M{}, options.Find().SetSkip(int64(s.pageKeys/2)).SetLimit(500)},
		{"eq", bson.M{"_id": mid}, options.Find()},
	} {
		start := time.Now()
		cur, err := db.Collection(pool.KeysCollection).Find(ctx, q.filter, q.o)
		if err != nil {
			return err
		}
		n := 0
		for cur.Next(ctx) {
			n++
		}
		fmt.Printf("%s: %d in %s\n", q.name, n, time.Since(start).Round(time.Millisecond))
	}
	return nil
}
