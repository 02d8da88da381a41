package notify

import (
	"context"
	"encoding/json"

	"github.com/jonboulle/clockwork"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// sweepEvery sweeps the claims on every tick of tk.
func (n *Notifier) sweepEvery(tk clockwork.Ticker) {
	defer n.wg.Done()
	defer tk.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-tk.Chan():
			n.sweep()
		}
	}
}

// sweep writes the outcomes this run could not record, counts the stale
// claims per pool (the stale-claims gauge) and resumes those an earlier
// run of this replica left: that run is over
// (see resumable), so the event would otherwise never be sent. Another
// replica's stale claim is only counted; `spendchecker verify` names it.
func (n *Notifier) sweep() {
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.StoreTimeout)
	defer cancel()
	if n.onSweep != nil {
		defer n.onSweep()
	}
	n.recordLate(ctx)
	now := n.clock.Now()
	stale := map[string]float64{}
	var resume []Claim
	err := eachClaimed(ctx, n.cfg.Store, func(c Claim, err error) {
		if err != nil {
			stale["unknown"]++
			return
		}
		if !c.Stale(now) {
			return
		}
		if n.resumable(c, now) {
			resume = append(resume, c)
			return
		}
		stale[poolLabel(c.Pool)]++
	})
	if err != nil {
		n.log.Warn("could not sweep the notification claims", "err", err)
		return
	}
	for _, c := range resume {
		if !n.resume(c) {
			stale[poolLabel(c.Pool)]++
		}
	}
	n.stale.Reset()
	for pool, v := range stale {
		n.stale.WithLabelValues(pool).Set(v)
	}
}

// resume queues the delivery of an earlier run's stale claim; false when
// it stays stale.
func (n *Notifier) resume(c Claim) bool {
	n.mu.Lock()
	queued := n.resuming[c.ID]
	n.mu.Unlock()
	if queued {
		return true // a delivery will take it over
	}
	var t *target
	for _, cand := range n.all {
		if cand.fp == c.Target {
			t = cand
		}
	}
	var ev Event
	err := json.Unmarshal([]byte(c.EventJSON), &ev)
	switch {
	case t == nil:
		n.giveUp(c, "the receiver is no longer configured")
		return true
	case c.EventJSON == "" || err != nil || !isClaimOf(c.ID, claimID(t, ev)):
		n.giveUp(c, "the claim does not hold its event")
		return true
	}
	n.mu.Lock()
	n.resuming[c.ID] = true
	n.mu.Unlock()
	if !n.enqueue(t, job{ev: ev, from: &c}) {
		n.resumed(c.ID)
		return false
	}
	n.log.Info("resuming a notification an earlier run of this replica left claimed", n.attrs(t, ev)...)
	return true
}

func (n *Notifier) resumed(id string) {
	n.mu.Lock()
	delete(n.resuming, id)
	n.mu.Unlock()
}

// giveUp records a stale claim of an earlier run that cannot be resumed as
// failed: the event is lost, and counted as such.
func (n *Notifier) giveUp(c Claim, why string) {
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.StoreTimeout)
	defer cancel()
	res, err := n.cfg.Store.UpdateOne(ctx, ownerFilter(c), bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: stateFailed}, {Key: "lastError", Value: "not resumed: " + why},
		{Key: "finishedAt", Value: n.clock.Now().UTC()}}}})
	if err != nil || res.MatchedCount == 0 {
		return // the next sweep sees it again
	}
	n.failed.WithLabelValues(poolLabel(c.Pool), c.Format).Inc()
	n.log.Error("notification failed; an earlier run of this replica left it claimed and it cannot be resumed",
		"pool", c.Pool, "event", c.Kind, "id", c.Event, "format", c.Format, "err", why)
}
