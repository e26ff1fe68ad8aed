package lifecycle_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/eclipse/paho.golang/paho"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
)

// clusterName is every spec's MQTTCluster: its pods are c-0, c-1, ...
const clusterName = "c"

// env is one spec's world: a namespace, an operator, a simulated StatefulSet.
type env struct {
	ns  string
	op  *operator
	sim *simulator
}

// envOption prepares a spec's world before its MQTTCluster exists, so before any pod.
type envOption func(*env)

// withPodCookie starts the containers of pod with cookie instead of the cluster's.
func withPodCookie(pod string, cookie []byte) envOption {
	return func(e *env) { e.sim.setCookie(pod, cookie) }
}

// newEnv creates an MQTTCluster of replicas nodes (changed by mutate) in a namespace
// of its own, with an operator and a simulator (prepared by opts). When the spec ends
// everything stops; when it failed, the pods' logs, the operator's calls and the
// events are printed.
func newEnv(ctx context.Context, replicas int32, mutate func(*v1alpha1.MQTTCluster), opts ...envOption) *env {
	GinkgoHelper()
	e := &env{ns: newNamespace(ctx)}
	e.op = startOperator(e.ns)
	e.sim = startSimulator(e.ns, clusterName)
	DeferCleanup(func(ctx SpecContext) {
		// LIFECYCLE_REPORT=1 prints the report of passing specs too.
		if CurrentSpecReport().Failed() || os.Getenv("LIFECYCLE_REPORT") != "" {
			GinkgoWriter.Println(e.sim.report())
			GinkgoWriter.Println(e.eventsReport(ctx))
			mc := &v1alpha1.MQTTCluster{}
			if k8sClient.Get(ctx, e.key(), mc) == nil {
				GinkgoWriter.Printf("--- status ---\n%+v\n", mc.Status)
			}
		}
		e.op.stop()
		e.sim.stop()
		Expect(e.sim.races()).To(BeEmpty(), "data races in the brokers")
		mc := &v1alpha1.MQTTCluster{ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: clusterName}}
		Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, mc))).To(Succeed())
	})
	for _, opt := range opts {
		opt(e)
	}
	mc := &v1alpha1.MQTTCluster{
		ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: clusterName},
		Spec:       v1alpha1.MQTTClusterSpec{Replicas: ptr.To(replicas)},
	}
	if mutate != nil {
		mutate(mc)
	}
	Expect(k8sClient.Create(ctx, mc)).To(Succeed())
	return e
}

func (e *env) key() client.ObjectKey { return client.ObjectKey{Namespace: e.ns, Name: clusterName} }

// restartOperator stops the operator and starts a new one, as a new operator pod.
func (e *env) restartOperator() {
	GinkgoHelper()
	e.op.stop()
	e.op = startOperator(e.ns)
}

// patch changes the MQTTCluster's spec.
func (e *env) patch(ctx context.Context, change func(*v1alpha1.MQTTCluster)) {
	GinkgoHelper()
	mc := &v1alpha1.MQTTCluster{}
	Expect(k8sClient.Get(ctx, e.key(), mc)).To(Succeed())
	p := client.MergeFrom(mc.DeepCopy())
	change(mc)
	Expect(k8sClient.Patch(ctx, mc, p)).To(Succeed())
}

func (e *env) scale(ctx context.Context, n int32) {
	GinkgoHelper()
	e.patch(ctx, func(mc *v1alpha1.MQTTCluster) { mc.Spec.Replicas = ptr.To(n) })
}

// podNames returns c-0 ... c-(n-1).
func podNames(n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("%s-%d", clusterName, i))
	}
	return out
}

// expectMembers waits until every one of the first n pods' brokers lists exactly the
// first n pods as members, in this order (the raft configuration keeps join order),
// with one cluster ID: the one in status.clusterID. It returns that ID.
func (e *env) expectMembers(ctx context.Context, n int) string {
	GinkgoHelper()
	want := podNames(n)
	var id string
	Eventually(ctx, func(g Gomega) {
		mc := &v1alpha1.MQTTCluster{}
		g.Expect(k8sClient.Get(ctx, e.key(), mc)).To(Succeed())
		g.Expect(mc.Status.ClusterID).NotTo(BeEmpty(), "status.clusterID")
		id = mc.Status.ClusterID
		for ord := range n {
			v := e.view(ctx, g, ord)
			g.Expect(v.names()).To(Equal(want), "the members as %s lists them", want[ord])
			g.Expect(v.ClusterID).To(Equal(id), "the cluster ID of %s", want[ord])
		}
	}).Should(Succeed())
	return id
}

// view is GET /api/v1/cluster of pod ordinal ord's broker.
func (e *env) view(ctx context.Context, g Gomega, ord int) *clusterView {
	api, _, token := e.sim.broker(ord)
	g.Expect(api).NotTo(BeEmpty(), "%s-%d has no running broker", clusterName, ord)
	v := &clusterView{}
	g.Expect(getJSON(ctx, api, token, "/api/v1/cluster", v)).To(Succeed())
	return v
}

