package notify

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// storeTimeout bounds one claim, re-arm or state write.
const storeTimeout = 10 * time.Second

func (n *Notifier) work(t *target) {
	defer n.wg.Done()
	for j := range t.queue {
		if j.rearm {
			n.rearm(t, j.ev)
			continue
		}
		n.deliver(t, j.ev)
	}
}

// claimID names the claim of one event for one target: every target gets
// each event once, whatever the other targets answer.
func claimID(t *target, ev Event) string { return ev.ID + "@" + t.fp }

// claim inserts the claim; a duplicate means the event was claimed before,
// by another replica or by this one before a restart (docs/operating.md,
// "Notifications": an insert checked by the unique _id index is the only
// atomic step every MongoDB-compatible store offers).
func (n *Notifier) claim(t *target, ev Event) (dup bool, err error) {
	ctx, cancel := context.WithTimeout(n.ctx, storeTimeout)
	defer cancel()
	_, err = n.cfg.Store.InsertOne(ctx, bson.D{
		{Key: "_id", Value: claimID(t, ev)}, {Key: "event", Value: ev.ID}, {Key: "kind", Value: string(ev.Kind)},
		{Key: "pool", Value: ev.Pool}, {Key: "target", Value: t.fp}, {Key: "format", Value: string(t.Format)},
		{Key: "instance", Value: n.cfg.Instance}, {Key: "claimedAt", Value: n.clock.Now().UTC()}, {Key: "state", Value: "claimed"},
	})
	if mongo.IsDuplicateKeyError(err) {
		return true, nil
	}
	return false, err
}

// record notes the outcome on the claim, for operators reading the
// collection; a lost race or a failure here is harmless.
func (n *Notifier) record(t *target, ev Event, state string, attempts int, lastErr string) {
	ctx, cancel := context.WithTimeout(n.ctx, storeTimeout)
	defer cancel()
	_, err := n.cfg.Store.UpdateOne(ctx, bson.D{{Key: "_id", Value: claimID(t, ev)}}, bson.D{{Key: "$set", Value: bson.D{
		{Key: "state", Value: state}, {Key: "attempts", Value: attempts}, {Key: "lastError", Value: lastErr},
		{Key: "finishedAt", Value: n.clock.Now().UTC()},
	}}})
	if err != nil {
		n.log.Debug("could not record the notification's outcome", "id", ev.ID, "err", err)
	}
}

// rearm deletes the claim of a low-backups crossing, so the next crossing
// is notified again. A delete by _id is atomic everywhere.
func (n *Notifier) rearm(t *target, ev Event) {
	if n.cfg.Store == nil {
		return
	}
	ctx, cancel := context.WithTimeout(n.ctx, storeTimeout)
	defer cancel()
	if _, err := n.cfg.Store.DeleteOne(ctx, bson.D{{Key: "_id", Value: claimID(t, ev)}}); err != nil {
		n.log.Warn("could not re-arm the low-backups notification; the next crossing may go unreported",
			"pool", ev.Pool, "url", RedactURL(t.URL), "err", err)
	}
}

func (n *Notifier) attrs(t *target, ev Event) []any {
	a := []any{"pool", ev.Pool, "event", string(ev.Kind), "id", ev.ID, "url", RedactURL(t.URL), "format", string(t.Format)}
	if ev.KeyID != "" {
		a = append(a, "key", ev.KeyID)
	}
	if ev.RotationID != "" {
		a = append(a, "rotation", ev.RotationID)
	}
	return a
}

