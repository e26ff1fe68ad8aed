//go:build e2e

package e2e

import (
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// The lifecycle specs: scaling, a lost volume, and a rolling upgrade, each with QoS 1
// traffic whose every acknowledged message must arrive.

// stableForward keeps `kubectl port-forward` to a pod on one local port, starting it
// again whenever it ends (the pod was replaced), until the spec ends.
func stableForward(ns, pod string, port int) string {
	GinkgoHelper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	local := l.Addr().(*net.TCPAddr).Port
	Expect(l.Close()).To(Succeed())
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			cmd := exec.Command(kubectlBin, "port-forward", "-n", ns, "--address", "127.0.0.1", "pod/"+pod, fmt.Sprintf("%d:%d", local, port))
			if cmd.Start() == nil {
				exited := make(chan struct{})
				go func() { _ = cmd.Wait(); close(exited) }()
				select {
				case <-stop:
					_ = cmd.Process.Kill()
					<-exited
					return
				case <-exited:
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Second):
			}
		}
	}()
	DeferCleanup(func() { close(stop); <-done })
	return fmt.Sprintf("127.0.0.1:%d", local)
}

// stream is a persistent QoS 1 publisher and subscriber pair with automatic
// reconnection over several addresses.
type stream struct {
	topic    string
	pub, sub mqtt.Client
	acked    atomic.Int64 // messages 1..acked were acknowledged to the publisher
	mu       sync.Mutex
	got      map[int]bool
	stop     chan struct{}
	done     chan struct{}
}

func persistentClient(id string, addrs []string, onMsg mqtt.MessageHandler) mqtt.Client {
	GinkgoHelper()
	opts := mqtt.NewClientOptions().SetClientID(id).SetCleanSession(false).SetAutoReconnect(true).
		SetConnectRetry(true).SetConnectRetryInterval(500 * time.Millisecond).SetMaxReconnectInterval(time.Second).
		SetConnectTimeout(5 * time.Second).SetKeepAlive(5 * time.Second).SetOrderMatters(false)
	for _, a := range addrs {
		opts.AddBroker("tcp://" + a)
	}
	if onMsg != nil {
		opts.SetDefaultPublishHandler(onMsg)
	}
	c := mqtt.NewClient(opts)
	await(c.Connect())
	DeferCleanup(func() { c.Disconnect(100) })
	return c
}

// startStream connects the pair (subscriber first) and publishes numbered messages,
// one at a time, until stop.
func startStream(topic string, pubAddrs, subAddrs []string) *stream {
	GinkgoHelper()
	s := &stream{topic: topic, got: map[int]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
	s.sub = persistentClient("sub-"+strings.ReplaceAll(topic, "/", "-"), subAddrs, func(_ mqtt.Client, m mqtt.Message) {
		if n, err := strconv.Atoi(string(m.Payload())); err == nil {
			s.mu.Lock()
			s.got[n] = true
			s.mu.Unlock()
		}
	})
	await(s.sub.Subscribe(topic, 1, nil))
	s.pub = persistentClient("pub-"+strings.ReplaceAll(topic, "/", "-"), pubAddrs, nil)
	// The subscription reaches the publisher's node asynchronously.
	Eventually(func() int {
		await(s.pub.Publish(topic, 1, false, "0"))
		return s.count()
	}).WithTimeout(time.Minute).WithPolling(300 * time.Millisecond).Should(BeNumerically(">", 0))
	go func() {
		defer close(s.done)
		pace := time.NewTicker(20 * time.Millisecond) // about 50 messages per second
		defer pace.Stop()
		for n := 1; ; n++ {
			select {
			case <-s.stop:
				return
			default:
			}
			// A publish lost with a connection is retried by the client; the message
			// counts once its PUBACK arrived.
			tok := s.pub.Publish(topic, 1, false, strconv.Itoa(n))
			for !tok.WaitTimeout(time.Second) {
				select {
				case <-s.stop:
					return
				default:
				}
			}
			if tok.Error() != nil {
				n-- // not acknowledged: send the same number again
				continue
			}
			s.acked.Store(int64(n))
			select {
			case <-s.stop:
				return
			case <-pace.C:
			}
		}
	}()
	return s
}

func (s *stream) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got)
}

