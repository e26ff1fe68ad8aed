package lifecycle_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/test/mqttdproc"
)

var _ = Describe("the operator's cluster lifecycle with real brokers", func() {
	It("forms a 3-node cluster in order: pod-0 bootstraps, the others join one at a time", func(ctx SpecContext) {
		e := newEnv(ctx, 3, nil)
		id := e.expectMembers(ctx, 3)
		Expect(id).NotTo(BeEmpty())
		e.expectJoinOrder(ctx, 1, 3)
		e.expectReadyStatus(ctx, 3)
	}, SpecTimeout(5*time.Minute))

	It("scales up from 3 to 5: the new pods join in order", func(ctx SpecContext) {
		e := newEnv(ctx, 3, nil)
		id := e.expectMembers(ctx, 3)
		e.expectReadyStatus(ctx, 3)

		e.scale(ctx, 5)
		Expect(e.expectMembers(ctx, 5)).To(Equal(id), "the cluster ID after the scale-up")
		e.expectJoinOrder(ctx, 1, 5)
		e.expectReadyStatus(ctx, 5)
	}, SpecTimeout(6*time.Minute))

	DescribeTable("scales down from the highest ordinal, each node evacuated and gone from the membership before its pod",
		func(ctx SpecContext, from, to int, whenScaled v1alpha1.RetentionPolicyType) {
			e := newEnv(ctx, int32(from), func(mc *v1alpha1.MQTTCluster) { mc.Spec.Storage.Retention.WhenScaled = whenScaled })
			id := e.expectMembers(ctx, from)
			e.expectReadyStatus(ctx, from)

			e.scale(ctx, int32(to))
			e.expectGone(ctx, to, from)
			Expect(e.expectMembers(ctx, to)).To(Equal(id), "the cluster ID after the scale-down")
			e.expectReadyStatus(ctx, to)
			Expect(e.statefulSet(ctx).Spec.Replicas).To(HaveValue(BeEquivalentTo(to)))

			var highestFirst []string
			for ord := from - 1; ord >= to; ord-- {
				pod := podNames(from)[ord]
				highestFirst = append(highestFirst, pod)
				e.expectLeftBeforeRemoval(pod)
				if whenScaled == v1alpha1.Delete {
					Eventually(ctx, func() (bool, error) { return e.claimExists(ctx, pod) }).Should(BeFalse(), "the PVC of %s is deleted", pod)
				} else {
					Consistently(ctx, func() (bool, error) { return e.claimExists(ctx, pod) }).
						WithTimeout(2*time.Second).Should(BeTrue(), "the PVC of %s is kept", pod)
				}
			}
			Expect(e.leaveOrder()).To(Equal(highestFirst), "the nodes the operator made leave, in order")
			for ord := range to {
				Expect(e.claimExists(ctx, podNames(to)[ord])).To(BeTrue(), "the PVC of a remaining member")
			}
		},
		Entry("5 -> 2, volumes deleted (whenScaled: Delete)", 5, 2, v1alpha1.Delete, SpecTimeout(8*time.Minute)),
		Entry("3 -> 2, volumes kept (whenScaled: Retain)", 3, 2, v1alpha1.Retain, SpecTimeout(6*time.Minute)),
	)

	It("resumes a scale-down after the operator restarted in the middle of it", func(ctx SpecContext) {
		e := newEnv(ctx, 4, nil)
		id := e.expectMembers(ctx, 4)
		e.expectReadyStatus(ctx, 4)

		e.scale(ctx, 1)
		Eventually(ctx, func(g Gomega) {
			err := k8sClient.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: "c-3"}, &corev1.Pod{})
			if apierrors.IsNotFound(err) {
				return
			}
			g.Expect(e.node(ctx, g, 3).Evacuating).To(BeTrue())
		}).Should(Succeed(), "c-3 is evacuating or gone")
		e.restartOperator()

		e.expectGone(ctx, 1, 4)
		Expect(e.expectMembers(ctx, 1)).To(Equal(id), "the cluster ID after the scale-down")
		e.expectReadyStatus(ctx, 1)
		for _, pod := range []string{"c-3", "c-2", "c-1"} {
			e.expectLeftBeforeRemoval(pod)
		}
		Expect(e.leaveOrder()).To(Equal([]string{"c-3", "c-2", "c-1"}))
	}, SpecTimeout(8*time.Minute))

	It("resets a node whose store belongs to another cluster and rejoins it, never touching the healthy members", func(ctx SpecContext) {
		e := newEnv(ctx, 3, nil)
		id := e.expectMembers(ctx, 3)
		e.expectReadyStatus(ctx, 3)
		publishKept(ctx, e)

		foreign := foreignStore(ctx, e, "c-2")
		podsBefore := len(e.sim.podEvents())
		e.sim.replaceStore(ctx, 2, foreign)

		e.expectStaleReset(ctx, id, "c-2", podsBefore, "")
		for _, c := range e.sim.calls.all() {
			if c.path == "/api/v1/node/reset" {
				Expect(c.pod).To(Equal("c-2"), "only c-2 is reset: %s", c)
			}
		}
	}, SpecTimeout(8*time.Minute))

	It("replaces a node that crash-loops on a store it cannot open, never touching the healthy members", func(ctx SpecContext) {
		e := newEnv(ctx, 3, nil)
		id := e.expectMembers(ctx, 3)
		e.expectReadyStatus(ctx, 3)
		publishKept(ctx, e)

		// A store pebble refuses to open: mqttd exits with code 3 at every start.
		broken := filepath.Join(e.sim.dir, "broken-store")
		must(os.MkdirAll(broken, 0o700), "the broken store")
		must(os.WriteFile(filepath.Join(broken, "CURRENT"), []byte("MANIFEST-000999\n"), 0o600), "the broken store")
		podsBefore := len(e.sim.podEvents())
		e.sim.replaceStore(ctx, 2, broken)

		e.expectStaleReset(ctx, id, "c-2", podsBefore, "cannot open its store")
		Expect(e.sim.logs(2).Contains("exited: exit status 3")).To(BeTrue(), "c-2 crash-looped on exit code 3 before the reset")
		for _, c := range e.sim.calls.all() {
			Expect(c.path).NotTo(Equal("/api/v1/node/reset"), "nothing is reset through the API: %s", c)
		}
	}, SpecTimeout(8*time.Minute))

	It("surfaces a cookie mismatch as Degraded, and recovers once the pod has the cluster's cookie", func(ctx SpecContext) {
		// c-2 starts with another cookie from the start: its brokers' handshake with the
		// members fails, whatever the operator does.
		e := newEnv(ctx, 3, nil, withPodCookie("c-2", []byte("the-cookie-of-another-cluster-0123456789")))
		id := e.expectMembers(ctx, 2)
		mismatch := func(g Gomega) {
			degraded, generation := e.condition(ctx, g, v1alpha1.ConditionDegraded)
			g.Expect(degraded.Status).To(Equal(metav1.ConditionTrue), "Degraded: %s", degraded.Message)
			g.Expect(degraded.Reason).To(Equal("CookieMismatch"))
			g.Expect(degraded.Message).To(ContainSubstring("c-2 was refused by"))
			g.Expect(degraded.Message).To(ContainSubstring("cookies differ"))
			g.Expect(degraded.ObservedGeneration).To(Equal(generation))
			ready, _ := e.condition(ctx, g, v1alpha1.ConditionReady)
			g.Expect(ready.Status).To(Equal(metav1.ConditionFalse), "Ready: %s", ready.Message)
			g.Expect(e.view(ctx, g, 0).names()).To(Equal(podNames(2)), "the members as c-0 lists them")
			n := e.node(ctx, g, 2)
			g.Expect(n.StoreState).To(Equal("empty"), "c-2 joined nothing")
			g.Expect(n.ClusterID).To(BeEmpty())
		}
		Eventually(ctx, mismatch).Should(Succeed(), "Degraded=True (CookieMismatch) naming c-2, Ready=False")
		Eventually(ctx, func() []string { return e.warnings(ctx, "CookieMismatch") }).
			Should(ContainElement(ContainSubstring("c-2")), "a Warning event CookieMismatch about c-2")
		Consistently(ctx, mismatch).WithTimeout(3*time.Second).Should(Succeed(), "the mismatch stays reported while c-2 keeps its cookie")
		refused := 0
		for _, c := range e.sim.calls.all() {
			if c.method == "POST" && c.path == "/api/v1/cluster/join" && c.pod == "c-2" {
				Expect(c.status).To(BeNumerically(">=", 400), "every join of c-2 is refused: %s", c)
				refused++
			}
		}
		Expect(refused).To(BeNumerically(">=", 1), "the operator asked c-2 to join")

		By("restarting c-2 with the cluster's cookie")
		e.sim.setCookie("c-2", nil)
		pod := &corev1.Pod{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: "c-2"}, pod)).To(Succeed())
		Expect(k8sClient.Delete(ctx, pod, client.Preconditions{UID: &pod.UID})).To(Succeed())
		Expect(e.expectMembers(ctx, 3)).To(Equal(id), "the cluster ID once c-2 joined")
		e.expectJoinOrder(ctx, 1, 3)
		e.expectReadyStatus(ctx, 3)
		Eventually(ctx, func(g Gomega) {
			degraded, _ := e.condition(ctx, g, v1alpha1.ConditionDegraded)
			g.Expect(degraded.Status).To(Equal(metav1.ConditionFalse), "Degraded: %s", degraded.Message)
			g.Expect(degraded.Reason).To(Equal("AsExpected"))
		}).Should(Succeed(), "Degraded=False once c-2 joined")
	}, SpecTimeout(6*time.Minute))

	It("replaces pods one at a time from the highest ordinal on an image change", func(ctx SpecContext) {
		e := newEnv(ctx, 3, nil)
		id := e.expectMembers(ctx, 3)
		e.expectReadyStatus(ctx, 3)
		oldRevision := e.statefulSet(ctx).Status.UpdateRevision
		Expect(oldRevision).NotTo(BeEmpty())
		podsBefore := len(e.sim.podEvents())

		size := watchClusterSize(e, 3)
		e.sim.resetUnready()
		e.patch(ctx, func(mc *v1alpha1.MQTTCluster) { mc.Spec.Image = "mqttd:v2" })
		var newRevision string
		Eventually(ctx, func(g Gomega) {
			newRevision = e.statefulSet(ctx).Status.UpdateRevision
			g.Expect(newRevision).NotTo(Equal(oldRevision))
			for _, name := range podNames(3) {
				pod := &corev1.Pod{}
				g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: name}, pod)).To(Succeed())
				g.Expect(pod.Labels).To(HaveKeyWithValue("controller-revision-hash", newRevision), "the revision of %s", name)
				g.Expect(pod.DeletionTimestamp).To(BeNil())
				g.Expect(pod.Spec.Containers[0].Image).To(Equal("mqttd:v2"))
			}
		}).WithTimeout(changeTimeout).Should(Succeed(), "every pod runs the new revision")
		Expect(e.expectMembers(ctx, 3)).To(Equal(id), "the cluster ID after the upgrade")
		e.expectReadyStatus(ctx, 3)
		smallest, when := size.stop()

		var deleted []string
		for _, ev := range e.sim.podEvents()[podsBefore:] {
			switch ev.kind {
			case "deleted":
				deleted = append(deleted, ev.pod)
				Expect(ev.revision).To(Equal(oldRevision), "a pod of the old revision is replaced: %+v", ev)
			case "created":
				Expect(ev.revision).To(Equal(newRevision), "a new pod has the new revision: %+v", ev)
			}
		}
		Expect(deleted).To(Equal([]string{"c-2", "c-1", "c-0"}), "pods replaced from the highest ordinal, each once")
		most := e.sim.mostUnready()
		Expect(most.max).To(BeNumerically("<=", 1), "pods unavailable at once: %v", most.when)
		Expect(smallest).To(BeNumerically(">=", 2), "the fewest members reachable together during the upgrade, at %s", when)
	}, SpecTimeout(10*time.Minute))

	It("replaces a pod stuck in ImagePullBackOff at once when the image is fixed, then rolls the rest", func(ctx SpecContext) {
		e := newEnv(ctx, 3, nil)
		id := e.expectMembers(ctx, 3)
		e.expectReadyStatus(ctx, 3)

		// A typo in the image: the first pod replaced cannot start, and the rollout
		// stops there (the cluster is not whole), with the two others still serving.
		e.patch(ctx, func(mc *v1alpha1.MQTTCluster) { mc.Spec.Image = "mqttd" + unpullableTag })
		stuckPod := func(g Gomega) *corev1.Pod {
			pod := &corev1.Pod{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: "c-2"}, pod)).To(Succeed())
			g.Expect(pod.Spec.Containers[0].Image).To(Equal("mqttd" + unpullableTag))
			g.Expect(pod.Status.ContainerStatuses).NotTo(BeEmpty())
			g.Expect(pod.Status.ContainerStatuses[0].State.Waiting).NotTo(BeNil())
			g.Expect(pod.Status.ContainerStatuses[0].State.Waiting.Reason).To(Equal("ImagePullBackOff"))
			return pod
		}
		Eventually(ctx, func(g Gomega) { stuckPod(g) }).WithTimeout(changeTimeout).Should(Succeed(), "c-2 waits in ImagePullBackOff")
		var stuck *corev1.Pod
		Consistently(ctx, func(g Gomega) {
			stuck = stuckPod(g)
			for _, ord := range []int{0, 1} {
				g.Expect(e.node(ctx, g, ord).Ready).To(BeTrue(), "c-%d keeps serving", ord)
			}
		}).WithTimeout(5*time.Second).Should(Succeed(), "the rollout waits on the stuck pod; c-0 and c-1 are left alone")

		// The fix: the stuck pod (its revision outdated again, its evacuation
		// impossible) is replaced at once, then c-1 and c-0 roll as usual.
		podsBefore := len(e.sim.podEvents())
		e.patch(ctx, func(mc *v1alpha1.MQTTCluster) { mc.Spec.Image = "mqttd:v3" })
		Eventually(ctx, func(g Gomega) {
			for _, name := range podNames(3) {
				pod := &corev1.Pod{}
				g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: name}, pod)).To(Succeed())
				g.Expect(pod.DeletionTimestamp).To(BeNil())
				g.Expect(pod.Spec.Containers[0].Image).To(Equal("mqttd:v3"), "the image of %s", name)
			}
		}).WithTimeout(changeTimeout).Should(Succeed(), "every pod runs the fixed image")
		Expect(e.expectMembers(ctx, 3)).To(Equal(id), "the cluster ID after the rollout")
		e.expectReadyStatus(ctx, 3)
		Expect(e.notes(ctx, "PodReplaced")).To(ContainElement(And(ContainSubstring("c-2"), ContainSubstring("ImagePullBackOff"))))
		var deleted []string
		for _, ev := range e.sim.podEvents()[podsBefore:] {
			if ev.kind == "deleted" {
				deleted = append(deleted, ev.pod)
			}
		}
		Expect(deleted).To(Equal([]string{"c-2", "c-1", "c-0"}), "the stuck pod first, then the others from the highest ordinal")
		// When the simulator saw the stuck pod created (CreationTimestamp has whole
		// seconds only: the old c-2's evacuation can fall in the same second).
		var stuckSeen time.Time
		for _, ev := range e.sim.podEvents()[:podsBefore] {
			if ev.kind == "created" && ev.pod == "c-2" {
				stuckSeen = ev.at
			}
		}
		Expect(stuckSeen).NotTo(BeZero())
		Expect(stuckSeen.Before(stuck.CreationTimestamp.Add(5*time.Second))).To(BeTrue(), "the last c-2 created before the fix is the stuck pod")
		for _, c := range e.sim.calls.all() {
			if c.path == "/api/v1/node/evacuate" && c.start.After(stuckSeen) {
				Expect(c.pod).NotTo(Equal("c-2"), "the stuck pod is not evacuated (it has no broker): %s", c)
			}
		}
	}, SpecTimeout(10*time.Minute))
})

