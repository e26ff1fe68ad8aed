package controllers_test

import (
	"path/filepath"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	res "github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

var _ = Describe("spec.monitoring (Prometheus Operator)", func() {
	It("is Degraded without the Prometheus Operator, then writes the PodMonitor and PrometheusRule only when asked", func() {
		ns := newNamespace()
		plain := createCluster(ns, "unwatched", nil)
		mc := createCluster(ns, "watched", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Monitoring = v1alpha1.MonitoringSpec{Enabled: true, Labels: map[string]string{"release": "kps"}, Interval: "15s"}
		})
		By("without the CRDs: Degraded and not Ready, the brokers deployed anyway")
		expectCondition(mc, v1alpha1.ConditionDegraded, metav1.ConditionTrue, "PrometheusOperatorNotInstalled")
		expectCondition(mc, v1alpha1.ConditionReady, metav1.ConditionFalse, "PrometheusOperatorNotInstalled")
		Expect(condition(mc, v1alpha1.ConditionDegraded).Message).To(ContainSubstring("PodMonitor.monitoring.coreos.com"))
		sts(mc)
		expectCondition(plain, v1alpha1.ConditionDegraded, metav1.ConditionFalse, "AsExpected")

		By("with the CRDs installed: both objects, owned, labeled, for this cluster only")
		_, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{Paths: []string{filepath.Join("..", "test", "crds", "prometheus-operator")}})
		Expect(err).NotTo(HaveOccurred())
		touch(mc, "crd") // the operator looks again every minute by itself
		pm, rule := monitoringObjects(ns, "watched")
		Eventually(func() error { return k8sClient.Get(ctx, client.ObjectKeyFromObject(pm), pm) }).Should(Succeed())
		Eventually(func() error { return k8sClient.Get(ctx, client.ObjectKeyFromObject(rule), rule) }).Should(Succeed())
		for _, o := range []*unstructured.Unstructured{pm, rule} {
			Expect(metav1.IsControlledBy(o, fresh(mc))).To(BeTrue())
			Expect(o.GetLabels()).To(HaveKeyWithValue("release", "kps"))
			Expect(o.GetLabels()).To(HaveKeyWithValue(res.LabelInstance, "watched"))
		}
		endpoints, _, _ := unstructured.NestedSlice(pm.Object, "spec", "podMetricsEndpoints")
		Expect(endpoints).To(HaveLen(1))
		ep := endpoints[0].(map[string]any)
		Expect(ep["port"]).To(Equal("api"))
		Expect(ep["path"]).To(Equal("/metrics"))
		Expect(ep["interval"]).To(Equal("15s"))
		Expect(ep["scheme"]).To(Equal("https"), "new clusters serve their API with the cluster certificate")
		sel, _, _ := unstructured.NestedStringMap(pm.Object, "spec", "selector", "matchLabels")
		Expect(sel).To(Equal(res.SelectorLabels(mc)))
		groups, _, _ := unstructured.NestedSlice(rule.Object, "spec", "groups")
		Expect(groups).To(HaveLen(1))
		var alerts []string
		for _, r := range groups[0].(map[string]any)["rules"].([]any) {
			rm := r.(map[string]any)
			alerts = append(alerts, rm["alert"].(string))
			Expect(rm["expr"]).To(ContainSubstring(`namespace="` + ns + `",mqttcluster="watched"`))
		}
		Expect(alerts).To(ContainElements("MQTTNodeNotMember", "MQTTNodeStaleStore", "MQTTClusterCookieMismatch", "MQTTClusterNoLeader",
			"MQTTMessagesDropped", "MQTTEvacuationStuck", "MQTTCertificateExpiring", "MQTTNodeDown", "MQTTMetricsAbsent"))
		expectCondition(mc, v1alpha1.ConditionDegraded, metav1.ConditionFalse, "AsExpected")
		Eventually(func() v1alpha1.MonitoringStatus { return fresh(mc).Status.Monitoring }).Should(Equal(v1alpha1.MonitoringEnabled))

		By("written once: more reconciles leave both objects as they are")
		pmVersion, ruleVersion := pm.GetResourceVersion(), rule.GetResourceVersion()
		touch(mc, "again")
		setSTSStatus(mc, 1)
		Consistently(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(pm), pm)).To(Succeed())
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(rule), rule)).To(Succeed())
			g.Expect(pm.GetResourceVersion()).To(Equal(pmVersion), "the PodMonitor was rewritten")
			g.Expect(rule.GetResourceVersion()).To(Equal(ruleVersion), "the PrometheusRule was rewritten")
		}).Should(Succeed())

		By("a label removed from the spec leaves the objects")
		updateCluster(mc, func(mc *v1alpha1.MQTTCluster) { mc.Spec.Monitoring.Labels = map[string]string{"team": "iot"} })
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(pm), pm)).To(Succeed())
			g.Expect(pm.GetLabels()).To(HaveKeyWithValue("team", "iot"))
			g.Expect(pm.GetLabels()).NotTo(HaveKey("release"))
		}).Should(Succeed())

		By("nothing for a cluster that does not ask")
		touch(plain, "crd")
		ppm, prule := monitoringObjects(ns, "unwatched")
		Consistently(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(ppm), ppm)) &&
				apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(prule), prule))
		}).Should(BeTrue())

		By("turned off: both deleted")
		updateCluster(mc, func(mc *v1alpha1.MQTTCluster) { mc.Spec.Monitoring.Enabled = false })
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(pm), pm)) &&
				apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(rule), rule))
		}).Should(BeTrue())
		Eventually(func() v1alpha1.MonitoringStatus { return fresh(mc).Status.Monitoring }).Should(BeEmpty())
	})
})

