package controllers_test

import (
	"path/filepath"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	res "github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

var _ = Describe("spec.tls.issuerRef (cert-manager)", func() {
	It("is Degraded without cert-manager, then requests a Certificate, waits for its Secret and serves the listener from it", func() {
		ns := newNamespace()
		mc := createCluster(ns, "issued", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.TLS = &v1alpha1.TLSSpec{IssuerRef: &v1alpha1.IssuerRef{Name: "ca-issuer"}}
			mc.Spec.Listeners = []v1alpha1.Listener{{Name: "mqtt", Port: 1883}, {Name: "mqtts", Port: 8883}}
		})
		By("without the Certificate CRD: Degraded, not Ready, no pods")
		expectCondition(mc, v1alpha1.ConditionDegraded, metav1.ConditionTrue, "CertManagerNotInstalled")
		expectCondition(mc, v1alpha1.ConditionReady, metav1.ConditionFalse, "CertManagerNotInstalled")
		Expect(condition(mc, v1alpha1.ConditionDegraded).Message).To(ContainSubstring(`spec.tls.issuerRef names the Issuer "ca-issuer", but cert-manager is not installed`))
		Consistently(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "issued"}, &appsv1.StatefulSet{}))
		}).Should(BeTrue())

		By("with cert-manager's Certificate CRD installed: a Certificate, and a wait for its Secret")
		_, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{Paths: []string{filepath.Join("..", "test", "crds", "cert-manager")}})
		Expect(err).NotTo(HaveOccurred())
		// The operator looks again every minute by itself (cert-manager may come
		// later); the test does not wait that long.
		touch(mc, "crd")
		cert := &unstructured.Unstructured{}
		cert.SetGroupVersionKind(res.CertificateGVK)
		Eventually(func() error {
			return k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "issued-listener-tls"}, cert)
		}).Should(Succeed())
		spec := cert.Object["spec"].(map[string]any)
		Expect(spec["secretName"]).To(Equal("issued-listener-tls"))
		Expect(spec["issuerRef"]).To(Equal(map[string]any{"name": "ca-issuer", "kind": "Issuer", "group": "cert-manager.io"}))
		Expect(spec["dnsNames"]).To(ContainElements("issued."+ns+".svc", "issued-internal."+ns+".svc", "*.issued-headless."+ns+".svc"))
		Expect(metav1.IsControlledBy(cert, fresh(mc))).To(BeTrue())
		expectCondition(mc, v1alpha1.ConditionProgressing, metav1.ConditionTrue, "WaitingForCertificate")
		expectCondition(mc, v1alpha1.ConditionReady, metav1.ConditionFalse, "WaitingForCertificate")
		Expect(condition(mc, v1alpha1.ConditionProgressing).Message).To(Equal(
			`waiting for cert-manager to issue the Certificate "issued-listener-tls" (issuer Issuer "ca-issuer") into the Secret "issued-listener-tls"`))
		expectCondition(mc, v1alpha1.ConditionDegraded, metav1.ConditionFalse, "AsExpected")
		Expect(apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "issued"}, &appsv1.StatefulSet{}))).To(BeTrue(),
			"no StatefulSet before the certificate: its pods could not mount it")

		By("the issuer (a stand-in here) filling the Secret: the pods mount it for the mqtts listener")
		certPEM, keyPEM := selfSigned("issued." + ns + ".svc")
		Expect(k8sClient.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "issued-listener-tls"},
			Type: corev1.SecretTypeTLS, Data: map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM}})).To(Succeed())
		Eventually(func(g Gomega) {
			tmpl := sts(mc).Spec.Template.Spec
			g.Expect(tmpl.Volumes).To(ContainElement(And(HaveField("Name", "tls-mqtts"), HaveField("VolumeSource.Secret.SecretName", "issued-listener-tls"))))
		}).Should(Succeed())
		setSTSStatus(mc, 3)
		expectCondition(mc, v1alpha1.ConditionDegraded, metav1.ConditionFalse, "AsExpected")
		Eventually(func() string { return condition(mc, v1alpha1.ConditionProgressing).Reason }).ShouldNot(Equal("WaitingForCertificate"))
		Eventually(func() string { return condition(mc, v1alpha1.ConditionReady).Reason }).ShouldNot(Equal("WaitingForCertificate"))
	})
})