// node is GET /api/v1/node of pod ordinal ord's broker.
func (e *env) node(ctx context.Context, g Gomega, ord int) *nodeInfo {
	api, _, token := e.sim.broker(ord)
	g.Expect(api).NotTo(BeEmpty(), "%s-%d has no running broker", clusterName, ord)
	n := &nodeInfo{}
	g.Expect(getJSON(ctx, api, token, "/api/v1/node", n)).To(Succeed())
	return n
}

// expectReadyStatus waits until status.members lists exactly the first n pods, each
// joined, ready and a member, and the Ready condition is True for the current
// generation.
func (e *env) expectReadyStatus(ctx context.Context, n int) {
	GinkgoHelper()
	Eventually(ctx, func(g Gomega) {
		mc := &v1alpha1.MQTTCluster{}
		g.Expect(k8sClient.Get(ctx, e.key(), mc)).To(Succeed())
		g.Expect(mc.Status.Members).To(HaveLen(n))
		for i, m := range mc.Status.Members {
			g.Expect(m.Ordinal).To(BeEquivalentTo(i))
			g.Expect(m.Node).To(Equal(podNames(n)[i]))
			g.Expect(m.Joined).To(BeTrue(), "%s joined", m.Node)
			g.Expect(m.Ready).To(BeTrue(), "%s ready", m.Node)
			g.Expect(m.StoreState).To(Equal("member"), "%s storeState", m.Node)
		}
		ready := meta.FindStatusCondition(mc.Status.Conditions, v1alpha1.ConditionReady)
		g.Expect(ready).NotTo(BeNil())
		g.Expect(ready.Status).To(Equal(metav1.ConditionTrue), "Ready: %s", ready.Message)
		g.Expect(ready.ObservedGeneration).To(Equal(mc.Generation))
	}).Should(Succeed())
}

// expectJoinOrder checks the operator's successful joins: none on c-0 (it
// bootstraps), and each of the pods from ordinal `from` to n-1 joined once its
// predecessor's join had completed. A call is recorded when its answer reaches the
// operator, which may be after the broker already reports itself a member.
func (e *env) expectJoinOrder(ctx context.Context, from, n int) {
	GinkgoHelper()
	names := podNames(n)
	var first map[string]apiCall
	Eventually(ctx, func(g Gomega) {
		first = map[string]apiCall{}
		for _, c := range e.sim.calls.all() {
			if c.method == "POST" && c.path == "/api/v1/cluster/join" && c.status == 200 {
				if _, seen := first[c.pod]; !seen {
					first[c.pod] = c
				}
			}
		}
		for ord := max(from, 1); ord < n; ord++ {
			g.Expect(first).To(HaveKey(names[ord]), "a successful join of %s", names[ord])
		}
	}).WithTimeout(apiTimeout).Should(Succeed())
	Expect(first).NotTo(HaveKey(names[0]), "%s bootstraps; it never joins", names[0])
	for ord := max(from, 1) + 1; ord < n; ord++ {
		prev, cur := first[names[ord-1]], first[names[ord]]
		Expect(cur.start).To(BeTemporally(">=", prev.end), "%s joined (%s) before %s had (%s)", names[ord], cur, names[ord-1], prev)
	}
}

// expectGone waits until the pods of ordinals n and up no longer exist.
func (e *env) expectGone(ctx context.Context, from, to int) {
	GinkgoHelper()
	for ord := from; ord < to; ord++ {
		Eventually(ctx, func() bool {
			err := k8sClient.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: podNames(to)[ord]}, &corev1.Pod{})
			return apierrors.IsNotFound(err)
		}).Should(BeTrue(), "pod %s is gone", podNames(to)[ord])
	}
}

// expectLeftBeforeRemoval checks that when the pod went away, its broker was
// evacuated or had left (stale, removed) and no remaining member listed it.
func (e *env) expectLeftBeforeRemoval(pod string) {
	GinkgoHelper()
	var r *removal
	for _, rr := range e.sim.removalsSoFar() {
		if rr.pod == pod {
			r = &rr
			break
		}
	}
	Expect(r).NotTo(BeNil(), "the removal of %s was observed", pod)
	Expect(r.node).NotTo(BeNil(), "%s answered GET /api/v1/node as its pod went (%s)", pod, r.err)
	left := r.node.StoreState == "stale" && strings.Contains(r.node.StaleReason, "removed")
	Expect(r.node.Evacuating || left).To(BeTrue(), "%s was evacuated or had left as its pod went (%s): %+v", pod, r.reason, *r.node)
	Expect(r.views).NotTo(BeEmpty(), "views of the remaining members as %s went", pod)
	for other, v := range r.views {
		Expect(v.has(pod)).To(BeFalse(), "%s still listed %s as its pod went: %v", other, pod, v.names())
	}
}