func monitoringObjects(ns, name string) (pm, rule *unstructured.Unstructured) {
	pm, rule = &unstructured.Unstructured{}, &unstructured.Unstructured{}
	pm.SetGroupVersionKind(res.PodMonitorGVK)
	rule.SetGroupVersionKind(res.PrometheusRuleGVK)
	for _, o := range []*unstructured.Unstructured{pm, rule} {
		o.SetNamespace(ns)
		o.SetName(name + "-mqttd")
	}
	return pm, rule
}

var _ = Describe("spec.dashboard", func() {
	It("listens on 18083 with the admin Secret's credentials mounted, without rolling on a password change", func() {
		ns := newNamespace()
		Expect(k8sClient.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "admin"},
			Data: map[string][]byte{"username": []byte("ops"), "password": []byte("first-password")}})).To(Succeed())
		mc := createCluster(ns, "dash", func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Dashboard = v1alpha1.DashboardSpec{Enabled: true, AdminSecretRef: &corev1.LocalObjectReference{Name: "admin"}}
		})
		Eventually(func(g Gomega) {
			cfgText := child(&corev1.ConfigMap{}, ns, "dash-config").Data[res.ConfigFile]
			g.Expect(cfgText).To(ContainSubstring("listen: 0.0.0.0:18083"))
			g.Expect(cfgText).To(ContainSubstring("username_file: " + res.DashboardDir + "/username"))
			g.Expect(cfgText).To(ContainSubstring("password_file: " + res.DashboardDir + "/password"))
		}).Should(Succeed())
		t := sts(mc).Spec.Template
		Expect(t.Spec.Containers[0].VolumeMounts).To(ContainElement(And(HaveField("Name", "dashboard-admin"), HaveField("MountPath", res.DashboardDir))))
		Expect(t.Spec.Volumes).To(ContainElement(HaveField("VolumeSource.Secret.SecretName", "admin")))
		Expect(child(&corev1.Service{}, ns, "dash-dashboard").Spec.Ports[0].Port).To(Equal(int32(18083)))
		hash := t.Annotations[res.AnnotationConfigHash]

		By("a new password is read by mqttd at the next login: no roll")
		s := child(&corev1.Secret{}, ns, "admin")
		s.Data["password"] = []byte("second-password")
		Expect(k8sClient.Update(ctx, s)).To(Succeed())
		Consistently(func() string { return sts(mc).Spec.Template.Annotations[res.AnnotationConfigHash] }).Should(Equal(hash))

		By("an admin Secret without a password is the user's error")
		delete(s.Data, "password")
		Expect(k8sClient.Update(ctx, s)).To(Succeed())
		expectCondition(mc, v1alpha1.ConditionDegraded, metav1.ConditionTrue, "SecretKeyMissing")
	})
})
