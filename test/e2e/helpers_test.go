//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// run runs a command and fails the spec if it fails.
func run(name string, args ...string) string {
	GinkgoHelper()
	out, err := tryRun(name, args...)
	Expect(err).NotTo(HaveOccurred(), "%s %s:\n%s", name, strings.Join(args, " "), out)
	return out
}

// tryRun runs a command and returns its combined output.
func tryRun(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// kubectlApply applies manifest and returns kubectl's output and error.
func kubectlApply(manifest string) (string, error) {
	cmd := exec.Command(kubectlBin, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func imageRepo(img string) string {
	if i := strings.LastIndex(img, ":"); i > strings.LastIndex(img, "/") {
		return img[:i]
	}
	return img
}

func imageTag(img string) string {
	if i := strings.LastIndex(img, ":"); i > strings.LastIndex(img, "/") {
		return img[i+1:]
	}
	return "latest"
}

var forwardingRE = regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+)`)

// portForward forwards a random local port to port of target (pod/NAME or svc/NAME)
// until the spec ends, and returns the local address.
func portForward(namespace, target string, port int) string {
	GinkgoHelper()
	cmd := exec.Command(kubectlBin, "port-forward", "-n", namespace, "--address", "127.0.0.1", target, fmt.Sprintf(":%d", port))
	stdout, err := cmd.StdoutPipe()
	Expect(err).NotTo(HaveOccurred())
	Expect(cmd.Start()).To(Succeed())
	DeferCleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := forwardingRE.FindStringSubmatch(sc.Text()); m != nil {
				found <- "127.0.0.1:" + m[1]
			}
		}
	}()
	select {
	case addr := <-found:
		return addr
	case <-time.After(time.Minute):
		Fail("kubectl port-forward " + target + " did not start")
		return ""
	}
}

// credentials are a username and password for mqttClient.
type credentials struct{ user, password string }

// usersSecretCredentials reads the user the operator generated for cluster name, the
// way `make demo` tells users to (the keys username and password of <name>-users).
func usersSecretCredentials(ns, name string) credentials {
	GinkgoHelper()
	read := func(key string) string {
		enc := run(kubectlBin, "get", "secret", "-n", ns, name+"-users", "-o", "jsonpath={.data."+key+"}")
		dec, err := base64.StdEncoding.DecodeString(enc)
		Expect(err).NotTo(HaveOccurred())
		Expect(dec).NotTo(BeEmpty(), "Secret %s-users key %s", name, key)
		return string(dec)
	}
	return credentials{read("username"), read("password")}
}

// mqttConnect tries once to connect a Paho MQTT 3.1.1 client to addr (with creds,
// when given), disconnects it again and returns the connect error.
func mqttConnect(addr, id string, creds *credentials) error {
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetCleanSession(true).
		SetConnectTimeout(10 * time.Second).SetAutoReconnect(false)
	if creds != nil {
		opts.SetUsername(creds.user).SetPassword(creds.password)
	}
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(15 * time.Second) {
		return fmt.Errorf("connect timed out")
	}
	if tok.Error() == nil {
		c.Disconnect(100)
	}
	return tok.Error()
}

// mqttClient connects a Paho MQTT 3.1.1 client to addr, with creds when given;
// messages from its subscriptions arrive on the returned channel.
func mqttClient(addr, id string, creds ...credentials) (mqtt.Client, chan mqtt.Message) {
	GinkgoHelper()
	msgs := make(chan mqtt.Message, 1000)
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetCleanSession(true).
		SetConnectTimeout(10 * time.Second).SetAutoReconnect(false).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { msgs <- m })
	for _, cr := range creds {
		opts.SetUsername(cr.user).SetPassword(cr.password)
	}
	c := mqtt.NewClient(opts)
	// A Service or a forwarded port can refuse connections for a moment after the
	// pods turn Ready: retry with a deadline.
	Eventually(func() error {
		tok := c.Connect()
		if !tok.WaitTimeout(15 * time.Second) {
			return fmt.Errorf("connect timed out")
		}
		return tok.Error()
	}).WithTimeout(time.Minute).Should(Succeed(), "connecting to %s", addr)
	DeferCleanup(func() { c.Disconnect(100) })
	return c, msgs
}

// await waits for an MQTT token.
func await(tok mqtt.Token) {
	GinkgoHelper()
	Expect(tok.WaitTimeout(30*time.Second)).To(BeTrue(), "MQTT operation timed out")
	Expect(tok.Error()).NotTo(HaveOccurred())
}
