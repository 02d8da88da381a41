//go:build race

package mongotest

// raceDetector says the test binary is built with -race: the store then runs
// in a process of its own, uninstrumented (see process.go).
const raceDetector = true