// publishKept sets the retained message lifecycle/kept through c-0 and waits until
// c-0 and c-1 serve it: data the healthy members must keep through a reset of c-2.
func publishKept(ctx context.Context, e *env) {
	GinkgoHelper()
	_, mqtt0, _ := e.sim.broker(0)
	Expect(publishRetained(mqtt0, "lifecycle/kept", "before")).To(Succeed())
	for _, ord := range []int{0, 1} {
		Eventually(ctx, func() (string, error) {
			_, addr, _ := e.sim.broker(ord)
			return retained(addr, "lifecycle/kept")
		}).Should(Equal("before"), "the retained message on c-%d", ord)
	}
}

// expectStaleReset waits for the Warning StaleStoreReset about pod (its note
// containing why), then checks the cluster rejoined it with cluster ID id and is
// Ready, only pod was replaced since podsBefore, c-0 and c-1 kept their cluster and
// the retained message of publishKept, and the status counts the reset.
func (e *env) expectStaleReset(ctx context.Context, id, pod string, podsBefore int, why string) {
	GinkgoHelper()
	Eventually(ctx, func() []string { return e.warnings(ctx, "StaleStoreReset") }).
		Should(ContainElement(And(ContainSubstring(pod), ContainSubstring(why))), "a Warning event StaleStoreReset about %s", pod)
	Expect(e.expectMembers(ctx, 3)).To(Equal(id), "the cluster ID after the rejoin")
	e.expectReadyStatus(ctx, 3)
	for _, ev := range e.sim.podEvents()[podsBefore:] {
		Expect(ev.pod).To(Equal(pod), "only %s's pod is replaced: %+v", pod, ev)
	}
	for _, ord := range []int{0, 1} {
		Eventually(ctx, func(g Gomega) {
			g.Expect(e.node(ctx, g, ord).ClusterID).To(Equal(id))
			_, addr, _ := e.sim.broker(ord)
			g.Expect(retained(addr, "lifecycle/kept")).To(Equal("before"))
		}).Should(Succeed(), "c-%d keeps its cluster and its data", ord)
	}
	Eventually(ctx, func(g Gomega) int32 {
		mc := &v1alpha1.MQTTCluster{}
		g.Expect(k8sClient.Get(ctx, e.key(), mc)).To(Succeed())
		return mc.Status.StaleStoreResets
	}).WithTimeout(20*time.Second).Should(BeNumerically(">=", 1), "status.staleStoreResets counts the reset")
}

