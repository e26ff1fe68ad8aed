//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// clusterManifest is an MQTTCluster in namespace ns using the e2e image.
func clusterManifest(ns, name string, replicas int, extraSpec string) string {
	return fmt.Sprintf(`apiVersion: broker.mqtt-operator.io/v1alpha1
kind: MQTTCluster
metadata:
  name: %s
  namespace: %s
spec:
  replicas: %d
  image: %s
  imagePullPolicy: IfNotPresent
  storage:
    size: 64Mi
%s`, name, ns, replicas, mqttdImage, extraSpec)
}

// newNamespace creates a namespace for one spec and deletes it afterwards.
func newNamespace(prefix string) string {
	ns := fmt.Sprintf("%s-%d", prefix, GinkgoRandomSeed()%100000+int64(GinkgoParallelProcess()))
	run(kubectlBin, "create", "namespace", ns)
	DeferCleanup(func() { _, _ = tryRun(kubectlBin, "delete", "namespace", ns, "--wait=false") })
	return ns
}

var _ = Describe("MQTTCluster on a real cluster", Ordered, func() {
	It("rejects a bad MQTTCluster with a clear message", func() {
		ns := newNamespace("bad")
		out, err := kubectlApply(clusterManifest(ns, "bad", 3, `  listeners:
  - name: mqtt
    port: 1883
  - name: ws
    port: 1883
`))
		Expect(err).To(HaveOccurred(), "the API server accepted duplicate ports:\n%s", out)
		Expect(out).To(ContainSubstring("listener ports must be unique"))
	})

	It("installs a 3-node cluster that becomes Ready and serves MQTT on every pod", func() {
		ns := newNamespace("install")
		// As the demo's sample: anonymous clients refused, the users Secret generated.
		out, err := kubectlApply(clusterManifest(ns, "demo", 3, "  auth:\n    allowAnonymous: false\n"))
		Expect(err).NotTo(HaveOccurred(), out)
		run(kubectlBin, "wait", "-n", ns, "mqc/demo", "--for=condition=Ready", "--timeout=5m")
		Expect(run(kubectlBin, "get", "-n", ns, "mqc", "demo")).To(MatchRegexp(`demo\s+True\s+3/3\s+AsExpected`))
		// Each node read the generated cookie from its Secret and opened the cluster port.
		for i := range 3 {
			Expect(run(kubectlBin, "logs", "-n", ns, fmt.Sprintf("demo-%d", i))).To(
				MatchRegexp(`"msg":"listening","listener":"cluster","address":"[^"]*:4370","node":"demo-%d"`, i))
		}

		// Ready means the operator bootstrapped demo-0 and joined the others.
		Expect(run(kubectlBin, "get", "-n", ns, "mqc", "demo", "-o", "jsonpath={.status.clusterID}")).NotTo(BeEmpty())
		Expect(run(kubectlBin, "get", "-n", ns, "mqc", "demo", "-o", `jsonpath={range .status.members[*]}{.node}={.joined}/{.storeState} {end}`)).
			To(Equal("demo-0=true/member demo-1=true/member demo-2=true/member "))
		// One join at a time, in ordinal order (eventTime has microseconds).
		var joins []string
		for _, line := range strings.Split(run(kubectlBin, "get", "events.events.k8s.io", "-n", ns, "--sort-by=.eventTime",
			"-o", `jsonpath={range .items[*]}{.reason} {.note}{"\n"}{end}`), "\n") {
			if note, ok := strings.CutPrefix(line, "Joined "); ok {
				joins = append(joins, note)
			}
		}
		Expect(joins).To(HaveExactElements(HavePrefix("demo-1 "), HavePrefix("demo-2 ")), "the Joined events in time order")

		// The credentials the demo prints (from the generated Secret) work through the
		// client Service; without them, or with a wrong password, every pod refuses
		// (3.1.1 CONNACK 0x05 not authorized, 0x04 bad user name or password).
		creds := usersSecretCredentials(ns, "demo")
		svc := portForward(ns, "svc/demo", 1883)
		pub, _ := mqttClient(svc, "e2e-pub", creds)
		for i := range 3 {
			addr := portForward(ns, fmt.Sprintf("pod/demo-%d", i), 1883)
			err := mqttConnect(addr, fmt.Sprintf("e2e-anon-%d", i), nil)
			Expect(err).To(MatchError(ContainSubstring("not Authorized")), "anonymous client on demo-%d", i)
			err = mqttConnect(addr, fmt.Sprintf("e2e-wrong-%d", i), &credentials{creds.user, creds.password + "x"})
			Expect(err).To(MatchError(ContainSubstring("bad user name or password")), "wrong password on demo-%d", i)
		}
		err = mqttConnect(svc, "e2e-anon-svc", nil)
		Expect(err).To(MatchError(ContainSubstring("not Authorized")), "anonymous client through the Service")

		// A client publishing through the client Service reaches a subscriber on every
		// pod: the pods route to each other.
		subs := make([]chan mqtt.Message, 3)
		for i := range 3 {
			sub, msgs := mqttClient(portForward(ns, fmt.Sprintf("pod/demo-%d", i), 1883), fmt.Sprintf("e2e-sub-%d", i), creds)
			await(sub.Subscribe("e2e/cluster/#", 1, nil))
			subs[i] = msgs
		}
		// Subscriptions reach the other nodes asynchronously: publish until each
		// subscriber got one, then check one more message reaches all three.
		Eventually(func(g Gomega) {
			await(pub.Publish("e2e/cluster/probe", 1, false, "probe"))
			for i, msgs := range subs {
				g.Expect(msgs).To(Receive(), "subscriber on demo-%d", i)
			}
		}).WithTimeout(time.Minute).WithPolling(500 * time.Millisecond).Should(Succeed())
		payload := fmt.Sprintf("through the service %d", time.Now().UnixNano())
		await(pub.Publish("e2e/cluster/final", 1, false, payload))
		for i, msgs := range subs {
			Eventually(msgs).WithTimeout(30*time.Second).Should(Receive(WithTransform(
				func(m mqtt.Message) string { return string(m.Payload()) }, Equal(payload))), "subscriber on demo-%d", i)
		}
	})

	It("removes the children when the MQTTCluster is deleted and keeps or deletes PVCs per policy", func() {
		ns := newNamespace("uninstall")
		out, err := kubectlApply(clusterManifest(ns, "keep", 1, "") + "\n---\n" + clusterManifest(ns, "drop", 1, `    retention:
      whenDeleted: Delete
`))
		Expect(err).NotTo(HaveOccurred(), out)
		run(kubectlBin, "wait", "-n", ns, "mqc/keep", "mqc/drop", "--for=condition=Ready", "--timeout=5m")
		Expect(run(kubectlBin, "get", "pvc", "-n", ns, "-o", "name")).To(And(ContainSubstring("data-keep-0"), ContainSubstring("data-drop-0")))

		run(kubectlBin, "delete", "-n", ns, "mqc/keep", "mqc/drop", "--wait=true", "--timeout=2m")
		Eventually(func() string {
			out, _ := tryRun(kubectlBin, "get", "sts,svc,cm,secret,pdb,pods", "-n", ns, "-l", "app.kubernetes.io/managed-by=mqtt-operator", "-o", "name")
			return out
		}).Should(BeEmpty(), "children left behind")
		Eventually(func() string {
			return run(kubectlBin, "get", "pvc", "-n", ns, "-o", "name")
		}).Should(And(ContainSubstring("data-keep-0"), Not(ContainSubstring("data-drop-0"))))
	})
})
