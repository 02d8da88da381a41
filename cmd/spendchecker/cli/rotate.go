package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/notify"
	"github.com/spendchecker/spendchecker/rotation"
	"github.com/spendchecker/spendchecker/rotation/history"
)

// rotate rotates one key by hand through the shared rotator. With
// --dry-run it reads what the real run reads and answers and exits as it
// would, writing nothing.
func (a *app) rotate(ctx context.Context, out io.Writer) error {
	if err := a.prepare(ctx); err != nil {
		return partial("%w", err)
	}
	keyID := a.cfg.Args[0]
	dry := ""
	if a.cfg.DryRun {
		dry = "dry run: "
	}
	// The key is looked for in every configured pool (--pool narrows them to
	// one); it rotates in the one that holds it, and an id held by several
	// pools is refused rather than guessed.
	if rs := a.chk.Rotators(); len(rs) > 1 {
		var holders []string
		for _, r := range rs {
			n, err := a.db.Collection(r.Pool().KeysCollection).CountDocuments(ctx, bson.M{"_id": keyID})
			if err != nil {
				return partial("pool %s: %w", r.Pool().Name, err)
			}
			if n > 0 {
				holders = append(holders, r.Pool().Name)
			}
		}
		if len(holders) > 1 {
			return usage("key %s is in pools %s; name one with --pool; nothing rotated", keyID, strings.Join(holders, " and "))
		}
	}
	for i, r := range a.chk.Rotators() {
		var (
			res rotation.Result
			err error
		)
		if a.cfg.DryRun {
			res, err = r.Preview(ctx, keyID)
		} else {
			res, err = r.Rotate(ctx, keyID, a.cfg.Reason, rotation.WithObservation(history.Observation{
				Threshold: a.cfg.Pools[i].Threshold, Provider: a.cfg.Pools[i].Provider, Instance: a.cfg.Instance,
			}))
		}
		switch {
		case err != nil && a.cfg.DryRun:
			return partial("pool %s: %w", r.Pool().Name, err)
		case err != nil:
			return partial("pool %s: rotation of %s stopped part-way: %w (run `spendchecker recover`)", r.Pool().Name, keyID, err)
		}
		switch res.Outcome {
		case rotation.NotFound:
			continue
		case rotation.Rotated:
			if a.cfg.DryRun {
				fmt.Fprintf(out, "dry run: pool %s: would rotate %s -> %s (reason %s); nothing written\n", r.Pool().Name, keyID, res.NewKeyID, a.cfg.Reason)
				return nil
			}
			fmt.Fprintf(out, "pool %s: rotated %s -> %s (rotation %s)\n", r.Pool().Name, keyID, res.NewKeyID, res.RotationID)
			a.notifier.Notify(notify.RequestedRotationEvent(r.Pool().Name, keyID, res.NewKeyID, res.RotationID, a.cfg.Reason, "spendchecker rotate", time.Now()))
			// The event goes out before the process exits, as with --once.
			a.closeNotifier(notifyOnExit)
			return nil
		case rotation.AlreadyRotated, rotation.InProgress:
			newKey := res.NewKeyID
			if newKey == "" {
				newKey = "not yet in the pool" // a rotation under way, before its insert
			}
			fmt.Fprintf(out, "%spool %s: %s was %s (new key %s)\n", dry, r.Pool().Name, keyID, strings.ReplaceAll(res.Outcome.String(), "_", " "), newKey)
			return nil
		case rotation.NoBackup:
			return partial("%spool %s: no backup key left; %s unchanged", dry, r.Pool().Name, keyID)
		}
	}
	return partial("%skey %s not found in any pool", dry, keyID)
}