func (n *Notifier) deliver(t *target, ev Event) {
	pool, format := poolLabel(ev.Pool), string(t.Format)
	log := n.log.With(n.attrs(t, ev)...)
	body, err := t.Format.Encode(ev)
	if err != nil {
		n.failed.WithLabelValues(pool, format).Inc()
		log.Error("cannot encode the notification", "err", err)
		return
	}
	inStore := false // a claim of ours is in the store
	claimed := n.cfg.Store == nil
	var lastErr string
	attempt := 1
	for ; ; attempt++ {
		var wait time.Duration
		if !claimed {
			dup, err := n.claim(t, ev)
			switch {
			case err == nil && dup:
				n.duplicate.WithLabelValues(pool, format).Inc()
				log.Debug("notification already claimed; not sent again")
				return
			case err == nil:
				claimed, inStore = true, true
			case ev.Kind == NoSuccessfulCycle:
				// The store may well be the outage: an unreachable
				// store must not silence the one event about it.
				claimed = true
				log.Warn("cannot claim the notification in the store; sending it without de-duplication", "err", err)
			default:
				lastErr = "claim in the store: " + err.Error()
			}
		}
		if claimed {
			status, ra, err := n.post(t, body)
			if err == nil {
				n.sent.WithLabelValues(pool, format).Inc()
				log.Info("notification sent", "attempt", attempt)
				if inStore {
					n.record(t, ev, "sent", attempt, "")
				}
				return
			}
			lastErr = err.Error()
			if status >= 400 && status < 500 && status != http.StatusRequestTimeout && status != http.StatusTooManyRequests {
				// The receiver refuses this request (a bad or revoked
				// webhook): asking again changes nothing.
				break
			}
			if ra > 0 {
				if ra > n.cfg.MaxRetryAfter {
					lastErr += fmt.Sprintf(" (Retry-After %s exceeds %s)", ra, n.cfg.MaxRetryAfter)
					break
				}
				wait = ra
			}
		}
		if attempt >= n.cfg.MaxAttempts {
			break
		}
		if wait == 0 {
			wait = n.backoff(attempt)
		}
		log.Debug("notification failed; retrying", "attempt", attempt, "retry_in", wait.String(), "err", lastErr)
		if n.onWait != nil {
			n.onWait(wait)
		}
		select {
		case <-n.clock.After(wait):
			continue
		case <-n.ctx.Done():
			lastErr += " (abandoned at shutdown)"
		}
		break
	}
	n.failed.WithLabelValues(pool, format).Inc()
	log.Error("notification failed; giving up", "attempts", attempt, "err", lastErr)
	if inStore {
		n.record(t, ev, "failed", attempt, lastErr)
	}
}

// backoff is the wait after the given failed attempt: exponential, capped,
// with "equal jitter" (half fixed, half random) so replicas and targets
// do not retry in step.
func (n *Notifier) backoff(attempt int) time.Duration {
	d := n.cfg.BaseBackoff
	for i := 1; i < attempt && d < n.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, n.cfg.MaxBackoff)
	return d/2 + n.cfg.Jitter(d/2)
}

// post sends one request within the per-request timeout. It returns the
// status (0 without an answer) and the Retry-After of a 429 or 503.
func (n *Notifier) post(t *target, body []byte) (status int, retryAfter time.Duration, err error) {
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.URL, bytes.NewReader(body))
	if err != nil {
		return 0, 0, fmt.Errorf("request: %s", redactErr(err))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "spendchecker")
	resp, err := n.cfg.HTTP.Do(req)
	if err != nil {
		return 0, 0, fmt.Errorf("%s", redactErr(err))
	}
	defer resp.Body.Close()
	// Slack answers errors as short text (invalid_payload, no_service):
	// worth a log line; the rest is read only to reuse the connection.
	head, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp.StatusCode, 0, nil
	}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), n.clock.Now())
	}
	msg := strings.TrimSpace(strings.ToValidUTF8(string(head), "?"))
	if msg != "" {
		msg = ": " + strconv.Quote(msg)
	}
	return resp.StatusCode, retryAfter, fmt.Errorf("HTTP %d%s", resp.StatusCode, msg)
}

// parseRetryAfter reads delay-seconds (Discord sends fractions too) or an
// HTTP-date; 0 when absent or unreadable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil {
		if s <= 0 || s > 1e6 {
			return 0
		}
		return time.Duration(s * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
