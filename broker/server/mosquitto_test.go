package server_test

import (
	"bytes"
	"context"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/server"
)

// Interoperability with Debian's mosquitto-clients (mosquitto_sub, mosquitto_pub).
//
// WebSocket is not covered: Debian's mosquitto-clients 2.0.11 is built without websocket
// support (its -L accepts only mqtt:// and mqtts://; ws:// gives "unsupported URL
// scheme"), so the WebSocket listener is tested with Paho in v311_test.go instead.

// mosquittoVersions are the protocol versions the command line clients are run with.
var mosquittoVersions = []string{"mqttv31", "mqttv311", "mqttv5"}

// mosquittoTools returns the paths of mosquitto_sub and mosquitto_pub. Missing tools
// fail the test: they are a prerequisite, installed by `make test`.
func mosquittoTools(t *testing.T) (sub, pub string) {
	t.Helper()
	var paths [2]string
	for i, name := range []string{"mosquitto_sub", "mosquitto_pub"} {
		p, err := exec.LookPath(name)
		if err != nil {
			t.Fatalf("%s not found in PATH: these tests need Debian's mosquitto-clients; "+
				"run `make test-deps` (or `sudo apt-get install -y mosquitto-clients`): %v", name, err)
		}
		paths[i] = p
	}
	return paths[0], paths[1]
}

// mosquittoRun runs a mosquitto client to completion and returns its standard output.
func mosquittoRun(ctx context.Context, t *testing.T, path string, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout: %s\nstderr: %s", path, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// TestMosquittoClients has mosquitto_sub receive what mosquitto_pub publishes at QoS 1
// and 2 and retained, and a later mosquitto_sub receive the retained message, for each
// protocol version.
func TestMosquittoClients(t *testing.T) {
	t.Parallel()
	subBin, pubBin := mosquittoTools(t)
	for _, version := range mosquittoVersions {
		t.Run(version, func(t *testing.T) {
			t.Parallel()
			b := startBroker(t, server.Options{})
			host, port, err := net.SplitHostPort(b.TCPAddr)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			common := []string{"-h", host, "-p", port, "-V", version}

			var stdout, stderr bytes.Buffer
			sub := exec.CommandContext(ctx, subBin, append(common, "-i", "mosq-sub",
				"-t", "/computer/part/+", "-q", "1", "-v", "-C", "3", "-W", "10")...)
			sub.Stdout, sub.Stderr = &stdout, &stderr
			if err := sub.Start(); err != nil {
				t.Fatalf("start mosquitto_sub: %v", err)
			}
			var subErr error
			exited := make(chan struct{})
			go func() {
				subErr = sub.Wait()
				close(exited)
			}()
			defer func() {
				cancel() // kills mosquitto_sub if the test failed before it finished
				<-exited
			}()
			eventually(t, 10*time.Second, "mosquitto_sub's subscription", func() bool {
				return b.Stats().Subscriptions == 1
			})

			mosquittoRun(ctx, t, pubBin, append(common, "-i", "mosq-pub-1", "-t", "/computer/part/cpu", "-q", "1", "-m", "intel cpu")...)
			mosquittoRun(ctx, t, pubBin, append(common, "-i", "mosq-pub-2", "-t", "/computer/part/gpu", "-q", "2", "-m", "nvidia gpu")...)
			mosquittoRun(ctx, t, pubBin, append(common, "-i", "mosq-pub-3", "-t", "/computer/part/disk", "-q", "1", "-r", "-m", "ssd 1TB")...)

			<-exited // after 3 messages, or its -W timeout, or ctx's
			if subErr != nil {
				t.Fatalf("mosquitto_sub (-C 3): %v\nstdout: %s\nstderr: %s", subErr, stdout.String(), stderr.String())
			}
			want := "/computer/part/cpu intel cpu\n/computer/part/gpu nvidia gpu\n/computer/part/disk ssd 1TB\n"
			if got := stdout.String(); got != want {
				t.Fatalf("mosquitto_sub printed\n%q\nwant\n%q", got, want)
			}

			// A later subscriber gets the retained message, flagged as retained, at
			// min(QoS 1, subscription QoS 2) (format: retain flag, QoS, topic, payload).
			got := mosquittoRun(ctx, t, subBin, append(common, "-i", "mosq-late",
				"-t", "/computer/part/+", "-q", "2", "-C", "1", "-W", "10", "-F", "%r %q %t %p")...)
			if want := "1 1 /computer/part/disk ssd 1TB\n"; got != want {
				t.Fatalf("late mosquitto_sub printed %q, want %q", got, want)
			}
		})
	}
}
