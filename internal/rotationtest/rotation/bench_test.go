package rotation_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/spendchecker/spendchecker/internal/mongotest"
	"github.com/spendchecker/spendchecker/rotation"
)

// countingDB returns a database handle whose client counts the commands it
// sends: one command is one round trip.
func countingDB(b *testing.B, mdb *mongotest.DB) (*mongo.Database, *atomic.Int64) {
	var n atomic.Int64
	c := mdb.NewClient(b, options.Client().SetMonitor(&event.CommandMonitor{
		Started: func(context.Context, *event.CommandStartedEvent) { n.Add(1) },
	}))
	return c.Database(mdb.Name), &n
}

// seedsRotate is the step sequence of the rotators this project replaces:
// find, claim with findAndModify, archive, delete, insert, move bindings.
// Nothing in it decides a race, so racing callers each rotate the key.
func seedsRotate(ctx context.Context, db *mongo.Database, keyID string) (bool, error) {
	p := testPool
	old, err := db.Collection(p.KeysCollection).FindOne(ctx, bson.M{"_id": keyID}).Raw()
	if err != nil {
		return false, nil
	}
	var backup struct {
		ID     string `bson:"_id"`
		APIKey string `bson:"apiKey"`
	}
	err = db.Collection(p.BackupsCollection).FindOneAndUpdate(ctx, bson.M{"isUsed": false},
		bson.M{"$set": bson.M{"isUsed": true, "usedFor": keyID, "usedAt": time.Now()}}).Decode(&backup)
	if err != nil {
		return false, nil
	}
	if _, err := db.Collection(rotation.ArchiveCollection).InsertOne(ctx, bson.M{"sourceId": keyID, "document": old}); err != nil {
		return false, err
	}
	if _, err := db.Collection(p.KeysCollection).DeleteOne(ctx, bson.M{"_id": keyID}); err != nil {
		return false, err
	}
	newID := fmt.Sprintf("k-%s-%d", backup.ID, time.Now().UnixNano())
	if _, err := db.Collection(p.KeysCollection).InsertOne(ctx, bson.M{"_id": newID, "apiKey": backup.APIKey, "status": "healthy"}); err != nil {
		return false, err
	}
	_, err = db.Collection(p.BindingsCollection).UpdateMany(ctx, bson.M{p.BindingKeyField: keyID}, bson.M{"$set": bson.M{p.BindingKeyField: newID}})
	return true, err
}

func resetPool(b *testing.B, db *mongo.Database, keys, backups int) {
	b.Helper()
	for _, c := range []string{testPool.KeysCollection, testPool.BackupsCollection, testPool.BindingsCollection,
		testPool.HistoryCollection, rotation.JournalCollection, rotation.ArchiveCollection} {
		if _, err := db.Collection(c).DeleteMany(context.Background(), bson.M{}); err != nil {
			b.Fatal(err)
		}
	}
	seed(b, db, keys, backups, 3)
}

