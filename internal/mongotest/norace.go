//go:build !race

package mongotest

const raceDetector = false