// finish stops publishing and checks every acknowledged message arrived.
func (s *stream) finish() {
	GinkgoHelper()
	close(s.stop)
	<-s.done
	acked := int(s.acked.Load())
	Expect(acked).To(BeNumerically(">", 50), "too little traffic to say anything")
	Eventually(func() []int {
		s.mu.Lock()
		defer s.mu.Unlock()
		var missing []int
		for n := 1; n <= acked; n++ {
			if !s.got[n] {
				missing = append(missing, n)
			}
		}
		return missing
	}).WithTimeout(time.Minute).Should(BeEmpty(), "acknowledged QoS 1 messages that never arrived (of %d)", acked)
}

// members returns status.members as "name=joined/storeState" words.
func members(ns, name string) string {
	out, _ := tryRun(kubectlBin, "get", "-n", ns, "mqc", name, "-o", `jsonpath={range .status.members[*]}{.node}={.joined}/{.storeState} {end}`)
	return strings.TrimSpace(out)
}

func joinedMembers(name string, n int) string {
	var w []string
	for i := range n {
		w = append(w, fmt.Sprintf("%s-%d=true/member", name, i))
	}
	return strings.Join(w, " ")
}

// installCluster creates an MQTTCluster of n nodes, waits until it is Ready and
// returns its cluster ID.
func installCluster(ns, name string, n int, extraSpec string) string {
	GinkgoHelper()
	out, err := kubectlApply(clusterManifest(ns, name, n, extraSpec))
	Expect(err).NotTo(HaveOccurred(), out)
	waitReady(ns, name, n)
	return clusterID(ns, name)
}

func clusterID(ns, name string) string {
	return run(kubectlBin, "get", "-n", ns, "mqc", name, "-o", "jsonpath={.status.clusterID}")
}

func waitReady(ns, name string, n int) {
	GinkgoHelper()
	Eventually(func() string { return members(ns, name) }).WithTimeout(5 * time.Minute).WithPolling(time.Second).
		Should(Equal(joinedMembers(name, n)))
	run(kubectlBin, "wait", "-n", ns, "mqc/"+name, "--for=condition=Ready", "--timeout=5m")
}