// leaveOrder returns the pods the operator asked to leave, in the order of the first
// request to each. Any answer counts: a request the broker carried out may reach the
// proxy's log as a 502 when the operator that sent it was stopped meanwhile.
func (e *env) leaveOrder() []string {
	var out []string
	for _, c := range e.sim.calls.all() {
		if c.method == "POST" && c.path == "/api/v1/cluster/leave" && !slices.Contains(out, c.pod) {
			out = append(out, c.pod)
		}
	}
	return out
}

// claimExists reports whether the PVC of pod exists and is not being deleted.
func (e *env) claimExists(ctx context.Context, pod string) (bool, error) {
	pvc := &corev1.PersistentVolumeClaim{}
	err := k8sClient.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: "data-" + pod}, pvc)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	return err == nil && pvc.DeletionTimestamp == nil, err
}

// statefulSet returns the StatefulSet.
func (e *env) statefulSet(ctx context.Context) *appsv1.StatefulSet {
	GinkgoHelper()
	sts := &appsv1.StatefulSet{}
	Expect(k8sClient.Get(ctx, e.key(), sts)).To(Succeed())
	return sts
}

// condition returns the MQTTCluster's condition of type typ, failing g when it has none.
func (e *env) condition(ctx context.Context, g Gomega, typ string) (*metav1.Condition, int64) {
	mc := &v1alpha1.MQTTCluster{}
	g.Expect(k8sClient.Get(ctx, e.key(), mc)).To(Succeed())
	c := meta.FindStatusCondition(mc.Status.Conditions, typ)
	g.Expect(c).NotTo(BeNil(), "the %s condition", typ)
	return c, mc.Generation
}

// warnings returns the notes of the operator's Warning events with reason.
func (e *env) warnings(ctx context.Context, reason string) []string {
	var out []string
	for _, ev := range e.events(ctx) {
		if ev.Type == corev1.EventTypeWarning && ev.Reason == reason {
			out = append(out, ev.Note)
		}
	}
	return out
}

// notes returns the notes of the operator's events with reason, of any type.
func (e *env) notes(ctx context.Context, reason string) []string {
	var out []string
	for _, ev := range e.events(ctx) {
		if ev.Reason == reason {
			out = append(out, ev.Note)
		}
	}
	return out
}

// events returns the operator's events in the namespace.
func (e *env) events(ctx context.Context) []eventsv1.Event {
	list := &eventsv1.EventList{}
	if err := k8sClient.List(ctx, list, client.InNamespace(e.ns)); err != nil {
		return nil
	}
	return list.Items
}

func (e *env) eventsReport(ctx context.Context) string {
	var b strings.Builder
	b.WriteString("--- events ---\n")
	for _, ev := range e.events(ctx) {
		fmt.Fprintf(&b, "%s %s %s %s: %s\n", ev.CreationTimestamp.Format(time.TimeOnly), ev.Type, ev.Reason, ev.Regarding.Name, ev.Note)
	}
	return b.String()
}

// mqttTimeout bounds one MQTT exchange.
const mqttTimeout = 10 * time.Second

// publishRetained publishes a retained QoS 1 message to the broker at addr.
func publishRetained(addr, topic, payload string) error {
	c, err := dialMQTT(addr, "lifecycle-pub", nil)
	if err != nil {
		return err
	}
	defer func() { _ = c.Disconnect(&paho.Disconnect{}) }()
	ctx, cancel := context.WithTimeout(context.Background(), mqttTimeout)
	defer cancel()
	resp, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Retain: true, Payload: []byte(payload)})
	if err == nil && resp != nil && resp.ReasonCode >= 0x80 {
		err = fmt.Errorf("publish: reason 0x%02X", resp.ReasonCode)
	}
	return err
}

// retained returns the retained message on topic at the broker at addr ("" when
// none arrives within a second of the SUBACK).
func retained(addr, topic string) (string, error) {
	got := make(chan string, 1)
	c, err := dialMQTT(addr, "lifecycle-sub", func(p *paho.Publish) {
		select {
		case got <- string(p.Payload):
		default:
		}
	})
	if err != nil {
		return "", err
	}
	defer func() { _ = c.Disconnect(&paho.Disconnect{}) }()
	ctx, cancel := context.WithTimeout(context.Background(), mqttTimeout)
	defer cancel()
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}}); err != nil {
		return "", err
	}
	select {
	case p := <-got:
		return p, nil
	case <-time.After(time.Second):
		return "", nil
	}
}

// dialMQTT connects an MQTT v5 client (clean start) to addr.
func dialMQTT(addr, id string, onPublish func(*paho.Publish)) (*paho.Client, error) {
	conn, err := net.DialTimeout("tcp", addr, mqttTimeout)
	if err != nil {
		return nil, err
	}
	cfg := paho.ClientConfig{Conn: conn, PacketTimeout: mqttTimeout, OnClientError: func(error) {}}
	if onPublish != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			onPublish(pr.Packet)
			return true, nil
		}}
	}
	c := paho.NewClient(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), mqttTimeout)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("connect %s to %s: %w", id, addr, err)
	}
	return c, nil
}
