//go:build race

package mqttdproc

const raceEnabled = true
