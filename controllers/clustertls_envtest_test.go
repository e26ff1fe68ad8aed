package controllers_test

import (
	"slices"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
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

	It("never replaces a CA Secret that became unusable", func() {
		ns := newNamespace()
		mc := createCluster(ns, "badca", nil)
		Eventually(func() []byte { return child(&corev1.Secret{}, ns, "badca-cluster-ca").Data[res.CAKeyKey] }).ShouldNot(BeEmpty())
		ca := child(&corev1.Secret{}, ns, "badca-cluster-ca")
		ca.Data[res.CAKeyKey] = []byte("not a key")
		Expect(k8sClient.Update(ctx, ca)).To(Succeed())
		touch(mc, "2")
		expectCondition(mc, v1alpha1.ConditionDegraded, metav1.ConditionTrue, "ClusterCAUnusable")
		Consistently(func() bool {
			return slices.Equal(child(&corev1.Secret{}, ns, "badca-cluster-ca").Data[res.CAKeyKey], []byte("not a key"))
		}).Should(BeTrue(), "the operator does not make a new CA for a running cluster")
	})
})

// fresh reads the cluster from the API server.
func fresh(mc *v1alpha1.MQTTCluster) *v1alpha1.MQTTCluster {
	GinkgoHelper()
	out := &v1alpha1.MQTTCluster{}
	Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(mc), out)).To(Succeed())
	return out
}
