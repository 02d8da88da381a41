package cli

import (
	"context"
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
	"strings"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// heldAsNonString reports whether a key of coll has keyID as the text of an
// _id that is not a string (a number, an ObjectId, a UUID, anything else):
// the rotator rotates string ids only, and answering not_found for such a
// key would tell the proxy to drop a live key (docs/proxy.md, "Way 2").
func heldAsNonString(ctx context.Context, coll *mongo.Collection, keyID string) (bool, error) {
	// The usual forms by the _id index first.
	if c := idCandidates(keyID); len(c) > 0 {
		n, err := coll.CountDocuments(ctx, bson.M{"_id": bson.M{"$in": c}})
		if err != nil || n > 0 {
			return n > 0, err
		}
	}
	// Then any other type, by its text: only a key the rotator could not
	// find comes here.
	cur, err := coll.Find(ctx, bson.M{"_id": bson.M{"$not": bson.M{"$type": "string"}}}, options.Find().SetProjection(bson.M{"_id": 1}))
	if err != nil {
		return false, fmt.Errorf("look for a non-string _id %s: %w", keyID, err)
	}
	defer cur.Close(context.WithoutCancel(ctx))
	for cur.Next(ctx) {
		if idText(cur.Current.Lookup("_id"), keyID) {
			return true, nil
		}
	}
	return false, cur.Err()
}

// idCandidates are the non-string _id values keyID may be the text of. A
// number matches whatever its stored type (32- or 64-bit, double).
func idCandidates(keyID string) []any {
	var c []any
	if oid, err := bson.ObjectIDFromHex(keyID); err == nil {
		c = append(c, oid)
	}
	if n, err := strconv.ParseInt(keyID, 10, 64); err == nil {
		c = append(c, n)
	} else if f, err := strconv.ParseFloat(keyID, 64); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
		c = append(c, f)
	}
	if u, ok := parseUUID(keyID); ok {
		c = append(c, bson.Binary{Subtype: bson.TypeBinaryUUID, Data: u}, bson.Binary{Subtype: bson.TypeBinaryUUIDOld, Data: u})
	}
	return c
}

// idText reports whether keyID is a text of the _id v.
func idText(v bson.RawValue, keyID string) bool {
	switch v.Type {
	case bson.TypeInt32, bson.TypeInt64:
		n, _ := v.AsInt64OK()
		m, err := strconv.ParseInt(keyID, 10, 64)
		return err == nil && n == m
	case bson.TypeDouble:
		f, err := strconv.ParseFloat(keyID, 64)
		return err == nil && v.Double() == f
	case bson.TypeObjectID:
		return strings.EqualFold(v.ObjectID().Hex(), keyID)
	case bson.TypeBinary:
		sub, b := v.Binary()
		u, isUUID := parseUUID(keyID)
		return (isUUID && (sub == bson.TypeBinaryUUID || sub == bson.TypeBinaryUUIDOld) && string(u) == string(b)) ||
			strings.EqualFold(hex.EncodeToString(b), keyID)
	case bson.TypeBoolean:
		return strconv.FormatBool(v.Boolean()) == keyID
	case bson.TypeSymbol:
		return v.Symbol() == keyID
	}
	return v.String() == keyID
}

// parseUUID reads a UUID in its 8-4-4-4-12 hex form.
func parseUUID(s string) ([]byte, bool) {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return nil, false
	}
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	return b, err == nil && len(b) == 16
}
