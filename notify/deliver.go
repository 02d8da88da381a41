package notify

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spendchecker/spendchecker/rotation/secret"
)

func (n *Notifier) work(t *target) {
	defer n.wg.Done()
	for j := range t.queue {
		if j.rearm {
			n.rearm(t, j.ev)
			continue
		}
		n.deliver(t, j.ev, j.from)
	}
}

// claimID names the claim of one event for one target: every target gets
// each event once, whatever the other targets answer.
func claimID(t *target, ev Event) string { return ev.ID + "@" + t.fp }

func (n *Notifier) attrs(t *target, ev Event) []any {
	a := []any{"pool", ev.Pool, "event", string(ev.Kind), "id", ev.ID, "url", secret.RedactURL(t.URL), "format", string(t.Format)}
	if ev.KeyID != "" {
		a = append(a, "key", ev.KeyID)
	}
	if ev.RotationID != "" {
		a = append(a, "rotation", ev.RotationID)
	}
	return a
}

// deliver claims the event for the target (or takes over from, a stale
// claim of an earlier run) and posts it, retrying, until the receiver
// accepts it, refuses it, or the attempts or the delivery's deadline run
// out; the outcome is recorded on the claim.
func (n *Notifier) deliver(t *target, ev Event, from *Claim) {
	if from != nil {
		defer n.resumed(from.ID)
	}
	pool, format := poolLabel(ev.Pool), string(t.Format)
	log := n.log.With(n.attrs(t, ev)...)
	body, err := t.Format.Encode(ev)
	if err != nil {
		n.failed.WithLabelValues(pool, format).Inc()
		log.Error("cannot encode the notification", "err", err)
		return
	}
	d := &delivery{owner: owner{n.cfg.Instance, n.run, n.deliveries.Add(1)}, deadline: n.clock.Now().Add(n.bound), from: from}
	inStore := false // a claim of this delivery's is in the store
	claimed := n.cfg.Store == nil
	// A request starts only when it, and the record of its outcome, end
	// before the deadline: after it nobody may still be posting.
	last := d.deadline.Add(-n.cfg.RequestTimeout - 2*n.cfg.StoreTimeout)
	var lastErr string
	abandoned := false
	attempt := 1
	for ; ; attempt++ {
		var wait time.Duration
		if !claimed {
			held, err := n.take(t, ev, d, attempt)
			switch {
			case err == nil && held != nil:
				n.duplicate.WithLabelValues(pool, format).Inc()
				log.Debug("notification already claimed; not sent again", "owner", held.Instance, "state", held.State)
				return
			case err == nil:
				claimed, inStore = true, true
			case ev.Kind == NoSuccessfulCycle:
				// The store may well be the outage: an unreachable
				// store must not silence the one event about it.
				claimed = true
				log.Warn("cannot claim the notification in the store; sending it without de-duplication", "err", err)
			default:
				lastErr = err.Error()
			}
		}
		if claimed {
			if n.clock.Now().After(last) {
				lastErr += " (delivery deadline reached)"
				break
			}
			status, ra, err := n.post(t, body)
			if err == nil {
				n.sent.WithLabelValues(pool, format).Inc()
				log.Info("notification sent", "attempt", attempt)
				if inStore {
					n.record(t, ev, d, stateSent, attempt, "")
				}
				return
			}
			lastErr = err.Error()
			if status >= 300 && status < 500 && status != http.StatusRequestTimeout && status != http.StatusTooManyRequests {
				// The receiver refuses this request (a bad or revoked
				// webhook) or sends it elsewhere (a redirect, never
				// followed): asking again changes nothing.
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
		if n.clock.Now().Add(wait).After(last) {
			lastErr += " (delivery deadline reached)"
			break
		}
		log.Debug("notification failed; retrying", "attempt", attempt, "retry_in", wait.String(), "err", lastErr)
		if n.onWait != nil {
			n.onWait(wait)
		}
		select {
		case <-n.clock.After(wait):
			continue
		case <-n.ctx.Done():
			abandoned = true
		}
		break
	}
	if abandoned && inStore {
		// Not failed: the claim says its owner stopped now, and a restart
		// of this replica resumes it (docs/operating.md, "Notifications").
		log.Warn("notification abandoned at shutdown; its claim is left for a restart of this replica to resume",
			"attempts", attempt, "err", lastErr)
		n.release(t, ev, d, attempt, lastErr+" (abandoned at shutdown)")
		return
	}
	if abandoned {
		lastErr += " (abandoned at shutdown)"
	}
	n.failed.WithLabelValues(pool, format).Inc()
	log.Error("notification failed; giving up", "attempts", attempt, "err", lastErr)
	if inStore {
		n.record(t, ev, d, stateFailed, attempt, lastErr)
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
		return 0, 0, fmt.Errorf("request: %s", secret.RedactURLError(err))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "spendchecker")
	resp, err := n.cfg.HTTP.Do(req)
	if err != nil {
		// The error may quote what the other end sent back, and a server
		// that echoes the request (not an HTTP server at all) sends the
		// request line: the path and query are stripped from it too.
		// A proxy setting that does not parse is quoted whole: its
		// password goes too.
		msg := secret.RedactURLParts(secret.RedactURLError(err), t.URL)
		return 0, 0, fmt.Errorf("%s", userinfo.ReplaceAllString(msg, "${1}xxxxx@"))
	}
	defer resp.Body.Close()
	// Slack answers errors as short text (invalid_payload, no_service):
	// worth a log line; the rest is read only to reuse the connection.
	head, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp.StatusCode, 0, nil
	}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		// Only the webhook URL itself delivers. The Location may hold a
		// secret as the URL does: scheme and host only.
		to := "without a Location"
		if loc, err := resp.Location(); err == nil {
			to = "to " + secret.RedactURL(loc.String())
		}
		return resp.StatusCode, 0, fmt.Errorf("HTTP %d: redirect %s not followed (the webhook URL must answer 2xx itself)", resp.StatusCode, to)
	}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), n.clock.Now())
	}
	// Scrubbed before it is cut: a secret cut in two would not be found.
	msg := []rune(strings.TrimSpace(strings.ToValidUTF8(secret.RedactURLParts(string(head), t.URL), "?")))
	if len(msg) > 200 {
		msg = msg[:200]
	}
	quoted := ""
	if len(msg) > 0 {
		quoted = ": " + strconv.Quote(string(msg))
	}
	return resp.StatusCode, retryAfter, fmt.Errorf("HTTP %d%s", resp.StatusCode, quoted)
}

// userinfo is the user information of any URL in a text, up to its last
// '@' (a password may hold a raw one).
var userinfo = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s"'` + "`" + `]*@`)

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
