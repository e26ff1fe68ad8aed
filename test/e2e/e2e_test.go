//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"time"

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

// pubSub publishes one QoS 1 message through pub and expects sub to receive it.
func pubSub(pubAddr, subAddr, topic string) {
	GinkgoHelper()
	sub, msgs := mqttClient(subAddr, "sub-"+strings.ReplaceAll(topic, "/", "-"))
	await(sub.Subscribe(topic, 1, nil))
	pub, _ := mqttClient(pubAddr, "pub-"+strings.ReplaceAll(topic, "/", "-"))
	payload := fmt.Sprintf("hello %s %d", topic, time.Now().UnixNano())
	await(pub.Publish(topic, 1, false, payload))
	Eventually(msgs).WithTimeout(30 * time.Second).Should(Receive(WithTransform(
		func(m interface{ Payload() []byte }) string { return string(m.Payload()) }, Equal(payload))))
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
		out, err := kubectlApply(clusterManifest(ns, "demo", 3, ""))
		Expect(err).NotTo(HaveOccurred(), out)
		run(kubectlBin, "wait", "-n", ns, "mqc/demo", "--for=condition=Ready", "--timeout=5m")
		Expect(run(kubectlBin, "get", "-n", ns, "mqc", "demo")).To(MatchRegexp(`demo\s+True\s+3\s+3`))
		// Each node read the generated cookie from its Secret and opened the cluster port.
		for i := range 3 {
			Expect(run(kubectlBin, "logs", "-n", ns, fmt.Sprintf("demo-%d", i))).To(
				MatchRegexp(`"msg":"listening","listener":"cluster","address":"[^"]*:4370","node":"demo-%d"`, i))
		}

		for i := range 3 {
			addr := portForward(ns, fmt.Sprintf("pod/demo-%d", i), 1883)
			pubSub(addr, addr, fmt.Sprintf("e2e/pod/%d", i))
		}
		svc := portForward(ns, "svc/demo", 1883)
		pubSub(svc, svc, "e2e/service")
	})

	It("delivers a message published through the client Service to subscribers on every pod", func() {
		Skip("needs routing between nodes: the [cluster] issue (mqttd nodes do not cluster yet)")
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
