// Package secret owns how a secret is shown. An API key, an admin key or a
// token appears only as its mask (first 5 and last 4 characters) or its
// fingerprint; a text that may carry one (an error, an upstream's answer, a
// webhook URL, a MongoDB URI) is redacted here before it reaches a log
// line, an error message, a notification or the status page. The daemon
// and the rotator both go through it, so a key reads the same everywhere.
// It uses the standard library only: the rotator's module, which holds it,
// takes nothing beyond mongo-driver v2.
package secret

import (
	"crypto/sha256"
	"encoding/hex"
)

// Mask shows the first 5 and last 4 characters of a secret, never more; a
// secret under 16 characters shows none ("****"): 9 of 15 would be most
// of it.
func Mask(s string) string {
	if len(s) < 16 {
		return "****"
	}
	return s[:5] + "..." + s[len(s)-4:]
}

// Fingerprint is a short, stable, non-reversible identifier of a secret:
// notifications name a key's secret by it in their event ids.
func Fingerprint(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:4])
}
