package checker

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/notify"
	"github.com/spendchecker/spendchecker/rotation"
	"github.com/spendchecker/spendchecker/rotation/history"
	"github.com/spendchecker/spendchecker/spend"
)

// CheckUserBudgetShared is the check error (FieldCheckError) of a key
// refused for its owner's personal budget and held, not rotated: another
// key of the pool names the same LiteLLM user, or the pool's user-budget
// setting is hold (docs/providers.md).
const CheckUserBudgetShared = "user_budget_shared"

// rotateKey rotates the key. send, when not nil, writes back the
// observation of a key that stays in service for want of a backup.
func (c *Checker) rotateKey(ctx context.Context, p *poolRun, k keyInfo, doc bson.Raw, res spend.Result, reason string, at time.Time, log *slog.Logger, count func(func(*PoolSummary)), send func(observation)) {
	count(func(s *PoolSummary) { s.Over++ })
	if c.cfg.DryRun {
		log.Info("would rotate (dry run)", "spend", res.Spend, "threshold", p.Threshold, "reason", reason, "budgetUser", res.BudgetUser)
		return
	}
	if ctx.Err() != nil {
		return
	}
	opts := []rotation.RotateOption{rotation.WithKeyDocument(doc), rotation.WithObservation(history.Observation{
		Spend: res.Spend, Threshold: p.Threshold, Budget: res.Budget, CheckedAt: at, Remaining: res.Remaining, Currency: res.Currency,
		Provider: p.Provider.Name(), Instance: c.cfg.Instance, LeaseEpoch: c.cfg.Epoch(),
	})}
	if res.BudgetUser != "" {
		opts = append(opts, rotation.WithBudgetUser(res.BudgetUser))
	}
	r, err := p.rot.Rotate(ctx, k.id, reason, opts...)
	switch {
	case err != nil:
		count(func(s *PoolSummary) { s.RotateErrors++ })
		log.Error("rotation failed; recovery will finish it", "err", err)
	case r.Outcome == rotation.Rotated:
		// The rotator logs the rotation, with the spend and threshold.
		count(func(s *PoolSummary) {
			s.Rotated++
			s.Events = append(s.Events, notify.RotatedEvent(notify.KeyRotation{Pool: p.rot.Pool().Name, KeyID: k.id,
				NewKeyID: r.NewKeyID, RotationID: r.RotationID, Reason: reason, Secret: k.secret, Spend: res.Spend, Threshold: p.Threshold}, at))
		})
	case r.Outcome == rotation.NoBackup:
		count(func(s *PoolSummary) {
			s.NoBackup++
			s.Events = append(s.Events, notify.NoBackupEvent(notify.KeyRotation{Pool: p.rot.Pool().Name, KeyID: k.id,
				Reason: reason, Secret: k.secret, Spend: res.Spend, Threshold: p.Threshold}, at))
			s.Errors = append(s.Errors, fmt.Sprintf("key %s is over threshold (%s) but no backup key is left", k.id, reason))
		})
		log.Error("no backup key left; key stays in service over threshold", "spend", res.Spend, "threshold", p.Threshold)
		if send != nil {
			// The key stays in service: what it spent is still worth showing.
			o := c.plan(p, k, res, at)
			o.clearRejected = k.rejectionStored()
			send(o)
		}
	case r.Outcome == rotation.Held:
		count(func(s *PoolSummary) { s.Held++ })
		log.Warn("refused for its owner's budget, which another key of the pool shares: held, not rotated",
			"budgetUser", res.BudgetUser, "userBudget", p.UserBudget.String(), "reason", reason)
		if send != nil {
			// Planned on its last known spend (the refusal's figures are
			// the user's), and recorded for status.
			o := c.planKept(p, k, at)
			o.checkErr = CheckUserBudgetShared
			send(o)
		}
	default:
		count(func(s *PoolSummary) { s.AlreadyRotated++ })
		log.Info("already rotated elsewhere", "outcome", r.Outcome.String())
	}
}
