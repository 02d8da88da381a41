package rotation

import (
	"errors"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// The proxy's documents (docs/design.md, "MongoDB schema"): the field names of its
// keys, backups and bindings, defined here once for the rotator, the
// checker, the CLI and the tests.
const (
	// Key documents (the keys collection).
	FieldID            = "_id"
	FieldAPIKey        = "apiKey"
	FieldStatus        = "status"
	FieldCreatedAt     = "createdAt"
	FieldReplacedKey   = "replacedKey" // the key a rotation replaced
	FieldTokensUsed    = "tokensUsed"
	FieldRequestsCount = "requestsCount"
	// FieldSpendAccount is the key's optional upstream account: keys of one
	// account share one balance reading (docs/providers.md, "Balance
	// providers"), set by the operator or the proxy.
	FieldSpendAccount  = "spendAccount"
	FieldTotalSpend    = "totalSpend" // USD, read by the proxy's admin pages
	FieldCooldownUntil = "cooldownUntil"
	// FieldUpstreamKeyID is the key's optional id in a batch provider's
	// report (docs/providers.md, "Batch reports"), set by the operator or the proxy.
	FieldUpstreamKeyID = "upstreamKeyId"

	// Backup documents (the backups collection) also have _id, apiKey and
	// createdAt.
	FieldIsUsed    = "isUsed"
	FieldActivated = "activated"
	FieldUsedFor   = "usedFor" // the key the backup replaced
	FieldUsedAt    = "usedAt"

	// Binding documents (the bindings collection) name their key in the
	// pool's BindingKeyField.
	FieldIsActive = "isActive"
)

// carriedFields are the optional fields a backup hands on to the key it
// becomes, when it has them (a clean rotation and a recovered one alike):
// ids that name the key elsewhere and must survive its rotation in.
var carriedFields = []string{FieldUpstreamKeyID, FieldSpendAccount}

// carried returns the carriedFields present in a backup document, in
// carriedFields' order.
func carried(backup bson.Raw) bson.D {
	var out bson.D
	for _, f := range carriedFields {
		if v, err := backup.LookupErr(f); err == nil {
			out = append(out, bson.E{Key: f, Value: v})
		}
	}
	return out
}

// Key statuses the proxy serves or parks.
const (
	StatusHealthy   = "healthy"
	StatusExhausted = "exhausted"
)

// Key is a key document as the rotator and the checker read it.
type Key struct {
	ID          string
	APIKey      string
	Status      string
	TotalSpend  float64
	ReplacedKey string
	Pending     string // the rotation that inserted it, until it is activated
	CreatedAt   time.Time
	// UpstreamKeyID is FieldUpstreamKeyID, "" when absent.
	UpstreamKeyID string
}

// DecodeKey reads a key document leniently: a key without a string _id or
// apiKey cannot be checked or rotated; any other field of the wrong type is
// taken as absent.
func DecodeKey(doc bson.Raw) (Key, error) {
	var k Key
	var ok bool
	if k.ID, ok = doc.Lookup(FieldID).StringValueOK(); !ok {
		return k, errors.New("_id is not a string")
	}
	if k.APIKey, ok = doc.Lookup(FieldAPIKey).StringValueOK(); !ok || k.APIKey == "" {
		return k, errors.New("apiKey missing or not a string")
	}
	k.Status, _ = doc.Lookup(FieldStatus).StringValueOK()
	k.ReplacedKey, _ = doc.Lookup(FieldReplacedKey).StringValueOK()
	k.Pending, _ = doc.Lookup(pendingField).StringValueOK()
	k.UpstreamKeyID, _ = doc.Lookup(FieldUpstreamKeyID).StringValueOK()
	if v, ok := doc.Lookup(FieldCreatedAt).TimeOK(); ok {
		k.CreatedAt = v.UTC()
	}
	if v, err := doc.LookupErr(FieldTotalSpend); err == nil {
		if f, ok := v.AsFloat64OK(); ok {
			k.TotalSpend = f
		}
	}
	return k, nil
}
