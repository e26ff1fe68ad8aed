package controllers_test

import (
	"encoding/json"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	res "github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

// projectedSources lists the "secret/key" the StatefulSet's pods mount in projected
// volumes.
func projectedSources(s *appsv1.StatefulSet) []string {
	var sources []string
	for _, v := range s.Spec.Template.Spec.Volumes {
		if v.Projected != nil {
			for _, src := range v.Projected.Sources {
				sources = append(sources, src.Secret.Name+"/"+src.Secret.Items[0].Key)
			}
		}
	}
	return sources
}

// setSecretKey writes value under key of the Secret ns/name.
func setSecretKey(ns, name, key, value string) {
	Eventually(func() error {
		s := &corev1.Secret{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, s); err != nil {
			return err
		}
		s.Data[key] = []byte(value)
		return k8sClient.Update(ctx, s)
	}).Should(Succeed())
}

// createBrokerPod creates pod ordinal 0 of mc, as the StatefulSet controller would.
func createBrokerPod(mc *v1alpha1.MQTTCluster) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: mc.Namespace, Name: res.PodName(mc, 0), Labels: res.SelectorLabels(mc)},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: res.ContainerName, Image: "mqttd:test"}}},
	}
	Expect(k8sClient.Create(ctx, pod)).To(Succeed())
}

