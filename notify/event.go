// Package notify posts the daemon's events (a key rotated, no backup left,
// backups running low, a key rejected, no successful cycle for a while) to
// webhooks: asynchronously, through a bounded queue per receiver, retried
// with backoff, de-duplicated across replicas through the store (docs/operating.md,
// "Notifications").
package notify

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spendchecker/spendchecker/rotation/secret"
)

// Kind names an event.
type Kind string

// The events (docs/operating.md, "Notifications").
const (
	Rotated           Kind = "rotated"
	NoBackup          Kind = "no_backup"
	BackupsLow        Kind = "backups_low"
	KeyRejected       Kind = "key_rejected"
	NoSuccessfulCycle Kind = "no_successful_cycle"
	// A pool that refills itself (docs/refill.md): keys created as
	// backups; the day's caps reached; a journaled creation that gave no
	// backup.
	BackupsRefilled Kind = "backups_refilled"
	RefillCapped    Kind = "refill_capped"
	RefillFailed    Kind = "refill_failed"
)

// Kinds lists every event kind.
var Kinds = []Kind{Rotated, NoBackup, BackupsLow, KeyRejected, NoSuccessfulCycle, BackupsRefilled, RefillCapped, RefillFailed}

// Event is one notification. It never carries a secret: keys appear as
// APIKeyMasked (secret.Mask), built by the constructors below.
type Event struct {
	// ID is stable for the event: the same event built by another replica
	// (or this one, a cycle later) has the same ID, which is how it is
	// sent once.
	ID           string    `json:"id"`
	Kind         Kind      `json:"event"`
	Pool         string    `json:"pool,omitempty"`
	Time         time.Time `json:"time"`
	Instance     string    `json:"instance,omitempty"`
	KeyID        string    `json:"keyId,omitempty"`
	APIKeyMasked string    `json:"apiKeyMasked,omitempty"`
	NewKeyID     string    `json:"newKeyId,omitempty"`
	RotationID   string    `json:"rotationId,omitempty"`
	Reason       string    `json:"reason,omitempty"`
	Spend        *float64  `json:"spend,omitempty"`
	Threshold    *float64  `json:"threshold,omitempty"`
	BackupsLeft  *int64    `json:"backupsLeft,omitempty"`
	BackupsBelow *int64    `json:"backupsBelow,omitempty"`
	// LastSuccess is when the last successful cycle ended (or the daemon
	// started): no_successful_cycle only.
	LastSuccess *time.Time `json:"lastSuccess,omitempty"`
	// Refill events: the keys created, the journal slot, the key's name
	// upstream, and the day's caps.
	KeysCreated  *int     `json:"keysCreated,omitempty"`
	Slot         string   `json:"slot,omitempty"`
	UpstreamName string   `json:"upstreamName,omitempty"`
	Day          string   `json:"day,omitempty"`
	MaxKeys      *int     `json:"maxKeysPerDay,omitempty"`
	MaxUSD       *float64 `json:"maxUsdPerDay,omitempty"`
	USDCreated   *float64 `json:"usdCreated,omitempty"`
	// Message is the one-line text the slack and discord formats post.
	Message string `json:"message"`
}

func ptr[T any](v T) *T { return &v }

func money(v float64) string { return "$" + strconv.FormatFloat(v, 'f', 2, 64) }

// KeyRotation is what the checker knows of a rotation that happened.
type KeyRotation struct {
	Pool, KeyID, NewKeyID, RotationID, Reason string
	Secret                                    string // masked here, never sent
	Spend, Threshold                          float64
}

// RotatedEvent: a key was rotated. Its ID is the rotation id, which the
// rotator makes unique per rotation.
func RotatedEvent(r KeyRotation, at time.Time) Event {
	return Event{
		ID: "rotated/" + r.RotationID, Kind: Rotated, Pool: r.Pool, Time: at.UTC(),
		KeyID: r.KeyID, APIKeyMasked: secret.Mask(r.Secret), NewKeyID: r.NewKeyID, RotationID: r.RotationID,
		Reason: r.Reason, Spend: ptr(r.Spend), Threshold: ptr(r.Threshold),
		Message: fmt.Sprintf("pool %s: key %s (%s) rotated to %s: %s, spend %s, threshold %s",
			r.Pool, r.KeyID, secret.Mask(r.Secret), r.NewKeyID, r.Reason, money(r.Spend), money(r.Threshold)),
	}
}

// RequestedRotationEvent: a key was rotated on request — by the proxy
// through POST /v1/rotate or by an operator with `spendchecker rotate` — not
// by a cycle, so there is no spend reading and no secret to mask. Its ID is
// the rotation id, as for RotatedEvent: one rotation notifies once however
// it was asked for.
func RequestedRotationEvent(pool, keyID, newKeyID, rotationID, reason, via string, at time.Time) Event {
	return Event{
		ID: "rotated/" + rotationID, Kind: Rotated, Pool: pool, Time: at.UTC(),
		KeyID: keyID, NewKeyID: newKeyID, RotationID: rotationID, Reason: reason,
		Message: fmt.Sprintf("pool %s: key %s rotated to %s on request (%s, via %s)", pool, keyID, newKeyID, reason, via),
	}
}

