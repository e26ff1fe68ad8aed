//go:build e2e

package e2e

import (
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

var _ = Describe("Upgrading across releases", func() {
	It("rolls a 3-node cluster from the previous release's mqttd to this one under QoS 1 traffic: no acknowledged message lost, the cluster ID, a retained message and an offline session's queue kept, the links on the new protocol", func() {
		Expect(prevMQTTDImage).NotTo(BeEmpty(), "E2E_MQTTD_PREV_IMAGE: the previous release's mqttd image (hack/e2e.sh builds it)")
		ns := newNamespace("xver")
		manifest := clusterManifest(ns, "xv", 3, "  service:\n    type: NodePort\n")
		manifest = strings.Replace(manifest, "image: "+mqttdImage+"\n", "image: "+prevMQTTDImage+"\n", 1)
		Expect(manifest).To(ContainSubstring(prevMQTTDImage))
		out, err := kubectlApply(manifest)
		Expect(err).NotTo(HaveOccurred(), out)
		waitReady(ns, "xv", 3)
		images := func() string {
			return run(kubectlBin, "get", "pods", "-n", ns, "-l", "app.kubernetes.io/instance=xv", "-o", "jsonpath={range .items[*]}{.spec.containers[0].image} {end}")
		}
		Expect(images()).To(Equal(strings.Repeat(prevMQTTDImage+" ", 3)))
		// The pods really run the previous release's binary (hack/e2e.sh builds it
		// with the commit as its version).
		Expect(prevMQTTDVersion).NotTo(BeEmpty(), "E2E_MQTTD_PREV_VERSION")
		oldStarted := regexp.MustCompile(`mqttd started.*version"?[=:]"?` + regexp.QuoteMeta(prevMQTTDVersion))
		for i := range 3 {
			logs := run(kubectlBin, "logs", "-n", ns, fmt.Sprintf("xv-%d", i), "-c", "mqttd")
			Expect(oldStarted.MatchString(logs)).To(BeTrue(), "xv-%d does not run mqttd %s:\n%s", i, prevMQTTDVersion, logs)
		}
		id := clusterID(ns, "xv")
		Expect(id).NotTo(BeEmpty())

		nodeIP := run(kubectlBin, "get", "nodes", "-o", `jsonpath={.items[0].status.addresses[?(@.type=="InternalIP")].address}`)
		port := run(kubectlBin, "get", "svc", "-n", ns, "xv", "-o", `jsonpath={.spec.ports[?(@.name=="mqtt")].nodePort}`)
		addr := net.JoinHostPort(strings.TrimSpace(nodeIP), strings.TrimSpace(port))

		// On the old release: a retained message, and a persistent session that goes
		// offline with 20 QoS 1 messages queued for it.
		pub, _ := mqttClient(addr, "xv-pub")
		await(pub.Publish("e2e/xver/retained", 1, true, "kept"))
		var probed atomic.Int64
		off := persistentClient("xv-offline", []string{addr}, func(_ mqtt.Client, m mqtt.Message) {
			if string(m.Payload()) == "probe" {
				probed.Add(1)
			}
		})
		await(off.Subscribe("e2e/xver/offline", 1, nil))
		// The session's route reaches the publisher's node before the messages are sent.
		Eventually(func() int64 {
			await(pub.Publish("e2e/xver/offline", 1, false, "probe"))
			return probed.Load()
		}).WithTimeout(time.Minute).WithPolling(300 * time.Millisecond).Should(BeNumerically(">", 0))
		off.Disconnect(250)
		for i := 1; i <= 20; i++ {
			await(pub.Publish("e2e/xver/offline", 1, false, strconv.Itoa(i)))
		}
		pub.Disconnect(100)
		s := startStream("e2e/xver/stream", []string{addr}, []string{addr})

		run(kubectlBin, "patch", "-n", ns, "mqc/xv", "--type=merge", "-p", fmt.Sprintf(`{"spec":{"image":%q}}`, mqttdImage))
		Eventually(images).WithTimeout(10 * time.Minute).WithPolling(2 * time.Second).Should(Equal(strings.Repeat(mqttdImage+" ", 3)))
		waitReady(ns, "xv", 3)
		s.finish()
		Expect(clusterID(ns, "xv")).To(Equal(id), "the cluster ID after the upgrade")

		// The retained message, read by a new client on every node.
		for i := range 3 {
			reader, got := mqttClient(stableForward(ns, fmt.Sprintf("xv-%d", i), 1883), fmt.Sprintf("xv-reader-%d", i))
			await(reader.Subscribe("e2e/xver/retained", 1, nil))
			Eventually(got).WithTimeout(30*time.Second).Should(Receive(WithTransform(func(m mqtt.Message) string { return string(m.Payload()) }, Equal("kept"))), "the retained message on xv-%d", i)
		}

		// The offline session comes back with its 20 messages, each sent once as a
		// first delivery (the session moved between old and new nodes during the
		// roll; a resend after a lost connection is marked DUP and allowed).
		var mu sync.Mutex
		queued := map[string]int{} // deliveries, first or resent
		firsts := map[string]int{} // deliveries not marked DUP
		persistentClient("xv-offline", []string{addr}, func(_ mqtt.Client, m mqtt.Message) {
			mu.Lock()
			queued[string(m.Payload())]++
			if !m.Duplicate() {
				firsts[string(m.Payload())]++
			}
			mu.Unlock()
		})
		Eventually(func() []string {
			mu.Lock()
			defer mu.Unlock()
			var missing []string
			for i := 1; i <= 20; i++ {
				if queued[strconv.Itoa(i)] == 0 {
					missing = append(missing, strconv.Itoa(i))
				}
			}
			return missing
		}).WithTimeout(time.Minute).Should(BeEmpty(), "messages queued for the offline session on the old release that never arrived")
		Consistently(func() []string {
			mu.Lock()
			defer mu.Unlock()
			var twice []string
			for i := 1; i <= 20; i++ {
				if firsts[strconv.Itoa(i)] > 1 {
					twice = append(twice, strconv.Itoa(i))
				}
			}
			return twice
		}).WithTimeout(3*time.Second).WithPolling(250*time.Millisecond).Should(BeEmpty(), "messages of the offline session sent twice without DUP (a copy of the queue)")

		// The logs of the new pods: each opened its old store and migrated it to the
		// new format; xv-2, replaced first, linked to the old nodes on the old
		// protocol (gob, 0); every node now links to the others on protocol 2.
		migrated := regexp.MustCompile(`store migrated.*from"?[=:]"?1\b`)
		linkedOld := regexp.MustCompile(`cluster link up.*protocol"?[=:]"?0\b`)
		linkedBinary := regexp.MustCompile(`cluster link up.*protocol"?[=:]"?2\b`)
		for i := range 3 {
			pod := fmt.Sprintf("xv-%d", i)
			logs := run(kubectlBin, "logs", "-n", ns, pod, "-c", "mqttd")
			// A restarted container's first run (where the migration and the first
			// links were logged) is the previous log.
			if restarts := run(kubectlBin, "get", "pod", "-n", ns, pod, "-o", "jsonpath={.status.containerStatuses[0].restartCount}"); strings.TrimSpace(restarts) != "0" {
				logs = run(kubectlBin, "logs", "-n", ns, pod, "-c", "mqttd", "--previous") + logs
			}
			Expect(migrated.MatchString(logs)).To(BeTrue(), "xv-%d did not migrate its store:\n%s", i, logs)
			Expect(linkedBinary.MatchString(logs)).To(BeTrue(), "xv-%d logged no link on protocol 2:\n%s", i, logs)
			if i == 2 {
				Expect(linkedOld.MatchString(logs)).To(BeTrue(), "xv-2 logged no link to an old node (protocol 0):\n%s", logs)
			}
		}
	})
})