// BenchmarkRotate measures one rotation against the seeds' sequence on the
// same store: commands sent and round trips waited one after another
// (commands sent together count once), to the caller's answer and in
// total, and the latency of each. Variants "early" answer once the new key
// is live and its backup marked (Config.NoLegacyRotator); "rtt=50ms" put
// 50 ms before every command (a remote MongoDB; run those with a small
// -benchtime).
//
//	go test -run '^$' -bench 'BenchmarkRotate$' -benchtime 50x ./internal/rotationtest/rotation
func BenchmarkRotate(b *testing.B) {
	ctx := context.Background()
	type variant struct {
		name   string
		early  bool
		rtt    time.Duration
		rotate func(b *testing.B, e *benchEnv, key string)
	}
	ours := func(b *testing.B, e *benchEnv, key string) { mustRotate(b, e.r, key) }
	kinds := []struct {
		name   string
		rotate func(b *testing.B, e *benchEnv, key string)
	}{
		{"ours-cold", func(b *testing.B, e *benchEnv, key string) {
			r, _ := rotation.New(e.counted, testPool, rotation.Config{Owner: "bench", NoLegacyRotator: e.early})
			mustRotate(b, r, key)
			e.wait = r
		}},
		{"ours-warm", ours},
		// The steady state: every key but the first generation was brought
		// in by a rotation and carries replacedKey, so its rotation also
		// looks for an unfinished rotation that brought it in (settleArrival).
		{"ours-warm-replaced", func(b *testing.B, e *benchEnv, key string) {
			b.StopTimer()
			if _, err := e.plain.Collection(testPool.KeysCollection).UpdateOne(context.Background(),
				bson.M{"_id": key}, bson.M{"$set": bson.M{"replacedKey": "gen0-" + key}}); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			mustRotate(b, e.r, key)
		}},
		// The checker's path: it streamed the key document before deciding.
		{"ours-checker", func(b *testing.B, e *benchEnv, key string) {
			b.StopTimer()
			doc, err := e.plain.Collection(testPool.KeysCollection).FindOne(context.Background(), bson.M{"_id": key}).Raw()
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			mustRotate(b, e.r, key, rotation.WithKeyDocument(doc))
		}},
	}
	seeds := func(b *testing.B, e *benchEnv, key string) {
		if ok, err := seedsRotate(ctx, e.counted, key); !ok || err != nil {
			b.Fatalf("seeds rotate %s: %v %v", key, ok, err)
		}
	}
	variants := []variant{{name: "seeds", rotate: seeds}}
	for _, k := range kinds {
		variants = append(variants, variant{name: k.name, rotate: k.rotate}, variant{name: k.name + "/early", early: true, rotate: k.rotate})
	}
	rtt := 50 * time.Millisecond
	variants = append(variants,
		variant{name: "seeds/rtt=50ms", rtt: rtt, rotate: seeds},
		variant{name: "ours-warm/rtt=50ms", rtt: rtt, rotate: ours},
		variant{name: "ours-warm/early/rtt=50ms", rtt: rtt, early: true, rotate: ours})
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			mdb := mongotest.New(b)
			m := newTripMeter(0)
			var db *mongo.Database
			if v.rtt > 0 {
				proxy := mdb.Proxy(b)
				proxy.SetLatency(v.rtt)
				c := mdb.NewClient(b, options.Client().ApplyURI(proxy.URI()).SetMonitor(m.monitor()))
				db = c.Database(mdb.Name)
			} else {
				db = meteredDB(b, mdb, m)
			}
			resetPool(b, mdb.Database, b.N, b.N)
			r, _ := rotation.New(db, testPool, rotation.Config{Owner: "bench", NoLegacyRotator: v.early})
			var answer, total time.Duration
			var cmds, seq, answerCmds, answerSeq int
			b.ResetTimer()
			for i := range b.N {
				m.reset()
				e := &benchEnv{counted: db, plain: mdb.Database, r: r, early: v.early}
				t0 := time.Now()
				v.rotate(b, e, fmt.Sprintf("key-%03d", i))
				answer += time.Since(t0)
				if err := r.Wait(ctx); err != nil {
					b.Fatal(err)
				}
				if e.wait != nil {
					if err := e.wait.Wait(ctx); err != nil {
						b.Fatal(err)
					}
				}
				total += time.Since(t0)
				c, s, ac, as, _ := m.read()
				cmds, seq, answerCmds, answerSeq = cmds+c, seq+s, answerCmds+ac, answerSeq+as
			}
			b.StopTimer()
			n := float64(b.N)
			ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) / n }
			b.ReportMetric(float64(cmds)/n, "roundtrips/op")
			b.ReportMetric(float64(answerCmds)/n, "answer-cmds/op")
			b.ReportMetric(float64(answerSeq)/n, "answer-seq/op")
			b.ReportMetric(float64(seq)/n, "total-seq/op")
			b.ReportMetric(ms(answer), "answer-ms/op")
			b.ReportMetric(ms(total), "total-ms/op")
		})
	}
}

type benchEnv struct {
	counted, plain *mongo.Database
	r              *rotation.Rotator
	early          bool
	// wait is a rotator of the variant's own, whose completion is waited for.
	wait *rotation.Rotator
}

func mustRotate(b *testing.B, r *rotation.Rotator, key string, opts ...rotation.RotateOption) {
	res, err := r.Rotate(context.Background(), key, "proactive_threshold_9.99", opts...)
	if err != nil || res.Outcome != rotation.Rotated {
		b.Fatalf("rotate %s: %+v %v", key, res, err)
	}
}

// BenchmarkRace100 has 100 goroutines rotate the same key and counts
// correctness violations: extra keys in the pool and extra backups burnt.
//
//	go test -run '^$' -bench BenchmarkRace100 -benchtime 5x ./rotation
func BenchmarkRace100(b *testing.B) {
	ctx := context.Background()
	for _, name := range []string{"seeds", "ours"} {
		b.Run(name, func(b *testing.B) {
			mdb := mongotest.New(b)
			var violations int64
			for range b.N {
				b.StopTimer()
				resetPool(b, mdb.Database, 10, 100)
				b.StartTimer()
				var wg sync.WaitGroup
				start := make(chan struct{})
				for g := range 100 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						<-start
						if name == "seeds" {
							_, _ = seedsRotate(ctx, mdb.Database, "key-005")
							return
						}
						r, _ := rotation.New(mdb.Database, testPool, rotation.Config{Owner: fmt.Sprint(g)})
						if _, err := r.Rotate(ctx, "key-005", "manual"); err != nil {
							b.Error(err)
						}
					}()
				}
				close(start)
				wg.Wait()
				b.StopTimer()
				keys := count(b, mdb.Database, testPool.KeysCollection, bson.M{})
				used := count(b, mdb.Database, testPool.BackupsCollection, bson.M{"isUsed": true})
				violations += abs(keys-10) + abs(used-1)
				b.StartTimer()
			}
			b.ReportMetric(float64(violations)/float64(b.N), "violations/op")
		})
	}
}

