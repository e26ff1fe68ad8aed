// Package mqttdproc is what process-level tests share about mqttd: the binary they
// run and the log of each process.
package mqttdproc

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Package is mqttd's import path.
const Package = "github.com/mqtt-operator/mqtt-operator/broker/cmd/mqttd"

// Build returns the mqttd binary to test: MQTTD_TEST_BIN when set (a binary built
// elsewhere, another version), otherwise mqttd built into dir. A test binary built
// with -race builds mqttd with -race too, so a data race inside a broker process
// fails its test (the race detector exits the process with code 66); one built with
// -tags lockorder (make test-lockorder) builds mqttd with it, so a lock-order inversion
// inside a broker process fails its test the same way (exit code 66).
func Build(dir string) (string, error) {
	if bin := os.Getenv("MQTTD_TEST_BIN"); bin != "" {
		return bin, nil
	}
	bin := filepath.Join(dir, "mqttd")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	if lockorderEnabled {
		args = append(args, "-tags", "lockorder")
	}
	out, err := exec.Command("go", append(args, Package)...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("building mqttd: %w\n%s", err, out)
	}
	return bin, nil
}