var _ = Describe("MQTTCluster cookie and API token changes", func() {
	nodeSecrets := func(mc *v1alpha1.MQTTCluster) res.NodeSecrets {
		GinkgoHelper()
		v, err := res.ReadNodeSecrets(child(&corev1.Secret{}, mc.Namespace, res.NodeSecretName(mc)))
		Expect(err).NotTo(HaveOccurred())
		return v
	}

	It("mounts the node Secret and rolls the pods onto a new API token, keeping the replaced one", func() {
		ns := newNamespace()
		mc := createCluster(ns, "rot", nil)
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(mc), mc)).To(Succeed())
		cookie := child(&corev1.Secret{}, ns, "rot-cookie").Data[res.CookieKey]
		oldToken := child(&corev1.Secret{}, ns, "rot-api-token").Data[res.APITokenKey]
		Eventually(func(g Gomega) {
			v := nodeSecrets(mc)
			g.Expect(v.Cookie).To(Equal(cookie))
			g.Expect(v.Token).To(Equal(oldToken))
			g.Expect(v.PreviousTokens).To(BeEmpty())
		}).Should(Succeed())
		node := child(&corev1.Secret{}, ns, "rot-node-secrets")
		Expect(ownedBy(node, mc)).To(BeTrue())
		s := sts(mc)
		Expect(projectedSources(s)).To(ConsistOf("rot-node-secrets/cookie", "rot-node-secrets/api-token"))
		key := child(&corev1.Secret{}, ns, res.FingerprintKeySecretName(mc)).Data[res.FingerprintKeyKey]
		Expect(key).NotTo(BeEmpty())
		Expect(ownedBy(child(&corev1.Secret{}, ns, res.FingerprintKeySecretName(mc)), mc)).To(BeTrue())
		oldHash := s.Spec.Template.Annotations[res.AnnotationAPITokenHash]
		Expect(oldHash).To(Equal(res.TokenHash(key, oldToken)), "an HMAC under the cluster's own key")
		Expect(oldHash).NotTo(ContainSubstring(string(oldToken)))

		const newToken = "a-new-api-token-0123456789"
		setSecretKey(ns, "rot-api-token", res.APITokenKey, newToken)
		Eventually(func(g Gomega) {
			v := nodeSecrets(mc)
			g.Expect(string(v.Token)).To(Equal(newToken))
			g.Expect(v.PreviousTokens).To(Equal([]string{string(oldToken)}), "the replaced token, for the brokers still running it")
			g.Expect(v.Cookie).To(Equal(cookie))
		}).Should(Succeed())
		Eventually(func() string { return sts(mc).Spec.Template.Annotations[res.AnnotationAPITokenHash] }).
			Should(Equal(res.TokenHash(key, []byte(newToken))), "a new pod template: the pods roll onto the new token")
		raw := child(&corev1.Secret{}, ns, "rot-node-secrets").Data[res.NodePreviousTokensKey]
		var previous []string
		Expect(json.Unmarshal(raw, &previous)).To(Succeed())
		Expect(previous).To(HaveLen(1))
	})

	It("refuses a cookie change while pods may run, and takes it once the cluster is at zero", func() {
		ns := newNamespace()
		mc := createCluster(ns, "ck", nil)
		oldCookie := child(&corev1.Secret{}, ns, "ck-cookie").Data[res.CookieKey]
		s := sts(mc)
		template := s.Spec.Template.Annotations[res.AnnotationTemplateHash]
		createBrokerPod(mc)

		const newCookie = "a-new-cluster-cookie-0123456789"
		setSecretKey(ns, "ck-cookie", res.CookieKey, newCookie)
		expectCondition(mc, v1alpha1.ConditionDegraded, metav1.ConditionTrue, "CookieChangeRefused")
		expectCondition(mc, v1alpha1.ConditionReady, metav1.ConditionFalse, "CookieChangeRefused")
		Expect(condition(mc, v1alpha1.ConditionDegraded).Message).To(And(
			ContainSubstring(`Secret "ck-cookie" key "cookie"`), ContainSubstring("scale the cluster to 0")))
		Eventually(func() int { return len(warningEvents(mc, "CookieChangeRefused")) }).Should(Equal(1))
		Consistently(func() []byte { return nodeSecrets(mc).Cookie }).Should(Equal(oldCookie), "no pod is given the new cookie")
		Expect(sts(mc).Spec.Template.Annotations[res.AnnotationTemplateHash]).To(Equal(template), "no roll")
		Expect(warningEvents(mc, "CookieChangeRefused")).To(HaveLen(1), "one event, not one per reconcile")

		By("scaling to zero: the lifecycle shrinks the StatefulSet and the last pod goes")
		updateCluster(mc, func(mc *v1alpha1.MQTTCluster) { mc.Spec.Replicas = ptr.To[int32](0) })
		Eventually(func() error {
			s := sts(mc)
			s.Spec.Replicas = ptr.To[int32](0)
			return k8sClient.Update(ctx, s)
		}).Should(Succeed())
		Expect(nodeSecrets(mc).Cookie).To(Equal(oldCookie), "a pod still exists")
		Expect(k8sClient.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ck-0"}})).To(Succeed())
		Eventually(func() []byte { return nodeSecrets(mc).Cookie }).Should(Equal([]byte(newCookie)))
		expectCondition(mc, v1alpha1.ConditionDegraded, metav1.ConditionFalse, "AsExpected")

		By("scaling back: the pods start on the new cookie")
		updateCluster(mc, func(mc *v1alpha1.MQTTCluster) { mc.Spec.Replicas = ptr.To[int32](3) })
		Eventually(func() int32 { return *sts(mc).Spec.Replicas }).Should(Equal(int32(3)))
		Expect(nodeSecrets(mc).Cookie).To(Equal([]byte(newCookie)))
	})

	It("takes a user's cookie Secret of the same value without a refusal", func() {
		ns := newNamespace()
		mc := createCluster(ns, "same", nil)
		cookie := child(&corev1.Secret{}, ns, "same-cookie").Data[res.CookieKey]
		sts(mc)
		createBrokerPod(mc)
		Expect(k8sClient.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "mine"},
			Data: map[string][]byte{"c": cookie}})).To(Succeed())
		updateCluster(mc, func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.CookieSecretRef = &v1alpha1.SecretKeySelector{Name: "mine", Key: "c"}
		})
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(mc), mc)).To(Succeed())
			g.Expect(mc.Status.ObservedGeneration).To(Equal(mc.Generation))
		}).Should(Succeed())
		expectCondition(mc, v1alpha1.ConditionDegraded, metav1.ConditionFalse, "AsExpected")
		Expect(nodeSecrets(mc).Cookie).To(Equal(cookie))
	})

	It("keeps refusing a cookie change when the node Secret is deleted while pods run, and re-creates it from the cookie in force", func() {
		ns := newNamespace()
		mc := createCluster(ns, "del", nil)
		oldCookie := child(&corev1.Secret{}, ns, "del-cookie").Data[res.CookieKey]
		key := child(&corev1.Secret{}, ns, res.FingerprintKeySecretName(mc)).Data[res.FingerprintKeyKey]
		Eventually(func() string { return sts(mc).Annotations[res.AnnotationCookieFingerprint] }).
			Should(Equal(res.Fingerprint(key, oldCookie)), "the cookie in force is recorded on the StatefulSet")
		Expect(sts(mc).Spec.Template.Annotations).NotTo(HaveKey(res.AnnotationCookieFingerprint), "not on the template: it rolls nothing")
		createBrokerPod(mc)

		const newCookie = "a-new-cluster-cookie-0123456789"
		setSecretKey(ns, "del-cookie", res.CookieKey, newCookie)
		expectCondition(mc, v1alpha1.ConditionDegraded, metav1.ConditionTrue, "CookieChangeRefused")

		By("deleting the node Secret: it is not re-created with the refused cookie")
		Expect(k8sClient.Delete(ctx, child(&corev1.Secret{}, ns, "del-node-secrets"))).To(Succeed())
		Consistently(func(g Gomega) {
			s := &corev1.Secret{}
			err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "del-node-secrets"}, s)
			if err == nil {
				g.Expect(string(s.Data[res.NodeCookieKey])).NotTo(Equal(newCookie))
			}
		}).Should(Succeed())
		expectCondition(mc, v1alpha1.ConditionDegraded, metav1.ConditionTrue, "CookieChangeRefused")
		expectCondition(mc, v1alpha1.ConditionReady, metav1.ConditionFalse, "CookieChangeRefused")
		Expect(condition(mc, v1alpha1.ConditionDegraded).Message).To(ContainSubstring(`node Secret "del-node-secrets" is missing`))

		By("putting the cookie in force back: the node Secret is re-created with it")
		setSecretKey(ns, "del-cookie", res.CookieKey, string(oldCookie))
		Eventually(func() []byte { return nodeSecrets(mc).Cookie }).Should(Equal(oldCookie))
		expectCondition(mc, v1alpha1.ConditionDegraded, metav1.ConditionFalse, "AsExpected")

		By("emptying its cookie while the cookie Secret holds another: refused, not filled in")
		setSecretKey(ns, "del-cookie", res.CookieKey, newCookie)
		expectCondition(mc, v1alpha1.ConditionDegraded, metav1.ConditionTrue, "CookieChangeRefused")
		setSecretKey(ns, "del-node-secrets", res.NodeCookieKey, "")
		Consistently(func() string { return string(nodeSecrets(mc).Cookie) }).ShouldNot(Equal(newCookie))
	})

	It("reports a node Secret it cannot read instead of carrying on", func() {
		ns := newNamespace()
		mc := createCluster(ns, "bad", nil)
		sts(mc)
		createBrokerPod(mc)
		setSecretKey(ns, "bad-node-secrets", res.NodePreviousTokensKey, "{not json")
		expectCondition(mc, v1alpha1.ConditionDegraded, metav1.ConditionTrue, "NodeSecretUnreadable")
		expectCondition(mc, v1alpha1.ConditionReady, metav1.ConditionFalse, "NodeSecretUnreadable")
	})
})
