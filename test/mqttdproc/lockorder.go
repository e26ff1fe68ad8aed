//go:build lockorder

package mqttdproc

const lockorderEnabled = true
