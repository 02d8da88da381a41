// Package rotationtest holds, one folder per package, the tests of the
// rotator module's packages that need a store. They import the embedded
// store and the daemon's test support, which the rotator's own module must
// not require: `go mod tidy` in a consumer resolves the imports of its
// dependencies' tests, so the rotator's module graph would carry FerretDB,
// SQLite and mongo-driver v1 into the proxy's (rotation/consumer_test.go).
package rotationtest_test