// NoBackupEvent: a key is over its threshold (or rejected) but no backup
// is left, so it stays in service. Once per key document: the ID names the
// key and a fingerprint of its secret, so the cycles that find it again
// while it waits for a backup do not repeat it.
func NoBackupEvent(r KeyRotation, at time.Time) Event {
	return Event{
		ID: "no_backup/" + r.Pool + "/" + r.KeyID + "/" + secret.Fingerprint(r.Secret), Kind: NoBackup, Pool: r.Pool, Time: at.UTC(),
		KeyID: r.KeyID, APIKeyMasked: secret.Mask(r.Secret), Reason: r.Reason, Spend: ptr(r.Spend), Threshold: ptr(r.Threshold),
		Message: fmt.Sprintf("pool %s: key %s (%s) should rotate (%s, spend %s, threshold %s) but no backup key is left; it stays in service",
			r.Pool, r.KeyID, secret.Mask(r.Secret), r.Reason, money(r.Spend), money(r.Threshold)),
	}
}

// KeyRejectedEvent: the upstream rejects a key (401/403, confirmed on a
// second check). Once per key document, as NoBackupEvent.
func KeyRejectedEvent(pool, keyID, apiKey string, at time.Time) Event {
	return Event{
		ID: "key_rejected/" + pool + "/" + keyID + "/" + secret.Fingerprint(apiKey), Kind: KeyRejected, Pool: pool, Time: at.UTC(),
		KeyID: keyID, APIKeyMasked: secret.Mask(apiKey), Reason: "unauthorized",
		Message: fmt.Sprintf("pool %s: the upstream rejects key %s (%s)", pool, keyID, secret.Mask(apiKey)),
	}
}

// backupsLowEvent: the pool's unused backups fell below the threshold. One
// ID per pool: the claim is deleted when the count rises back (re-armed).
func backupsLowEvent(pool string, left, below int64, at time.Time) Event {
	return Event{
		ID: "backups_low/" + pool, Kind: BackupsLow, Pool: pool, Time: at.UTC(),
		BackupsLeft: ptr(left), BackupsBelow: ptr(below),
		Message: fmt.Sprintf("pool %s: %d backup keys left (below %d)", pool, left, below),
	}
}

// noCycleEvent: no cycle of this instance has succeeded since last.
func noCycleEvent(instance string, last, at time.Time) Event {
	return Event{
		ID:   "no_successful_cycle/" + instance + "/" + last.UTC().Format(time.RFC3339Nano),
		Kind: NoSuccessfulCycle, Time: at.UTC(), Instance: instance, LastSuccess: ptr(last.UTC()),
		Message: fmt.Sprintf("no successful cycle on %s for %s (since %s)", instance,
			at.Sub(last).Round(time.Second), last.UTC().Format(time.RFC3339)),
	}
}

// BackupsRefilledEvent: a pass created keys and added them as backups.
// Its ID names the pass's first journal slot.
func BackupsRefilledEvent(pool, firstSlot string, created int, left int64, at time.Time) Event {
	return Event{
		ID: "backups_refilled/" + firstSlot, Kind: BackupsRefilled, Pool: pool, Time: at.UTC(),
		KeysCreated: ptr(created), BackupsLeft: ptr(left), Slot: firstSlot,
		Message: fmt.Sprintf("pool %s: %d backup keys created upstream (%d unused now)", pool, created, left),
	}
}

// RefillCappedEvent: the pool wants backups but today's caps are reached.
// Once per pool and UTC day.
func RefillCappedEvent(pool, day string, keys int, usd float64, maxKeys int, maxUSD float64, at time.Time) Event {
	return Event{
		ID: "refill_capped/" + pool + "/" + day, Kind: RefillCapped, Pool: pool, Time: at.UTC(), Day: day,
		KeysCreated: ptr(keys), USDCreated: ptr(usd), MaxKeys: ptr(maxKeys), MaxUSD: ptr(maxUSD),
		Message: fmt.Sprintf("pool %s: no more backup keys created today (%s): %d keys, %s of limits, caps %d keys and %s",
			pool, day, keys, money(usd), maxKeys, money(maxUSD)),
	}
}

// RefillFailedEvent: a journaled creation gave no backup (never created,
// or created with its secret lost and disabled upstream). Once per slot.
func RefillFailedEvent(pool, slot, name, reason string, at time.Time) Event {
	return Event{
		ID: "refill_failed/" + slot, Kind: RefillFailed, Pool: pool, Time: at.UTC(), Slot: slot, UpstreamName: name, Reason: reason,
		Message: fmt.Sprintf("pool %s: backup key %s gave no backup: %s", pool, name, reason),
	}
}

// slackEscape escapes the three characters Slack's mrkdwn reserves.
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