// foreignStore bootstraps a standalone 1-node cluster whose node has the given name,
// stops it, and returns its store directory: the store of another cluster.
func foreignStore(ctx context.Context, e *env, name string) string {
	GinkgoHelper()
	addr, err := clusterPorts.Next()
	must(err, "a port")
	dir := filepath.Join(e.sim.dir, "foreign-"+name)
	must(os.MkdirAll(dir, 0o700), "the foreign store")
	logs := &mqttdproc.Log{}
	_, _, token := e.sim.broker(0)
	b, err := startBroker(brokerOptions{
		name: name, clusterAddr: addr, dataDir: dir, bootstrap: true,
		cookieFile: filepath.Join(e.sim.dir, "cookie"), tokenFile: filepath.Join(e.sim.dir, "token"),
	}, logs)
	must(err, "the standalone broker: %s", logs.Tail(logTail))
	Eventually(ctx, func(g Gomega) {
		n := &nodeInfo{}
		g.Expect(getJSON(ctx, b.apiAddr, token, "/api/v1/node", n)).To(Succeed())
		g.Expect(n.StoreState).To(Equal("member"))
		g.Expect(n.ClusterID).NotTo(BeEmpty())
	}).Should(Succeed(), "the standalone broker bootstraps its own cluster")
	must(b.stop(), "stop the standalone broker: %s", logs.Tail(logTail))
	return dir
}

