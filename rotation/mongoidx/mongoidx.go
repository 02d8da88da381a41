// Package mongoidx creates the indexes that are missing, by name. Creating an
// index that already exists is a no-op on MongoDB but drops the connection
// on FerretDB v1, and listing first leaves operators' own indexes alone.
//
// It also says which store errors are transient, and retries them with
// backoff: replicas and one-shot commands started at once on a fresh
// database race to create the same indexes (FerretDB v1 drops the
// connection when two do), and a primary may be stepping down.
package mongoidx

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/topology"
)

// Index is one named index.
type Index struct {
	Name   string
	Keys   bson.D
	Unique bool
}

// ensureAttempts bounds Ensure's own retries of transient errors (about
// 3 s in all); callers with a deadline of their own wrap it in Retry.
const ensureAttempts = 6

// Ensure creates the indexes missing from coll, retrying transient errors a
// few times. Another process creating the same indexes meanwhile is fine.
func Ensure(ctx context.Context, coll *mongo.Collection, idx ...Index) error {
	attempts := 0
	return Retry(ctx, func(ctx context.Context) error {
		attempts++
		err := ensureOnce(ctx, coll, idx)
		if err != nil && attempts >= ensureAttempts {
			return Permanent(err)
		}
		return err
	})
}

func ensureOnce(ctx context.Context, coll *mongo.Collection, idx []Index) error {
	missing, err := missingOf(ctx, coll, idx)
	if err != nil || len(missing) == 0 {
		return err
	}
	if _, err := coll.Indexes().CreateMany(ctx, missing); err != nil {
		// Another process may have created them meanwhile.
		if again, lerr := missingOf(ctx, coll, idx); lerr == nil && len(again) == 0 {
			return nil
		}
		return fmt.Errorf("create indexes on %s: %w", coll.Name(), err)
	}
	return nil
}

func missingOf(ctx context.Context, coll *mongo.Collection, idx []Index) ([]mongo.IndexModel, error) {
	specs, err := Specs(ctx, coll)
	if err != nil {
		return nil, err
	}
	have := map[string]bson.Raw{}
	for _, s := range specs {
		if n, ok := s.Lookup("name").StringValueOK(); ok {
			have[n] = s
		}
	}
	var missing []mongo.IndexModel
	for _, i := range idx {
		if spec, ok := have[i.Name]; ok {
			// Right name, wrong index (recreated by hand, restored without
			// its options): correctness may rest on it being unique, so
			// never take it for the one needed (docs/reliability.md "Reliability").
			if err := i.matches(spec); err != nil {
				return nil, Permanent(fmt.Errorf("index %s on %s: %w; drop it (db.%s.dropIndex(%q)) and start again, it is then created as needed",
					i.Name, coll.Name(), err, coll.Name(), i.Name))
			}
			continue
		}
		o := options.Index().SetName(i.Name)
		if i.Unique {
			o.SetUnique(true)
		}
		missing = append(missing, mongo.IndexModel{Keys: i.Keys, Options: o})
	}
	return missing, nil
}

// matches reports how spec, an existing index of i's name, differs from i.
func (i Index) matches(spec bson.Raw) error {
	keys, _ := spec.Lookup("key").DocumentOK()
	elems, err := keys.Elements()
	same := err == nil && len(elems) == len(i.Keys)
	for n := 0; same && n < len(elems); n++ {
		same = elems[n].Key() == i.Keys[n].Key && sameKeyValue(elems[n].Value(), i.Keys[n].Value)
	}
	unique, _ := spec.Lookup("unique").BooleanOK()
	if f, ok := spec.Lookup("unique").AsFloat64OK(); ok {
		unique = f != 0
	}
	if !same || unique != i.Unique {
		want, _ := bson.MarshalExtJSON(i.Keys, false, false)
		return fmt.Errorf("has keys %s unique %v, want keys %s unique %v", keys, unique, want, i.Unique)
	}
	return nil
}

func sameKeyValue(have bson.RawValue, want any) bool {
	if s, ok := want.(string); ok {
		got, ok := have.StringValueOK()
		return ok && got == s
	}
	var w float64
	switch v := want.(type) {
	case int:
		w = float64(v)
	case int32:
		w = float64(v)
	case int64:
		w = float64(v)
	case float64:
		w = v
	default:
		return false
	}
	got, ok := have.AsFloat64OK()
	return ok && got == w
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

// Transient reports a store error worth retrying: the network (a
// connection closed, refused or timed out, no server selectable), a
// primary stepping down or not yet elected, or an error the server labels
// retryable. A cancelled or expired context is not, except the driver's
// own server selection timeout (it wraps a deadline of its own): the next
// selection may find the store, and Retry stops at its caller's deadline.
func Transient(err error) bool {
	if err == nil {
		return false
	}
	var perm permanent
	if errors.As(err, &perm) {
		return false
	}
	var sse topology.ServerSelectionError
	if errors.As(err, &sse) && !errors.Is(err, context.Canceled) {
		return true
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	if mongo.IsNetworkError(err) || mongo.IsTimeout(err) || errors.Is(err, mongo.ErrClientDisconnected) {
		return true
	}
	var le mongo.LabeledError
	if errors.As(err, &le) && (le.HasErrorLabel("RetryableWriteError") || le.HasErrorLabel("TransientTransactionError") ||
		le.HasErrorLabel("NetworkError")) {
		return true
	}
	var se mongo.ServerError
	if errors.As(err, &se) {
		// NotWritablePrimary, NotPrimaryNoSecondaryOk, NotPrimaryOrSecondary,
		// PrimarySteppedDown, InterruptedDueToReplStateChange,
		// ShutdownInProgress, InterruptedAtShutdown, HostUnreachable,
		// HostNotFound, NetworkTimeout, SocketException.
		for _, c := range []int{10107, 13435, 13436, 189, 11602, 91, 11600, 6, 7, 89, 9001} {
			if se.HasErrorCode(c) {
				return true
			}
		}
	}
	return false
}

type permanent struct{ error }

func (p permanent) Unwrap() error { return p.error }

// Permanent marks err as not worth retrying (Retry returns it at once).
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanent{err}
}

// Retry runs f until it succeeds, fails with an error that is not
// Transient, or ctx ends; it waits 100 ms, then twice as long each time up
// to 2 s, with jitter. It returns f's last error (unwrapped from Permanent),
// or ctx's error wrapped around it.
func Retry(ctx context.Context, f func(context.Context) error) error {
	wait := 100 * time.Millisecond
	for {
		err := f(ctx)
		if err == nil {
			return nil
		}
		var perm permanent
		if errors.As(err, &perm) {
			return perm.error
		}
		if !Transient(err) {
			return err
		}
		t := time.NewTimer(wait/2 + rand.N(wait))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (gave up: %w)", err, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, 2*time.Second)
	}
}