var _ = Describe("MQTTCluster lifecycle on a real cluster", Ordered, func() {
	It("scales 3 -> 5 -> 2 with kubectl scale and a spec edit (the operator restarted midway), losing no QoS 1 message between surviving pods", func() {
		ns := newNamespace("scale")
		out, err := kubectlApply(clusterManifest(ns, "sc", 3, ""))
		Expect(err).NotTo(HaveOccurred(), out)
		waitReady(ns, "sc", 3)
		s := startStream("e2e/scale", []string{stableForward(ns, "sc-0", 1883)}, []string{stableForward(ns, "sc-1", 1883)})

		run(kubectlBin, "scale", "-n", ns, "mqc/sc", "--replicas=5")
		waitReady(ns, "sc", 5)
		run(kubectlBin, "patch", "-n", ns, "mqc/sc", "--type=merge", "-p", `{"spec":{"replicas":2}}`)
		// Restart the operator in the middle: once the first node has left, its pod is
		// deleted; the new operator resumes from what the brokers and the StatefulSet say.
		Eventually(func() string {
			out, _ := tryRun(kubectlBin, "get", "events", "-n", ns, "--field-selector", "reason=Left", "-o", "name")
			return out
		}).WithTimeout(3 * time.Minute).WithPolling(500 * time.Millisecond).ShouldNot(BeEmpty())
		run(kubectlBin, "delete", "pod", "-n", operatorNamespace, "-l", "app.kubernetes.io/name=mqtt-operator", "--wait=false")
		waitReady(ns, "sc", 2)
		Eventually(func() string { return run(kubectlBin, "get", "pods,pvc", "-n", ns, "-o", "name") }).WithTimeout(2 * time.Minute).
			ShouldNot(Or(ContainSubstring("sc-2"), ContainSubstring("sc-3"), ContainSubstring("sc-4")))
		Expect(run(kubectlBin, "get", "events", "-n", ns, "--field-selector", "reason=Left", "-o", "name")).NotTo(BeEmpty(),
			"the removed nodes left the cluster before their pods went")
		s.finish()
	})

	It("heals a node whose pod and volume were deleted", func() {
		ns := newNamespace("heal")
		id := installCluster(ns, "heal", 3, "")
		run(kubectlBin, "delete", "pvc", "-n", ns, "data-heal-2", "--wait=false")
		run(kubectlBin, "delete", "pod", "-n", ns, "heal-2", "--wait=true")
		Eventually(func() string { return members(ns, "heal") }).WithTimeout(5 * time.Minute).WithPolling(time.Second).
			Should(Equal(joinedMembers("heal", 3)))
		Expect(clusterID(ns, "heal")).To(Equal(id))
		run(kubectlBin, "wait", "-n", ns, "mqc/heal", "--for=condition=Ready", "--timeout=5m")
	})

	It("resets a node whose volume holds another cluster's store and rejoins it, never touching the healthy pods", func() {
		ns := newNamespace("stale")
		id := installCluster(ns, "st", 2, "    retention:\n      whenScaled: Retain\n")
		healthy := run(kubectlBin, "get", "pods", "-n", ns, "st-0", "st-1", "-o", `jsonpath={range .items[*]}{.metadata.uid}/{.status.containerStatuses[0].restartCount} {end}`)

		// The volume st-2 will get holds the store of another cluster: a broker started
		// on it with --cluster.bootstrap, then stopped (as a volume restored from
		// another installation would be).
		foreignStore(ns, "data-st-2", "st-2")
		run(kubectlBin, "scale", "-n", ns, "mqc/st", "--replicas=3")

		Eventually(func() string {
			out, _ := tryRun(kubectlBin, "get", "events", "-n", ns, "--field-selector", "reason=StaleStoreReset", "-o", "jsonpath={.items[*].message}")
			return out
		}).WithTimeout(5*time.Minute).WithPolling(time.Second).Should(ContainSubstring("st-2"), "a StaleStoreReset event about st-2")
		waitReady(ns, "st", 3)
		Expect(clusterID(ns, "st")).To(Equal(id), "the cluster ID after the rejoin")
		Expect(run(kubectlBin, "get", "-n", ns, "mqc", "st", "-o", "jsonpath={.status.staleStoreResets}")).NotTo(BeElementOf("", "0"))
		Expect(run(kubectlBin, "get", "pods", "-n", ns, "st-0", "st-1", "-o", `jsonpath={range .items[*]}{.metadata.uid}/{.status.containerStatuses[0].restartCount} {end}`)).
			To(Equal(healthy), "st-0 and st-1: same pods, no restart")
		resets := run(kubectlBin, "get", "events", "-n", ns, "--field-selector", "reason=StaleStoreReset", "-o", "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}")
		for _, line := range strings.Split(strings.TrimSpace(resets), "\n") {
			Expect(line).To(ContainSubstring("st-2"), "only st-2 is reset")
		}
	})

	It("rolls every pod to a new image reference under QoS 1 traffic through the Service without losing a message", func() {
		ns := newNamespace("upgrade")
		out, err := kubectlApply(clusterManifest(ns, "up", 3, "  service:\n    type: NodePort\n"))
		Expect(err).NotTo(HaveOccurred(), out)
		waitReady(ns, "up", 3)
		// The clients go through the client Service as users' do (its node port):
		// every new connection lands on a ready pod, so a client that an evacuation
		// disconnects comes back on another node and takes its session over there.
		nodeIP := run(kubectlBin, "get", "nodes", "-o", `jsonpath={.items[0].status.addresses[?(@.type=="InternalIP")].address}`)
		port := run(kubectlBin, "get", "svc", "-n", ns, "up", "-o", `jsonpath={.spec.ports[?(@.name=="mqtt")].nodePort}`)
		addr := net.JoinHostPort(strings.TrimSpace(nodeIP), strings.TrimSpace(port))
		s := startStream("e2e/upgrade", []string{addr}, []string{addr})
		before := run(kubectlBin, "get", "pods", "-n", ns, "-l", "app.kubernetes.io/instance=up", "-o", "jsonpath={.items[*].metadata.uid}")

		// The same image under its fully qualified name: a new pod template, so every
		// pod is replaced, on kind and on the local cluster alike.
		image := "docker.io/library/" + mqttdImage
		run(kubectlBin, "patch", "-n", ns, "mqc/up", "--type=merge", "-p", fmt.Sprintf(`{"spec":{"image":%q}}`, image))
		Eventually(func() string {
			return run(kubectlBin, "get", "pods", "-n", ns, "-l", "app.kubernetes.io/instance=up", "-o", "jsonpath={range .items[*]}{.spec.containers[0].image} {end}")
		}).WithTimeout(10 * time.Minute).WithPolling(2 * time.Second).Should(Equal(strings.Repeat(image+" ", 3)))
		waitReady(ns, "up", 3)
		after := run(kubectlBin, "get", "pods", "-n", ns, "-l", "app.kubernetes.io/instance=up", "-o", "jsonpath={.items[*].metadata.uid}")
		for _, uid := range strings.Fields(before) {
			Expect(after).NotTo(ContainSubstring(uid), "a pod was not replaced")
		}
		Expect(run(kubectlBin, "get", "events", "-n", ns, "--field-selector", "reason=PodReplaced", "-o", "name")).NotTo(BeEmpty())
		s.finish()
	})
})

