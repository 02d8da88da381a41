package checker

import (
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/spendchecker/spendchecker/rotation"
)

// servable matches the keys the serving proxy may hand out at now, as its
// IsAvailable decides: a healthy key, or any key but an exhausted one whose
// cooldownUntil has passed (a rate-limited key is back in service then, so
// it is polled too; docs/proxy.md, "Running next to the proxy").
func servable(now time.Time) bson.M {
	return bson.M{"$or": bson.A{
		bson.M{rotation.FieldStatus: rotation.StatusHealthy},
		bson.M{rotation.FieldStatus: bson.M{"$ne": rotation.StatusExhausted}, rotation.FieldCooldownUntil: bson.M{"$lte": now}},
	}}
}
