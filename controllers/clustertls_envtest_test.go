package controllers_test

import (
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	res "github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

var _ = Describe("cluster TLS", func() {
	It("gives a new cluster a CA made once and a certificate per pod, and refuses to switch a running cluster", func() {
		ns := newNamespace()
		mc := createCluster(ns, "ctls", nil)
		var caPEM []byte
		Eventually(func(g Gomega) {
			ca := child(&corev1.Secret{}, ns, "ctls-cluster-ca")
			caPEM = ca.Data[res.CACertKey]
			g.Expect(res.ParseCA(ca.Data)).NotTo(BeNil())
			certs := child(&corev1.Secret{}, ns, "ctls-cluster-tls")
			g.Expect(certs.Data).To(HaveKey("ctls-2.crt"))
			g.Expect(certs.Data[res.CACertKey]).To(Equal(caPEM))
			g.Expect(res.ClusterTLSInTemplate(&sts(mc).Spec.Template)).To(BeTrue())
		}).Should(Succeed())
		setSTSStatus(mc, 3)
		Eventually(func() v1alpha1.ClusterTLSMode { return fresh(mc).Status.ClusterTLS }).Should(Equal(v1alpha1.ClusterTLSEnabled))

		By("issuing the node certificates again from the same CA when their Secret is lost")
		Expect(k8sClient.Delete(ctx, child(&corev1.Secret{}, ns, "ctls-cluster-tls"))).To(Succeed())
		touch(mc, "1")
		Eventually(func(g Gomega) {
			certs := child(&corev1.Secret{}, ns, "ctls-cluster-tls")
			g.Expect(certs.Data).To(HaveKey("ctls-0.key"))
			g.Expect(certs.Data[res.CACertKey]).To(Equal(caPEM), "the CA is never regenerated")
		}).Should(Succeed())
		Expect(child(&corev1.Secret{}, ns, "ctls-cluster-ca").Data[res.CACertKey]).To(Equal(caPEM))

		By("refusing to turn it off while the nodes run")
		updateCluster(mc, func(mc *v1alpha1.MQTTCluster) { mc.Spec.Cluster.TLS = v1alpha1.ClusterTLSDisabled })
		expectCondition(mc, v1alpha1.ConditionDegraded, metav1.ConditionTrue, "ClusterTLSChangeRefused")
		expectCondition(mc, v1alpha1.ConditionReady, metav1.ConditionFalse, "ClusterTLSChangeRefused")
		Expect(res.ClusterTLSInTemplate(&sts(mc).Spec.Template)).To(BeTrue(), "the pods keep linking with TLS")

	})

	It("takes either mode while no pod may run, and reports it", func() {
		ns := newNamespace()
		mc := createCluster(ns, "zero", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Replicas = ptr.To[int32](0)
			mc.Spec.Cluster.TLS = v1alpha1.ClusterTLSDisabled
		})
		Eventually(func() bool { return res.ClusterTLSInTemplate(&sts(mc).Spec.Template) }).Should(BeFalse())
		setSTSStatus(mc, 0)
		Eventually(func() v1alpha1.ClusterTLSMode { return fresh(mc).Status.ClusterTLS }).Should(Equal(v1alpha1.ClusterTLSDisabled))
		updateCluster(mc, func(mc *v1alpha1.MQTTCluster) { mc.Spec.Cluster.TLS = v1alpha1.ClusterTLSEnabled })
		Eventually(func() bool { return res.ClusterTLSInTemplate(&sts(mc).Spec.Template) }).Should(BeTrue())
		Expect(warningEvents(mc, "ClusterTLSChangeRefused")).To(BeEmpty())
	})

	It("never makes a new CA, nor issues from another, while the nodes run with TLS", func() {
		ns := newNamespace()
		mc := createCluster(ns, "keepca", nil)
		var certs *corev1.Secret
		Eventually(func(g Gomega) {
			certs = child(&corev1.Secret{}, ns, "keepca-cluster-tls")
			g.Expect(certs.Data).To(HaveKey("keepca-2.crt"))
			g.Expect(res.ClusterTLSInTemplate(&sts(mc).Spec.Template)).To(BeTrue())
		}).Should(Succeed())
		setSTSStatus(mc, 3)
		before := certs.DeepCopy().Data

		By("the CA Secret deleted")
		Expect(k8sClient.Delete(ctx, child(&corev1.Secret{}, ns, "keepca-cluster-ca"))).To(Succeed())
		touch(mc, "deleted")
		expectCondition(mc, v1alpha1.ConditionDegraded, metav1.ConditionTrue, "ClusterCAMissing")
		expectCondition(mc, v1alpha1.ConditionReady, metav1.ConditionFalse, "ClusterCAMissing")
		Consistently(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "keepca-cluster-ca"}, &corev1.Secret{}))
		}).Should(BeTrue(), "no new CA while the nodes run")
		Expect(child(&corev1.Secret{}, ns, "keepca-cluster-tls").Data).To(Equal(before), "the node certificates untouched")

		By("another CA put in its place")
		other := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "keepca-cluster-ca"}}
		Expect((&res.CASecretBuilder{Cluster: mc}).Mutate(other)).To(Succeed())
		Expect(k8sClient.Create(ctx, other)).To(Succeed())
		touch(mc, "other")
		expectCondition(mc, v1alpha1.ConditionDegraded, metav1.ConditionTrue, "ClusterCAChangeRefused")
		Consistently(func() map[string][]byte { return child(&corev1.Secret{}, ns, "keepca-cluster-tls").Data }).
			Should(Equal(before), "nothing issued from the other CA")
	})

	It("reports an unusable CA Secret and keeps it", func() {
		ns := newNamespace()
		mc := createCluster(ns, "badca", nil)
		Eventually(func() []byte { return child(&corev1.Secret{}, ns, "badca-cluster-ca").Data[res.CAKeyKey] }).ShouldNot(BeEmpty())
		ca := child(&corev1.Secret{}, ns, "badca-cluster-ca")
		ca.Data[res.CAKeyKey] = []byte("not a key")
		Expect(k8sClient.Update(ctx, ca)).To(Succeed())
		touch(mc, "1")
		expectCondition(mc, v1alpha1.ConditionDegraded, metav1.ConditionTrue, "ClusterCAUnusable")
		Expect(child(&corev1.Secret{}, ns, "badca-cluster-ca").Data[res.CAKeyKey]).To(Equal([]byte("not a key")))
	})
})

// fresh reads the cluster from the API server.
func fresh(mc *v1alpha1.MQTTCluster) *v1alpha1.MQTTCluster {
	GinkgoHelper()
	out := &v1alpha1.MQTTCluster{}
	Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(mc), out)).To(Succeed())
	return out
}
