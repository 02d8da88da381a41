// Package proxyv1 holds only an example: a proxy whose own MongoDB client is
// mongo-driver v1 adopting the rotator (package proxyrotate) beside it. It
// lives in the daemon's module, not the rotator's, so that the rotator's
// go.mod never names mongo-driver v1 (a consumer's v1 would move with it).
package proxyv1
