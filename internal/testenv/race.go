//go:build race

package testenv

// raceEnabled: the tests run with -race, and so does the exporter they build.
const raceEnabled = true