// sizeWatch polls the cluster as its running brokers report it.
type sizeWatch struct {
	done     chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex
	smallest int
	when     string // what each broker reported when the smallest was seen
}

// watchClusterSize records, over time, the smallest number of members that the
// best-connected running broker of the first n pods reported reachable (itself
// included): the part of the cluster that worked together at that moment.
func watchClusterSize(e *env, n int) *sizeWatch {
	w := &sizeWatch{done: make(chan struct{}), smallest: 1 << 30}
	w.wg.Go(func() {
		t := time.NewTicker(pollInterval)
		defer t.Stop()
		for {
			best, seen := 0, []string{time.Now().Format("15:04:05.000")}
			for ord := range n {
				api, _, token := e.sim.broker(ord)
				v := &clusterView{}
				if api == "" {
					seen = append(seen, fmt.Sprintf("c-%d: no process", ord))
					continue
				}
				if err := getJSON(context.Background(), api, token, "/api/v1/cluster", v); err != nil {
					seen = append(seen, fmt.Sprintf("c-%d: %v", ord, err))
					continue
				}
				var reachable []string
				for _, m := range v.Members {
					if m.Reachable {
						reachable = append(reachable, m.Name)
					}
				}
				seen = append(seen, fmt.Sprintf("c-%d reaches %v", ord, reachable))
				best = max(best, len(reachable))
			}
			w.mu.Lock()
			if best < w.smallest {
				w.smallest, w.when = best, strings.Join(seen, "; ")
			}
			w.mu.Unlock()
			select {
			case <-w.done:
				return
			case <-t.C:
			}
		}
	})
	return w
}

// stop ends the watch and returns the smallest size seen and what the brokers
// reported then.
func (w *sizeWatch) stop() (int, string) {
	close(w.done)
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.smallest, w.when
}
