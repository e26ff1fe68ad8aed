package lifecycle_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

// The simulator is a fake of the parts of Kubernetes the operator does not own; this
// spec checks the fake itself, without an operator: the children are made with the
// operator's own builders, the cluster verbs are sent by hand.
var _ = Describe("the simulated StatefulSet controller and kubelet", func() {
	It("run a broker per pod, report /readyz, keep volumes across pod replacement and honor OnDelete", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		mc := &v1alpha1.MQTTCluster{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: clusterName},
			Spec:       v1alpha1.MQTTClusterSpec{Replicas: ptr.To[int32](2)},
		}
		Expect(k8sClient.Create(ctx, mc)).To(Succeed())
		rendered, err := resource.RenderConfig(mc)
		Expect(err).NotTo(HaveOccurred())
		acl, err := resource.RenderACL(mc)
		Expect(err).NotTo(HaveOccurred())
		for _, b := range []resource.Builder{
			resource.CookieSecretBuilder(mc), resource.APITokenSecretBuilder(mc),
			&resource.ConfigMapBuilder{Cluster: mc, Config: rendered, ACL: acl},
			&resource.StatefulSetBuilder{Cluster: mc, ConfigHash: "harness", DefaultImage: "mqttd:harness"},
		} {
			obj := b.Object()
			Expect(b.Mutate(obj)).To(Succeed())
			Expect(controllerutil.SetControllerReference(mc, obj, scheme)).To(Succeed())
			Expect(k8sClient.Create(ctx, obj)).To(Succeed())
		}
		sim := startSimulator(ns, clusterName)
		DeferCleanup(func(ctx SpecContext) {
			if CurrentSpecReport().Failed() {
				GinkgoWriter.Println(sim.report())
			}
			sim.stop()
			Expect(sim.races()).To(BeEmpty(), "data races in the brokers")
		})
		key := func(name string) client.ObjectKey { return client.ObjectKey{Namespace: ns, Name: name} }
		getPod := func(g Gomega, name string) *corev1.Pod {
			pod := &corev1.Pod{}
			g.Expect(k8sClient.Get(ctx, key(name), pod)).To(Succeed())
			return pod
		}
		// apiCall sends a request through the address the operator would get.
		apiCall := func(g Gomega, name, method, path string, out any) {
			pod := getPod(g, name)
			base := addresses.API(mc, pod)
			g.Expect(base).To(HavePrefix("http://127.0.0.1:"))
			_, _, token := sim.broker(0)
			req, err := http.NewRequestWithContext(ctx, method, base+path, nil)
			g.Expect(err).NotTo(HaveOccurred())
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := httpClient.Do(req)
			g.Expect(err).NotTo(HaveOccurred())
			defer func() { _ = resp.Body.Close() }()
			var body bytes.Buffer
			_, _ = body.ReadFrom(resp.Body)
			g.Expect(resp.StatusCode).To(BeNumerically("<", 300), "%s %s on %s: %s", method, path, name, body.String())
			if out != nil {
				g.Expect(json.Unmarshal(body.Bytes(), out)).To(Succeed())
			}
		}
		sts := &appsv1.StatefulSet{}
		Expect(k8sClient.Get(ctx, key(clusterName), sts)).To(Succeed())
		firstRevision := templateRevision(sts)

		By("creating a ready pod with a volume and a broker per ordinal")
		uids := map[string]types.UID{}
		Eventually(ctx, func(g Gomega) {
			for _, name := range podNames(2) {
				pod := getPod(g, name)
				uids[name] = pod.UID
				g.Expect(metav1.IsControlledBy(pod, sts)).To(BeTrue())
				g.Expect(pod.Labels).To(HaveKeyWithValue(labelRevision, firstRevision))
				g.Expect(pod.Labels).To(HaveKeyWithValue(labelPodName, name))
				g.Expect(podReady(pod)).To(BeTrue(), "%s ready", name)
				g.Expect(addresses.Cluster(mc, pod)).To(HavePrefix("127.0.0.1:"))
				n := &nodeInfo{}
				apiCall(g, name, http.MethodGet, "/api/v1/node", n)
				g.Expect(n.Name).To(Equal(name))
				g.Expect(n.StoreState).To(Equal("empty"))
				pvc := &corev1.PersistentVolumeClaim{}
				g.Expect(k8sClient.Get(ctx, key("data-"+name), pvc)).To(Succeed())
				g.Expect(pvc.Status.Phase).To(Equal(corev1.ClaimBound))
			}
			g.Expect(k8sClient.Get(ctx, key(clusterName), sts)).To(Succeed())
			g.Expect(sts.Status.ObservedGeneration).To(Equal(sts.Generation))
			g.Expect(sts.Status.ReadyReplicas).To(BeEquivalentTo(2))
			g.Expect(sts.Status.UpdateRevision).To(Equal(firstRevision))
		}).Should(Succeed())
		Expect(addresses.API(mc, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "c-9"}})).To(BeEmpty(), "an unknown pod")

		By("recreating a deleted pod on the same volume")
		var before nodeInfo
		Eventually(ctx, func(g Gomega) {
			apiCall(g, "c-0", http.MethodPost, "/api/v1/cluster/bootstrap", &before)
			g.Expect(before.ClusterID).NotTo(BeEmpty())
		}).Should(Succeed())
		Expect(k8sClient.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "c-0"}})).To(Succeed())
		Eventually(ctx, func(g Gomega) {
			pod := getPod(g, "c-0")
			g.Expect(pod.UID).NotTo(Equal(uids["c-0"]))
			g.Expect(podReady(pod)).To(BeTrue())
			n := &nodeInfo{}
			apiCall(g, "c-0", http.MethodGet, "/api/v1/node", n)
			g.Expect(n.ClusterID).To(Equal(before.ClusterID))
			g.Expect(n.StoreState).To(Equal("member"))
		}).Should(Succeed(), "c-0 comes back with its store")
		removals := sim.removalsSoFar()
		Expect(removals).NotTo(BeEmpty())
		Expect(removals[0].pod).To(Equal("c-0"))
		Expect(removals[0].node).NotTo(BeNil(), "c-0's last state was recorded as its pod went")

		By("mounting the ConfigMap and Secrets at their paths, and updating them as the kubelet does, without a restart")
		pid := sim.pid(0)
		Expect(sim.mounted(0, resource.ConfigDir+"/"+resource.ConfigFile)).To(Equal(rendered))
		cookie := &corev1.Secret{}
		Expect(k8sClient.Get(ctx, key(clusterName+"-cookie"), cookie)).To(Succeed())
		Expect(sim.mounted(0, resource.SecretsDir+"/cookie")).To(Equal(cookie.Data[resource.CookieKey]))
		cm := &corev1.ConfigMap{}
		Expect(k8sClient.Get(ctx, key(clusterName+"-config"), cm)).To(Succeed())
		cm.Data["probe"] = "v1"
		Expect(k8sClient.Update(ctx, cm)).To(Succeed())
		Eventually(ctx, func() ([]byte, error) { return sim.mounted(0, resource.ConfigDir+"/probe") }).Should(Equal([]byte("v1")))
		delete(cm.Data, "probe")
		Expect(k8sClient.Update(ctx, cm)).To(Succeed())
		Eventually(ctx, func() error { _, err := sim.mounted(0, resource.ConfigDir+"/probe"); return err }).Should(MatchError(os.ErrNotExist))
		Expect(sim.pid(0)).To(Equal(pid), "the container was not restarted")

		By("reporting /readyz as the Ready condition")
		Eventually(ctx, func(g Gomega) { apiCall(g, "c-0", http.MethodPost, "/api/v1/node/evacuate", nil) }).Should(Succeed())
		Eventually(ctx, func(g Gomega) { g.Expect(podReady(getPod(g, "c-0"))).To(BeFalse()) }).Should(Succeed(), "an evacuating c-0 is not ready")

		By("deleting the pods above the replicas, keeping their volume until the PVC is deleted")
		dir := sim.dataDir(1)
		Expect(dir).To(BeADirectory())
		patch := client.MergeFrom(sts.DeepCopy())
		sts.Spec.Replicas = ptr.To[int32](1)
		Expect(k8sClient.Patch(ctx, sts, patch)).To(Succeed())
		Eventually(ctx, func() bool { return apierrors.IsNotFound(k8sClient.Get(ctx, key("c-1"), &corev1.Pod{})) }).Should(BeTrue())
		Expect(dir).To(BeADirectory())
		Expect(k8sClient.Delete(ctx, &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "data-c-1"}})).To(Succeed())
		Eventually(ctx, func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, key("data-c-1"), &corev1.PersistentVolumeClaim{}))
		}).Should(BeTrue(), "the PVC goes once no pod uses it")
		Eventually(ctx, func() bool { _, err := os.Stat(dir); return os.IsNotExist(err) }).Should(BeTrue(), "its data goes with it")

		By("leaving running pods alone on a template change (OnDelete), replacing deleted ones with the new revision")
		Expect(k8sClient.Get(ctx, key(clusterName), sts)).To(Succeed())
		patch = client.MergeFrom(sts.DeepCopy())
		sts.Spec.Template.Spec.Containers[0].Image = "mqttd:harness-v2"
		Expect(k8sClient.Patch(ctx, sts, patch)).To(Succeed())
		secondRevision := templateRevision(sts)
		Eventually(ctx, func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, key(clusterName), sts)).To(Succeed())
			g.Expect(sts.Status.UpdateRevision).To(Equal(secondRevision))
			g.Expect(sts.Status.UpdatedReplicas).To(BeEquivalentTo(0))
		}).Should(Succeed())
		Consistently(ctx, func(g Gomega) {
			g.Expect(getPod(g, "c-0").Labels).To(HaveKeyWithValue(labelRevision, firstRevision))
		}).WithTimeout(time.Second).Should(Succeed())
		Expect(k8sClient.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "c-0"}})).To(Succeed())
		Eventually(ctx, func(g Gomega) {
			pod := getPod(g, "c-0")
			g.Expect(pod.Labels).To(HaveKeyWithValue(labelRevision, secondRevision))
			g.Expect(pod.Spec.Containers[0].Image).To(Equal("mqttd:harness-v2"))
			g.Expect(podReady(pod)).To(BeTrue(), "a new process, no longer evacuating")
			g.Expect(k8sClient.Get(ctx, key(clusterName), sts)).To(Succeed())
			g.Expect(sts.Status.UpdatedReplicas).To(BeEquivalentTo(1))
			g.Expect(sts.Status.CurrentRevision).To(Equal(firstRevision), "OnDelete never promotes currentRevision (kubernetes#73492)")
		}).Should(Succeed())
	}, SpecTimeout(4*time.Minute))
})
