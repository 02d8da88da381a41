package lease

import (
	"context"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

func (l *Lease) stepDown(why string, err error) {
	l.mu.Lock()
	if !l.held {
		l.mu.Unlock()
		return
	}
	epoch := l.epoch
	l.dropLocked()
	l.mu.Unlock()
	l.log.Warn("stepped down", "epoch", epoch, "reason", why, "err", err)
	l.notify(false, epoch)
}

func (l *Lease) dropLocked() {
	l.held = false
	if l.cancel != nil {
		l.cancel()
	}
	if l.deadline != nil {
		l.deadline.Stop()
	}
}

// Release gives the lease up so a standby takes over within one retry
// period. Only this instance's own epoch is marked released. It uses its own
// timeout, so it works after the caller's context has ended.
func (l *Lease) Release(ctx context.Context) error {
	l.mu.Lock()
	if !l.held {
		l.mu.Unlock()
		return nil
	}
	epoch := l.epoch
	l.dropLocked()
	l.mu.Unlock()
	l.notify(false, epoch)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	now := l.clock.Now().UTC()
	_, err := l.coll.UpdateOne(ctx, bson.M{"_id": docID(l.cfg.Name, epoch), "holder": l.cfg.Instance},
		bson.M{"$set": bson.M{"released": true, "releasedAt": now}})
	if err != nil {
		l.log.Warn("lease release failed; a standby takes over after the lease duration", "epoch", epoch, "err", err)
		return fmt.Errorf("release lease: %w", err)
	}
	l.log.Info("lease released", "epoch", epoch)
	return nil
}

func (l *Lease) notify(leader bool, epoch int64) {
	if l.cfg.OnChange != nil {
		l.cfg.OnChange(leader, epoch)
	}
}
