package cli

import (
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// idText: which texts name a non-string _id, exactly (a 64-bit id is not
// the double next to it).
func TestIDText(t *testing.T) {
	raw := func(v any) bson.RawValue {
		t.Helper()
		doc, err := bson.Marshal(bson.M{"_id": v})
		if err != nil {
			t.Fatal(err)
		}
		return bson.Raw(doc).Lookup("_id")
	}
	oid, _ := bson.ObjectIDFromHex("65f0a1b2c3d4e5f601234567")
	uuid := bson.Binary{Subtype: bson.TypeBinaryUUID, Data: []byte{0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0}}
	for _, tt := range []struct {
		id   any
		text string
		want bool
	}{
		{int32(42), "42", true},
		{int32(42), "42.0", false},
		{int64(9007199254740993), "9007199254740993", true},
		{int64(9007199254740993), "9007199254740992", false},
		{42.0, "42", true},
		{42.5, "42.5", true},
		{42.5, "42", false},
		{oid, "65F0A1B2C3D4E5F601234567", true},
		{oid, "65f0a1b2c3d4e5f601234568", false},
		{uuid, "12345678-9abc-def0-1234-56789abcdef0", true},
		{uuid, "123456789abcdef0123456789abcdef0", true},
		{uuid, "12345678-9abc-def0-1234-56789abcdef1", false},
		{true, "true", true},
		{true, "1", false},
		{time.UnixMilli(0).UTC(), "nope", false},
	} {
		if got := idText(raw(tt.id), tt.text); got != tt.want {
			t.Errorf("idText(%v, %q) = %v, want %v", tt.id, tt.text, got, tt.want)
		}
	}
}