func abs(n int64) int64 {
	if n < 0 {
		return -n
	}
	return n
}

// BenchmarkRecoverIdle measures the recovery pass every cycle starts with,
// on a pool with nothing to recover: what the late-insert sweep and the
// repair of backups live as keys cost when there is nothing to do.
//
//	go test -run '^$' -bench BenchmarkRecoverIdle -benchtime 20x ./rotation
func BenchmarkRecoverIdle(b *testing.B) {
	for _, size := range []struct{ keys, backups int }{{100, 50}, {2000, 500}} {
		b.Run(fmt.Sprintf("keys=%d,backups=%d", size.keys, size.backups), func(b *testing.B) {
			mdb := mongotest.New(b)
			db, n := countingDB(b, mdb)
			seed(b, mdb.Database, size.keys, size.backups, 1)
			r, _ := rotation.New(db, testPool, rotation.Config{Owner: "bench"})
			n.Store(0)
			b.ResetTimer()
			for range b.N {
				if _, err := r.Recover(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n.Load())/float64(b.N), "roundtrips/op")
		})
	}
}

// callerTrips is the context key under which a caller's command counter
// travels: the command monitor sees each command's context.
type callerTrips struct{}

// BenchmarkRotateBlocking measures how long Rotate holds the request that
// called it: per op, 41 callers (two proxies' 20 goroutines and the CLI)
// race one key. It reports the winner's latency, the others' median and
// worst, and the most commands any caller sent (some go together:
// BenchmarkRotate counts the round trips one after another).
//
//	go test -run '^$' -bench BenchmarkRotateBlocking -benchtime 20x ./internal/rotationtest/rotation
func BenchmarkRotateBlocking(b *testing.B) {
	const callers = 41
	for _, n := range []int{1, callers} {
		b.Run(fmt.Sprintf("callers=%d", n), func(b *testing.B) {
			mdb := mongotest.New(b)
			c := mdb.NewClient(b, options.Client().SetMonitor(&event.CommandMonitor{
				Started: func(ctx context.Context, _ *event.CommandStartedEvent) {
					if p, ok := ctx.Value(callerTrips{}).(*atomic.Int64); ok {
						p.Add(1)
					}
				},
			}))
			db := c.Database(mdb.Name)
			r, _ := rotation.New(db, testPool, rotation.Config{Owner: "bench"})
			var winner, others []time.Duration
			var maxTrips int64
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				resetPool(b, mdb.Database, 1, 2)
				b.StartTimer()
				var wg sync.WaitGroup
				var mu sync.Mutex
				start := make(chan struct{})
				for range n {
					wg.Add(1)
					go func() {
						defer wg.Done()
						var trips atomic.Int64
						ctx := context.WithValue(context.Background(), callerTrips{}, &trips)
						<-start
						t0 := time.Now()
						res, err := r.Rotate(ctx, "key-000", "budget_exceeded")
						d := time.Since(t0)
						if err != nil {
							b.Errorf("rotate: %v", err)
						}
						mu.Lock()
						defer mu.Unlock()
						maxTrips = max(maxTrips, trips.Load())
						if res.Outcome == rotation.Rotated {
							winner = append(winner, d)
						} else {
							others = append(others, d)
						}
					}()
				}
				close(start)
				wg.Wait()
			}
			b.StopTimer()
			ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
			slices.Sort(winner)
			slices.Sort(others)
			if len(winner) > 0 {
				b.ReportMetric(ms(winner[len(winner)/2]), "winner-ms-p50")
				b.ReportMetric(ms(winner[len(winner)-1]), "winner-ms-max")
			}
			if len(others) > 0 {
				b.ReportMetric(ms(others[len(others)/2]), "others-ms-p50")
				b.ReportMetric(ms(others[len(others)-1]), "others-ms-max")
			}
			b.ReportMetric(float64(maxTrips), "max-commands/caller")
		})
	}
}
