package lifecycle_test

import (
	"context"
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
)

// The operator's destructive actions under faults that hit more than one node: no
// volume is deleted unless the cluster's data is safe elsewhere, and the cluster comes
// back with its data once the fault is gone.
var _ = Describe("the operator keeps the cluster's data through faults on every node", func() {
	It("keeps every volume while every node crash-loops on its store, and the cluster comes back with its data", func(ctx SpecContext) {
		e := newEnv(ctx, 3, nil)
		id := e.expectMembers(ctx, 3)
		e.expectReadyStatus(ctx, 3)
		publishKept(ctx, e)
		claims := e.claimUIDs(ctx, Default, 3)

		e.sim.setStoreOutage(true)
		e.expectDegraded(ctx, "NoHealthyQuorum", "its volume is kept")
		Consistently(ctx, func(g Gomega) {
			g.Expect(e.claimUIDs(ctx, g, 3)).To(Equal(claims))
		}).WithTimeout(15*time.Second).Should(Succeed(), "no volume is deleted while no node is healthy")
		Expect(e.warnings(ctx, "StaleStoreReset")).To(BeEmpty(), "nothing was reset")

		e.sim.setStoreOutage(false)
		Expect(e.expectMembers(ctx, 3)).To(Equal(id), "the same cluster after the outage")
		e.expectReadyStatus(ctx, 3)
		e.expectKeptEverywhere(ctx, 3)
		Expect(e.claimUIDs(ctx, Default, 3)).To(Equal(claims), "the same volumes")
		for _, c := range e.sim.calls.all() {
			Expect(c.path).NotTo(Equal("/api/v1/node/reset"), "nothing is reset through the API: %s", c)
		}
	}, SpecTimeout(8*time.Minute))

	It("stops a rolling update whose new image cannot open the store, keeps that pod's volume, and finishes once the image is fixed", func(ctx SpecContext) {
		e := newEnv(ctx, 3, nil)
		id := e.expectMembers(ctx, 3)
		e.expectReadyStatus(ctx, 3)
		publishKept(ctx, e)
		claims := e.claimUIDs(ctx, Default, 3)

		e.patch(ctx, func(mc *v1alpha1.MQTTCluster) { mc.Spec.Image = "mqttd" + storeFailsTag })
		e.expectDegraded(ctx, "NewRevisionFailing", "c-2")
		Consistently(ctx, func(g Gomega) {
			g.Expect(e.claimUIDs(ctx, g, 3)).To(Equal(claims))
			for _, ord := range []int{0, 1} {
				g.Expect(e.node(ctx, g, ord).Ready).To(BeTrue(), "c-%d keeps serving", ord)
			}
		}).WithTimeout(10*time.Second).Should(Succeed(), "the roll stops at c-2, whose volume stays")

		e.patch(ctx, func(mc *v1alpha1.MQTTCluster) { mc.Spec.Image = "mqttd:v2" })
		Eventually(ctx, func(g Gomega) {
			for _, name := range podNames(3) {
				pod := &corev1.Pod{}
				g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: name}, pod)).To(Succeed())
				g.Expect(pod.DeletionTimestamp).To(BeNil())
				g.Expect(pod.Spec.Containers[0].Image).To(Equal("mqttd:v2"), "the image of %s", name)
			}
		}).WithTimeout(changeTimeout).Should(Succeed(), "every pod runs the fixed image")
		Expect(e.expectMembers(ctx, 3)).To(Equal(id), "the same cluster after the rollout")
		e.expectReadyStatus(ctx, 3)
		e.expectKeptEverywhere(ctx, 3)
		Expect(e.claimUIDs(ctx, Default, 3)).To(Equal(claims), "the same volumes")
	}, SpecTimeout(10*time.Minute))

	It("scales to zero keeping the last node's volume, and back up to the same cluster with its data", func(ctx SpecContext) {
		e := newEnv(ctx, 3, nil) // retention whenScaled: Delete
		id := e.expectMembers(ctx, 3)
		e.expectReadyStatus(ctx, 3)
		publishKept(ctx, e)
		first := e.claimUIDs(ctx, Default, 1)

		e.scale(ctx, 0)
		Eventually(ctx, func(g Gomega) {
			pods := &corev1.PodList{}
			g.Expect(k8sClient.List(ctx, pods, client.InNamespace(e.ns))).To(Succeed())
			g.Expect(pods.Items).To(BeEmpty())
			g.Expect(*e.statefulSet(ctx).Spec.Replicas).To(BeZero())
			for _, pod := range []string{"c-1", "c-2"} {
				g.Expect(e.claimExists(ctx, pod)).To(BeFalse(), "the volume of %s goes (whenScaled: Delete)", pod)
			}
		}).WithTimeout(changeTimeout).Should(Succeed(), "the cluster scaled to zero")
		Expect(e.claimUIDs(ctx, Default, 1)).To(Equal(first), "c-0's volume, holding the cluster, is kept")
		Expect(e.notes(ctx, "ScaledToZero")).To(ContainElement(ContainSubstring("c-0")))

		e.scale(ctx, 3)
		Expect(e.expectMembers(ctx, 3)).To(Equal(id), "the same cluster after scaling up from zero")
		e.expectReadyStatus(ctx, 3)
		e.expectKeptEverywhere(ctx, 3)
	}, SpecTimeout(10*time.Minute))
})

// claimUIDs returns the UIDs of the data volume claims of c-0 to c-(n-1), failing g
// when one is missing or being deleted.
func (e *env) claimUIDs(ctx context.Context, g Gomega, n int) []types.UID {
	out := make([]types.UID, n)
	for i := range n {
		pvc := &corev1.PersistentVolumeClaim{}
		g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: fmt.Sprintf("data-c-%d", i)}, pvc)).To(Succeed())
		g.Expect(pvc.DeletionTimestamp).To(BeNil(), "the claim of c-%d is being deleted", i)
		out[i] = pvc.UID
	}
	return out
}

// expectDegraded waits for Degraded True with reason, its message containing says.
func (e *env) expectDegraded(ctx context.Context, reason, says string) {
	GinkgoHelper()
	Eventually(ctx, func(g Gomega) {
		c, _ := e.condition(ctx, g, v1alpha1.ConditionDegraded)
		g.Expect(c.Status).To(Equal(metav1.ConditionTrue))
		g.Expect(c.Reason).To(Equal(reason), c.Message)
		g.Expect(c.Message).To(ContainSubstring(says))
	}).WithTimeout(changeTimeout).Should(Succeed(), "Degraded %s", reason)
}

// expectKeptEverywhere checks every node serves publishKept's retained message.
func (e *env) expectKeptEverywhere(ctx context.Context, n int) {
	GinkgoHelper()
	for ord := range n {
		Eventually(ctx, func() (string, error) {
			_, addr, _ := e.sim.broker(ord)
			return retained(addr, "lifecycle/kept")
		}).Should(Equal("before"), "the retained message on c-%d", ord)
	}
}