// foreignStore fills the volume claim (created here, labeled as the StatefulSet's
// claims are) with the store of a one-node cluster of its own, whose node is called
// node: a pod of the broker image bootstraps it and is stopped gracefully.
func foreignStore(ns, claim, node string) {
	GinkgoHelper()
	out, err := kubectlApply(fmt.Sprintf(`apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: %[2]s
  namespace: %[1]s
  labels:
    app.kubernetes.io/name: mqttd
    app.kubernetes.io/instance: st
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 64Mi
---
apiVersion: v1
kind: Secret
metadata:
  name: foreign-cookie
  namespace: %[1]s
stringData:
  cookie: another-cluster-cookie-0123456789
---
apiVersion: v1
kind: Pod
metadata:
  name: foreign-store
  namespace: %[1]s
spec:
  restartPolicy: Never
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    fsGroup: 65532
  containers:
  - name: mqttd
    image: %[4]s
    imagePullPolicy: IfNotPresent
    args: ["--store.dir=/var/lib/mqttd", "--cluster.listen=127.0.0.1:4370", "--cluster.node-name=%[3]s",
      "--cluster.cookie-file=/etc/cookie/cookie", "--cluster.bootstrap=true"]
    volumeMounts:
    - {name: data, mountPath: /var/lib/mqttd}
    - {name: cookie, mountPath: /etc/cookie, readOnly: true}
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: %[2]s}
  - name: cookie
    secret: {secretName: foreign-cookie}
`, ns, claim, node, mqttdImage))
	Expect(err).NotTo(HaveOccurred(), out)
	Eventually(func() string {
		out, _ := tryRun(kubectlBin, "logs", "-n", ns, "foreign-store")
		return out
	}).WithTimeout(3 * time.Minute).WithPolling(time.Second).Should(ContainSubstring("bootstrapped a new cluster"))
	run(kubectlBin, "delete", "pod", "-n", ns, "foreign-store", "--wait=true")
}
